"""Pre-training's loop: `train_and_evaluate(config, workdir)`, run by `python -m electra_jax.train`.

It prepares the data (or reuses it), compiles the train and eval steps for the
config's mesh, continues from the newest readable checkpoint of the workdir
(or starts fresh, or from a Hugging Face checkpoint), and trains: metrics every
`train.log_every` steps, evaluation every `train.eval_every`, checkpoints every
`checkpoint.every_steps` and on SIGTERM or Ctrl-C, the final parameters at the end.
Defines no command-line flags: experiments and scripts call it with a config.
"""

import functools
import json
import math
import os
import time
from typing import Iterator

import flax.serialization
import jax
import ml_collections
import numpy as np
from absl import logging

from electra_jax import config as config_lib
from electra_jax import metrics as metrics_lib
import electra_jax
from electra_jax.convert import pretrained
from electra_jax.data import dataset
from electra_jax.data import loader
from electra_jax.errors import DataError, UserError
from electra_jax.models import electra
from electra_jax.performance import flops, program_cost
from electra_jax.probes.pretraining import PretrainingProbes
from electra_jax.pretraining import objective
from electra_jax.pretraining import train_step as train_step_lib
from electra_jax.runtime import (checkpointing, distributed, fileio, metric_writer, sharding,
                                 stop_signals)
from electra_jax.runtime import workdir as workdir_files

EVAL_STREAM = 0x0E7A1  # folded into the seed's key: evaluation corrupts data its own way

# What a run may change when it continues a workdir (its config.json, its checkpoints'
# metadata): never the network's shapes or the tokenizer...
_FIXED_FIELDS = (*(f"config.model.{name}" for name in (
    "vocab_size", "embedding_size", "hidden_size", "num_layers", "num_heads",
    "intermediate_size", "generator_size", "generator_layers", "max_position_embeddings",
    "type_vocab_size", "position_embedding", "feed_forward", "norm_position", "use_bias")),
    "config.objective", "config.electra.embedding_sharing",
    "tokenizer_sha256")
# ...always where and how it runs: devices, logging, evaluation, checkpoints...
_FREE_FIELDS = ("config.mesh.", "config.checkpoint.", "config.probes.", "config.train.log_every",
                "config.train.eval_every", "config.train.eval_batches", "config.train.dry_run",
                "config.train.on_nonfinite", "config.train.wandb_project",
                "config.data.num_workers", "config.data.dir",
                "versions.")
# ...and anything else that changes the results only when told so.
_ALLOW_HINT = "--config.checkpoint.allow_config_change=True"
# The statistics that show a step's numbers went bad: the losses, then the gradient
# (each objective's that it has).
_GUARDED_METRICS = ("gen_loss", "disc_loss", "mlm_loss", "loss", "grad_norm")


def log_parameter_counts(config: ml_collections.ConfigDict) -> None:
  counts = electra.parameter_counts(config)
  names = (("encoder", "MLM head") if config.objective == "mlm" else
           ("discriminator", "generator's own"))
  logging.info("Parameters: %s %s (with its embeddings %s), %s %s, total %s", names[0],
               f"{counts['discriminator']:,}", f"{counts['embeddings']:,}", names[1],
               f"{counts['generator']:,}", f"{counts['total']:,}")


def log_compiled(training: train_step_lib.CompiledTraining, mesh: jax.sharding.Mesh) -> None:
  """What one train step costs, from XLA's ahead-of-time compile."""
  cost, gib = training.cost, 2.0**30
  capacity = program_cost.device_memory_bytes()
  logging.info(
      "Compiled the train step in %.1f s for a mesh of %s (%d devices): %.3g FLOPs per step; "
      "per device %.3f GiB peak = %.3f GiB inputs (state and batch) + %.3f GiB temporaries "
      "+ %.3f GiB outputs not written in place%s", training.compile_seconds,
      " x ".join(f"{axis} {size}" for axis, size in mesh.shape.items()), mesh.size,
      cost["flops"], cost["peak_bytes"] / gib, cost["argument_bytes"] / gib,
      cost["temp_bytes"] / gib, (cost["output_bytes"] - cost["alias_bytes"]) / gib,
      f" (the device has {capacity / gib:.1f} GiB)" if capacity else "")


