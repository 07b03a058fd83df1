"""The fine-tuning loop: train for the recipe's epochs, evaluate after each, keep the best.

Everything a run needs to continue is two things: the `TrainState` pytree
(params, optimizer state, step, base key) and a small JSON-able progress dict
(the step, the best score so far and its epoch, each epoch's metrics, the training time).
The order of the training rows is a function of the seed and the epoch alone,
so the step is the whole data position. `Checkpointer` is the one place
where both are saved and restored: `finetune.checkpoints.RunCheckpoints` (Orbax,
what the CLI uses) or `NO_CHECKPOINTS` (the default) which keeps nothing.
"""

import dataclasses
import functools
import json
import os
import time
from typing import Any, Protocol

import flax.serialization
import jax
import ml_collections
import numpy as np
from absl import logging

from electra_jax import target
from electra_jax.convert import hf_tokenizer, pretrained
from electra_jax.data import any_tokenizer
from electra_jax.data.wordpiece import WordPieceTokenizer
from electra_jax.errors import ConfigError, DataError, UserError
from electra_jax.finetune import config as config_lib
from electra_jax.finetune import conll, glue, squad, steps, tasks
from electra_jax.finetune import model as model_lib
from electra_jax.finetune import optimizer as optimizer_lib
from electra_jax.pretraining.train_step import TrainState
from electra_jax.runtime import distributed, sharding
from electra_jax.runtime import metric_writer
from electra_jax.runtime import fileio
from electra_jax.runtime.workdir import (BEST_DIR, CONFIG_FILE, LABELS_FILE, METRICS_FILE,
                                         MODEL_CONFIG_FILE, RESULTS_FILE)

SUBSAMPLE_SEED = 0x5EED  # max_examples draws the same rows whatever train.seed is


class Checkpointer(Protocol):
  """Where a run's state goes between steps, and comes back from after an interruption."""

  def restore(self, abstract_state: TrainState) -> tuple[TrainState, dict] | None:
    """The latest saved state (in `abstract_state`'s shardings) and progress, or None."""

  def save(self, state: TrainState, progress: dict) -> bool:
    """Called after every step (progress["step"] steps done); saves when it sees fit.

    The state's buffers are donated to the next step: copy what is kept.
    True stops the run here (it was asked to stop, e.g. by SIGTERM or Ctrl-C, and has saved).
    """


class _NoCheckpoints:
  def restore(self, abstract_state: TrainState) -> None:
    return None

  def save(self, state: TrainState, progress: dict) -> bool:
    return False


NO_CHECKPOINTS = _NoCheckpoints()


def load_task(config: ml_collections.ConfigDict, tokenizer) -> tasks.TaskData:
  """The task's encoded data; with train.max_examples, a fixed subsample of its training rows."""
  kind = tasks.TASKS[config.task].kind
  reader = {tasks.TAGGING: conll, tasks.SPAN: squad}.get(kind, glue)
  data = reader.load(config, tokenizer)
  rows = len(data.train["input_ids"])
  if 0 < config.train.max_examples < rows:
    keep = np.sort(np.random.default_rng(SUBSAMPLE_SEED).permutation(rows)
                   [:config.train.max_examples])
    data = dataclasses.replace(data, train={k: v[keep] for k, v in data.train.items()})
    logging.info("Training on %d of the %d training rows (train.max_examples)", len(keep), rows)
  return data