def evaluate(eval_step, params, batches: list[dict], seed: int,
             key_sharding: jax.sharding.Sharding) -> dict[str, float]:
  """Held-out metrics with a fixed corruption, plus (ELECTRA) the discriminator's AUC."""
  eval_key = jax.random.fold_in(jax.random.PRNGKey(seed), EVAL_STREAM)
  totals, scores, labels = {}, [], []
  for i, batch in enumerate(batches):
    key = jax.device_put(jax.random.fold_in(eval_key, i), key_sharding)
    stats, disc = jax.device_get(eval_step(params, batch, key))
    totals = {k: totals.get(k, 0.0) + float(v) for k, v in stats.items()}
    if disc:
      real = disc["real_tokens"] > 0
      scores.append(disc["logits"][real])
      labels.append(disc["labels"][real])
  summary = objective.summarize(totals, len(batches))
  if scores:
    summary["disc_auc"] = metrics_lib.roc_auc(np.concatenate(scores), np.concatenate(labels))
  return summary


def format_progress(step: int, total_steps: int, m: dict[str, float], eta_s: float) -> str:
  """One log line of training metrics: ELECTRA's gen and disc ones, or MLM's."""
  if "disc_loss" in m:
    losses = (f"loss {m['loss']:.3f} (gen {m['gen_loss']:.3f}, disc {m['disc_loss']:.4f}) | "
              f"gen acc {m['gen_accuracy']:.3f} | disc acc {m['disc_accuracy']:.3f}")
  else:
    losses = f"mlm loss {m['mlm_loss']:.3f} | mlm acc {m['mlm_accuracy']:.3f}"
  return (f"step {step}/{total_steps} | {losses} | {m['tokens_per_s']:,.0f} tok/s | "
          + (f"MFU {m['mfu']:.1%} | " if "mfu" in m else "")
          + f"ETA {time.strftime('%H:%M:%S', time.gmtime(eta_s))}")


def run_metadata(config: ml_collections.ConfigDict, tokenizer_sha256: str) -> dict:
  """What each checkpoint records about the run that made it, checked when continuing."""
  return {"config": json.loads(config_lib.resolved(config).to_json_best_effort()),
          "tokenizer_sha256": tokenizer_sha256,
          "versions": {"electra_jax": electra_jax.__version__, "jax": jax.__version__}}


def check_continuation(saved: dict, current: dict, allow_changes: bool, source: str) -> list[str]:
  """Refuses to continue a run (metadata `saved`) as another; the differences it accepts."""
  saved = dict(saved, config=config_lib.migrate(saved.get("config", {})))
  return checkpointing.check_compatible(saved, current, fixed=_FIXED_FIELDS, free=_FREE_FIELDS,
                                        allow_changes=allow_changes, source=source,
                                        allow_hint=_ALLOW_HINT)


def check_workdir_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses a workdir that another config started, before anything is written to it."""
  path = os.path.join(workdir, workdir_files.CONFIG_FILE)
  try:
    with fileio.open_text(path) as f:
      saved = json.load(f)
  except FileNotFoundError:
    return
  except (OSError, ValueError) as error:
    raise DataError(f"cannot read {path}: {error}; is {workdir} the workdir of a run?") from None
  current = {"config": json.loads(config_lib.resolved(config).to_json_best_effort())}
  changes = check_continuation({"config": saved}, current, config.checkpoint.allow_config_change,
                               f"the workdir {workdir} (its {workdir_files.CONFIG_FILE})")
  if changes:
    logging.warning("Continuing %s with a changed config: %s", workdir, "; ".join(changes))


def check_finite(unchecked: list[tuple[int, dict]], policy: str,
                 checkpoints: checkpointing.Checkpointer) -> None:
  """Acts on the steps in `unchecked` whose loss or gradient was NaN or Inf, and empties it.

  Such a step left the state as it was (train_step). With policy "skip" it is
  reported and training goes on; with "stop" the run ends here, before any
  checkpoint of a later step is saved.
  """
  values = jax.device_get([{name: stats[name] for name in _GUARDED_METRICS if name in stats}
                           for _, stats in unchecked])
  steps = [step for step, _ in unchecked]
  unchecked.clear()
  for step, value in zip(steps, values):
    bad = ", ".join(f"{name} is {float(value[name])}" for name in _GUARDED_METRICS
                    if name in value and not np.isfinite(value[name]))
    if not bad:
      continue
    if policy == "skip":
      logging.warning("Step %d: %s; skipped its update (train.on_nonfinite=skip)", step, bad)
      continue
    checkpoints.wait()
    newest = max(checkpoints.all_steps(), default=0)
    kept = (f"the newest checkpoint, of step {newest}, is from before it" if newest else
            "no checkpoint was saved before it")
    raise UserError(f"step {step}: {bad}, so training stopped (train.on_nonfinite=stop); {kept}. "
                    "Set --config.train.on_nonfinite=skip to step over such updates, or lower "
                    f"--config.optim.learning_rate (with {_ALLOW_HINT}), and run again")


def restore_or_initialize(config: ml_collections.ConfigDict,
                          training: train_step_lib.CompiledTraining,
                          checkpoints: checkpointing.Checkpointer, batches: Iterator[dict],
                          metadata: dict, imported_params: dict | None
                          ) -> tuple[train_step_lib.TrainState, int]:
  """The state and step to start from: the newest checkpoint's (loader moved there), or new."""
  restored = checkpoints.restore_latest(
      training.abstract_state,
      check=lambda step, saved: check_continuation(
          saved, metadata, config.checkpoint.allow_config_change,
          f"the checkpoint of step {step} in {checkpoints.directory}"))
  if restored:
    batches.set_state(restored.loader_state)
    logging.info("Continuing from the checkpoint of step %d in %s", restored.step,
                 checkpoints.directory)
    return restored.state, restored.step
  state = training.init_state()
  if imported_params is not None:  # Adam's moments start at zero whatever the parameters
    state = state.replace(params=jax.device_put(
        imported_params, jax.tree.map(lambda x: x.sharding, training.abstract_state.params)))
  return state, 0


def _state_bytes(abstract_state: train_step_lib.TrainState) -> int:
  return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(abstract_state))