@functools.lru_cache(maxsize=2)
def _epoch_order(rows: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(rows)


def train_batch(rows: dict[str, np.ndarray], step: int, batch_size: int,
                seed: int) -> dict[str, np.ndarray]:
  """The rows of step `step`: a new shuffle each epoch, whose last partial batch is left out."""
  count = len(rows["input_ids"])
  epoch, index = divmod(step, count // batch_size)
  picked = _epoch_order(count, seed, epoch)[index * batch_size:(index + 1) * batch_size]
  return {name: x[picked] for name, x in rows.items()}


def predict(compiled: steps.CompiledFineTuning, params: Any, features: dict[str, np.ndarray],
            batch_size: int) -> Any:
  """The predict step's outputs for every row, as numpy arrays (the last batch is padded)."""
  return steps.predict_in_batches(
      lambda batch: compiled.predict_step(
          params, sharding.global_batch(batch, compiled.predict_sharding, batch_size)),
      features, batch_size)


def finetune(config: ml_collections.ConfigDict, workdir: str,
             checkpointer: Checkpointer = NO_CHECKPOINTS,
             discriminator: pretrained.Discriminator | None = None) -> dict | None:
  """Fine-tunes as `config` says; writes the workdir; returns what results.json holds.

  Returns None when `checkpointer` stopped the run early (on SIGTERM).

  `discriminator` spares loading `config.init` again (the experiment runner
  passes the one it loaded).
  """
  primary = distributed.is_primary()
  task = tasks.TASKS[config.task]
  if discriminator is None:
    discriminator = pretrained.load_discriminator(config.init)
  config_lib.resolve(config, discriminator.model)
  mesh = _mesh(config)
  data = load_task(config, discriminator.tokenizer)
  t = config.train
  rows = len(data.train["input_ids"])
  steps_per_epoch = rows // t.batch_size
  if steps_per_epoch == 0:
    raise DataError(f"the training data has {rows} rows, fewer than one batch; lower "
                    f"--config.train.batch_size below {rows}")
  total_steps = t.epochs * steps_per_epoch
  compiled = _compile(config, discriminator.model, data, total_steps, mesh)

  restored = checkpointer.restore(compiled.abstract_state)
  if restored is None:
    if primary:
      _start_workdir(workdir, config, discriminator, data.labels)
    state = compiled.init_state()
    if not config.random_init:
      state = state.replace(params=_with_pretrained(state.params, discriminator.params))
    progress = dict(step=0, best_score=None, best_epoch=0, history=[], train_seconds=0.0)
  else:
    state, progress = restored
    logging.info("Resuming at step %d of %d", progress["step"], total_steps)
  logging.info("Fine-tuning %s from %s%s: %d training rows, %d epochs of %d steps of %d, "
               "learning rate %g with layer decay %g", config.task, config.init,
               " (architecture only: random weights)" if config.random_init else "", rows,
               t.epochs, steps_per_epoch, t.batch_size, config.optim.learning_rate,
               config.optim.layer_decay)

  writer = (metric_writer.MetricWriter(workdir, progress["step"], t.wandb_project,
                                       config.to_dict()) if primary else None)
  window, window_start = [], 0.0
  for step in range(progress["step"], total_steps):
    if not window:  # evaluation and logging are not training time
      window_start = time.perf_counter()
    batch = sharding.global_batch(train_batch(data.train, step, t.batch_size, t.seed),
                                  compiled.train_sharding, t.batch_size)
    state, stats = compiled.train_step(state, batch)
    window.append(stats)
    done = step + 1
    if done % t.log_every == 0 or done % steps_per_epoch == 0:
      stats = jax.device_get(window)  # waits for the steps to finish
      elapsed = time.perf_counter() - window_start
      progress["train_seconds"] += elapsed
      summary = _log_train(stats, elapsed, t.batch_size, done, total_steps, steps_per_epoch)
      if writer:
        writer.write(done, "train", summary)
      window = []
    if done % steps_per_epoch == 0:
      _evaluate_epoch(compiled, state, data, task, config, done // steps_per_epoch, done, progress,
                      writer, workdir)
    progress["step"] = done
    if checkpointer.save(state, progress):  # the state and position after `done` steps
      break
  if writer:
    writer.close()
  if progress["step"] < total_steps:
    return None  # stopped early, with a checkpoint to continue from

  best = progress["history"][progress["best_epoch"] - 1]["metrics"]
  results = dict(task=config.task, init=config.init, random_init=config.random_init,
                 seed=t.seed, epochs=t.epochs, steps=total_steps, train_rows=rows,
                 score_name=task.score, score=progress["best_score"],
                 best_epoch=progress["best_epoch"], best=best, history=progress["history"],
                 train_seconds=progress["train_seconds"])
  if primary:
    fileio.atomic_write(os.path.join(workdir, RESULTS_FILE), json.dumps(results, indent=2))
    logging.info("Done: best %s %s %.4f at epoch %d of %d; its parameters and dev predictions "
                 "are in %s, every epoch's metrics in %s", data.evals[0].name, task.score,
                 progress["best_score"], progress["best_epoch"], t.epochs,
                 os.path.join(workdir, BEST_DIR), os.path.join(workdir, RESULTS_FILE))
  return results


def _mesh(config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
  """The config's mesh, once both batch sizes are known to split over it."""
  mesh = sharding.create_mesh(config.mesh)
  sharding.batch_sharding(mesh, config.train.batch_size)  # refuses a batch the mesh cannot split
  slices = mesh.shape["data"] * mesh.shape["fsdp"]
  if config.train.eval_batch_size % slices:
    raise ConfigError(f"config field 'train.eval_batch_size' = {config.train.eval_batch_size} "
                      f"must be divisible by the {slices} batch slices of the mesh (data x fsdp); "
                      f"choose a multiple of {slices}")
  return mesh


def _compile(config: ml_collections.ConfigDict, model_config: ml_collections.ConfigDict,
             data: tasks.TaskData, total_steps: int, mesh: jax.sharding.Mesh
             ) -> steps.CompiledFineTuning:
  """The model, its optimizer for `total_steps` and both steps, compiled for the config's mesh."""
  model = model_lib.build_model(model_config, tasks.TASKS[config.task].kind, data.num_outputs,
                                target.choices(mesh.devices.flat, model_config.dtype).ops)
  param_shapes = jax.eval_shape(lambda: sharding.unbox(model_lib.init_partitioned_params(
      model, jax.random.PRNGKey(0), config.max_seq_length)))
  optimizer, schedule = optimizer_lib.build_optimizer(config, param_shapes,
                                                      model_config.num_layers, total_steps)
  return steps.compile_finetuning(model, optimizer, schedule, mesh,
                                  sharding.axis_rules(config.mesh), config.train.seed, data.train,
                                  config.train.batch_size, config.train.eval_batch_size)


def _start_workdir(workdir: str, config: ml_collections.ConfigDict,
                   discriminator: pretrained.Discriminator, labels: tuple[str, ...] | None
                   ) -> None:
  """Writes the config, the encoder's config, the label names and the tokenizer into a new
  workdir: what an export or a prediction needs besides the parameters."""
  fileio.prepare_workdir(workdir)
  for name in (RESULTS_FILE, METRICS_FILE):
    if fileio.exists(os.path.join(workdir, name)):
      raise UserError(f"{workdir} already holds a fine-tuning run ({name}); choose a new "
                      "--workdir")
  fileio.atomic_write(os.path.join(workdir, CONFIG_FILE), config.to_json_best_effort(indent=2))
  fileio.atomic_write(os.path.join(workdir, MODEL_CONFIG_FILE),
                      discriminator.model.to_json_best_effort(indent=2))
  if labels is not None:
    fileio.atomic_write(os.path.join(workdir, LABELS_FILE), json.dumps(list(labels), indent=2))
  if any_tokenizer.tokenizer_path(workdir) is None:
    any_tokenizer.save_tokenizer(discriminator.tokenizer, workdir)
    if isinstance(discriminator.tokenizer, WordPieceTokenizer):
      hf_tokenizer.write_wordpiece_casing(workdir, discriminator.tokenizer)


def _with_pretrained(params: Any, pretrained_params: dict) -> Any:
  """`params` with the pre-trained embeddings and encoder, placed in the same shardings."""
  params = dict(params)
  for name in model_lib.PRETRAINED:
    shardings = jax.tree.map(lambda x: x.sharding, params[name])
    params[name] = jax.device_put(pretrained_params[name], shardings)
  return params


def _log_train(stats: list[dict], elapsed: float, batch_size: int, done: int, total: int,
               steps_per_epoch: int) -> dict[str, float]:
  summary = {k: float(np.mean([s[k] for s in stats])) for k in ("loss", "grad_norm")}
  summary.update(learning_rate=float(stats[-1]["learning_rate"]),
                 examples_per_s=batch_size * len(stats) / elapsed)
  if not np.isfinite(summary["loss"]):
    raise UserError(f"the training loss is {summary['loss']} at step {done}; lower "
                    "--config.optim.learning_rate")
  eta = time.strftime("%H:%M:%S", time.gmtime((total - done) * elapsed / len(stats)))
  logging.info("epoch %d step %d/%d | loss %.4f | lr %.3g | %.0f examples/s | ETA %s "
               "(training; evaluations add to it)", (done - 1) // steps_per_epoch + 1, done,
               total, summary["loss"], summary["learning_rate"], summary["examples_per_s"], eta)
  return summary


def _evaluate_epoch(compiled: steps.CompiledFineTuning, state: TrainState, data: tasks.TaskData,
                    task: tasks.Task, config: ml_collections.ConfigDict, epoch: int, step: int,
                    progress: dict, writer, workdir: str) -> None:
  """Scores every dev split; when the first one's score is the best yet, keeps the params
  and the predictions in workdir/best."""
  results, writers = {}, {}
  for eval_set in data.evals:
    outputs = predict(compiled, state.params, eval_set.features, config.train.eval_batch_size)
    results[eval_set.name], writers[eval_set.name] = eval_set.evaluate(outputs)
    if writer:
      writer.write(step, eval_set.name, results[eval_set.name])
    logging.info("epoch %d, %s: %s", epoch, eval_set.name,
                 ", ".join(f"{k} {v:.4f}" for k, v in results[eval_set.name].items()))
  progress["history"].append(dict(epoch=epoch, step=step, metrics=results))
  score = results[data.evals[0].name][task.score]
  if progress["best_score"] is not None and score <= progress["best_score"]:
    return
  progress.update(best_score=score, best_epoch=epoch)
  params = sharding.to_host(state.params)  # a collective: every process takes part
  if distributed.is_primary():
    best = os.path.join(workdir, BEST_DIR)
    fileio.make_dirs(best)
    fileio.atomic_write(os.path.join(best, "params.msgpack"),
                        flax.serialization.msgpack_serialize(params))
    for name, write in writers.items():
      write(os.path.join(best, f"predictions-{name}"))
    fileio.atomic_write(os.path.join(best, "metrics.json"),
                        json.dumps(dict(epoch=epoch, step=step, metrics=results), indent=2))