class _Discard:
  """Stands in for the metric writer on processes other than 0."""

  def write(self, *args) -> None:
    pass

  def close(self) -> None:
    pass


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Runs pre-training as `config` says; returns the final evaluation metrics.

  A workdir with checkpoints continues from the newest readable one, exactly
  as if the run had not stopped; SIGTERM saves at the next step boundary and
  returns {}, Ctrl-C does the same but raises errors.Interrupted (run the same
  command again to continue). With `train.dry_run`,
  compiles the step, reports its cost and returns that instead
  (program_cost.compiled_cost), without reading data or writing anything.
  """
  t = config.train
  log_parameter_counts(config)
  mesh = sharding.create_mesh(config.mesh)
  sharding.batch_sharding(mesh, t.batch_size, t.grad_accum_steps)  # refuses bad splits early
  if t.dry_run:
    training = train_step_lib.compile_training(config, mesh)
    log_compiled(training, mesh)
    logging.info("Dry run: compiled and reported, not training")
    return training.cost

  primary = distributed.is_primary()
  workdir = fileio.prepare_workdir(workdir) if primary else fileio.absolute(workdir)
  check_workdir_config(config, workdir)
  checkpoints = checkpointing.Checkpointer(
      os.path.join(workdir, workdir_files.CHECKPOINTS_DIR), config.checkpoint.every_steps,
      config.checkpoint.keep, config.checkpoint.keep_every, config.checkpoint.asynchronous)
  newest = max(checkpoints.all_steps(), default=0)
  # Only a workdir whose config.json was just checked against this config is known to be
  # finished; without one, the checkpoint's own metadata is checked below as usual.
  finished = all(fileio.exists(os.path.join(workdir, name))
                 for name in (workdir_files.PARAMS_FILE, workdir_files.CONFIG_FILE))
  if newest >= t.steps and finished:
    checkpoints.close()
    logging.info("Nothing to train: %s holds the checkpoint of step %d and the final parameters "
                 "(train.steps is %d); give a larger --config.train.steps to train on", workdir,
                 newest, t.steps)
    return metric_writer.last_logged(workdir, "eval")
  # Process 0 writes the imported vocabulary, the tokenizer and the prepared data;
  # the others wait, then read them.
  imported_params = (distributed.primary_first(lambda: pretrained.init_from_hf(config, workdir),
                                            "imported checkpoint")
                     if t.init_from and not checkpoints.all_steps() else None)
  data = distributed.primary_first(lambda: dataset.prepare(config, workdir), "prepared data")

  training = train_step_lib.compile_training(config, mesh)
  log_compiled(training, mesh)
  model_flops = flops.step_flops(config)
  peak = flops.peak_flops(config.model.dtype, list(mesh.devices.flat))
  logging.info("%s; peak %s", flops.describe(model_flops), flops.describe_peak(peak))
  eval_step = train_step_lib.compile_eval_step(config, mesh, training.abstract_state.params)
  if primary:
    checkpointing.check_space(checkpoints.directory, _state_bytes(training.abstract_state))
  to_global = functools.partial(sharding.global_batch, sharding=training.batch_sharding,
                                batch_size=t.batch_size)
  hosts = sharding.host_block(training.batch_sharding, t.batch_size)
  batches: Iterator[dict] = loader.train_iterator(data, t.batch_size, t.seed, **hosts)
  metadata = run_metadata(config, data.tokenizer.sha256)
  state, start_step = restore_or_initialize(config, training, checkpoints, batches, metadata,
                                            imported_params)
  if primary:  # now that the checkpoint, if any, has been accepted
    fileio.atomic_write(os.path.join(workdir, workdir_files.CONFIG_FILE),
                        config_lib.resolved(config).to_json_best_effort(indent=2))
  eval_batches = [to_global(b) for b in loader.eval_batches(data, t.batch_size, t.eval_batches,
                                                            **hosts)]
  tokens_per_step = t.batch_size * config.data.max_seq_length
  writer = (metric_writer.MetricWriter(workdir, start_step, t.wandb_project, config.to_dict())
            if primary else _Discard())
  probes = PretrainingProbes(config, data.tokenizer, start_step)
  eval_metrics, unchecked = {}, []
  # The step was compiled ahead of time: the first one is timed like the others.
  window, window_start = [], time.perf_counter()
  try:
    with stop_signals.StopSignals() as stop_signal:
      for step in range(start_step + 1, t.steps + 1):
        state, stats = training.train_step(state, to_global(next(batches)))
        window.append(stats)
        unchecked.append((step, stats))
        if step % t.log_every == 0 or step == t.steps:
          check_finite(unchecked, t.on_nonfinite, checkpoints)
          totals = jax.tree_util.tree_map(lambda *xs: float(np.sum(xs)), *jax.device_get(window))
          elapsed = time.perf_counter() - window_start
          train_metrics = objective.summarize(totals, len(window))
          train_metrics.update(learning_rate=float(window[-1]["learning_rate"]),
                               grad_norm=totals["grad_norm"] / len(window),
                               tokens_per_s=tokens_per_step * len(window) / elapsed)
          if peak:
            train_metrics["mfu"] = flops.mfu(model_flops["total"], elapsed / len(window), peak)
          writer.write(step, "train", train_metrics)
          logging.info(format_progress(step, t.steps, train_metrics,
                                       (t.steps - step) * elapsed / len(window)))
          window, window_start = [], time.perf_counter()
        aside = time.perf_counter()
        if step == t.steps or (t.eval_every and step % t.eval_every == 0):
          eval_metrics = evaluate(eval_step, state.params, eval_batches, t.seed,
                                  sharding.replicated(mesh))
          writer.write(step, "eval", eval_metrics)
          logging.info("eval at step %d: %s", step,
                       ", ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items()))
        if probes.due(step):
          probes.log(step, state.params, writer, primary)
        window_start += time.perf_counter() - aside  # evaluation and probes are not training
        stopping = stop_signal.reached(step)
        if stopping or step == t.steps or checkpoints.should_save(step):
          check_finite(unchecked, t.on_nonfinite, checkpoints)
          checkpoints.save(step, state, batches.get_state(), metadata)
        if stopping:
          checkpoints.wait()
          stop_signal.stop(step)
          return {}
  finally:
    checkpoints.close()  # waits for the last save
    writer.close()

  if start_step >= t.steps:
    logging.info("Nothing to train: the checkpoint is of step %d, train.steps is %d", start_step,
                 t.steps)
  params = sharding.to_host(state.params)  # every process takes part in gathering them
  if primary:
    params_path = os.path.join(workdir, workdir_files.PARAMS_FILE)
    fileio.atomic_write(params_path, flax.serialization.msgpack_serialize(params))
    logging.info("Wrote the final parameters to %s", params_path)
  return eval_metrics
