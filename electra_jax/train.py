r"""Pre-train an ELECTRA generator and discriminator.

  python -m electra_jax.train --config=configs/tiny.py --workdir=/tmp/electra

trains the tiny config on the built-in corpus (Python's own documentation) in
a few minutes on a CPU. Any config field can be overridden, for example
  --config.train.steps=2000 --config.train.batch_size=64
  --config.data.source='/data/books/*.txt' --config.data.max_seq_length=256
The first run prepares the corpus (tokenizer, packed examples in shards under
<workdir>/data, or --config.data.dir) and later runs reuse it. The workdir
receives the resolved config (config.json), metrics (metrics.jsonl and
TensorBoard files under tensorboard/), the tokenizer (tokenizer.model) and the
final parameters (params.msgpack).
"""

import os
import time
from typing import Iterator

import flax.serialization
import jax
import ml_collections
import numpy as np
from absl import flags, logging
from ml_collections import config_flags

from electra_jax import cli, objective
from electra_jax import metrics as metrics_lib
from electra_jax import optim, train_step as train_step_lib
from electra_jax.convert import pretrained
from electra_jax.data import loader, pipeline
from electra_jax.errors import UserError
from electra_jax.fileio import atomic_write, prepare_workdir
from electra_jax.models import electra

_CONFIG = config_flags.DEFINE_config_file(
    "config", None,
    "Path to a config file (configs/tiny.py, small.py, base.py, large.py). Override any "
    "field with --config.<section>.<field>=<value>, e.g. --config.train.steps=1000.")
_WORKDIR = flags.DEFINE_string(
    "workdir", None,
    "Directory for this run's outputs: config.json, metrics.jsonl, tensorboard/, "
    "tokenizer.model, params.msgpack, and the prepared data (data/, unless --config.data.dir "
    "is set). Created if missing.")

EVAL_STREAM = 0x0E7A1  # folded into the seed's key: evaluation corrupts data its own way


def log_parameter_counts(config: ml_collections.ConfigDict) -> None:
  counts = electra.parameter_counts(config)
  logging.info("Parameters: discriminator %s (with shared embeddings %s), generator's own %s, "
               "total %s", *(f"{counts[k]:,}" for k in
                             ("discriminator", "embeddings", "generator", "total")))


def evaluate(eval_step, params, batches: list[dict], seed: int) -> dict[str, float]:
  """Held-out metrics with a fixed corruption, plus the discriminator's AUC."""
  eval_key = jax.random.fold_in(jax.random.PRNGKey(seed), EVAL_STREAM)
  totals, scores, labels = {}, [], []
  for i, batch in enumerate(batches):
    stats, disc = jax.device_get(eval_step(params, batch, jax.random.fold_in(eval_key, i)))
    totals = {k: totals.get(k, 0.0) + float(v) for k, v in stats.items()}
    real = disc["real_tokens"] > 0
    scores.append(disc["logits"][real])
    labels.append(disc["labels"][real])
  summary = objective.summarize(totals, len(batches))
  summary["disc_auc"] = metrics_lib.roc_auc(np.concatenate(scores), np.concatenate(labels))
  return summary


def format_progress(step: int, total_steps: int, m: dict[str, float], eta_s: float) -> str:
  return (f"step {step}/{total_steps} | loss {m['loss']:.3f} (gen {m['gen_loss']:.3f}, "
          f"disc {m['disc_loss']:.4f}) | gen acc {m['gen_accuracy']:.3f} | "
          f"disc acc {m['disc_accuracy']:.3f} | {m['tokens_per_s']:,.0f} tok/s | "
          f"ETA {time.strftime('%H:%M:%S', time.gmtime(eta_s))}")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Runs pre-training as `config` says; returns the final evaluation metrics."""
  workdir = prepare_workdir(workdir)
  log_parameter_counts(config)
  initial_params = pretrained.init_from_hf(config, workdir) if config.train.init_from else None
  data = pipeline.prepare(config, workdir)
  atomic_write(os.path.join(workdir, "config.json"), config.to_json_best_effort(indent=2))

  model = electra.build_pretrainer(config)
  optimizer = optim.build_optimizer(config)
  schedule = optim.learning_rate_schedule(config)
  settings = train_step_lib.objective_settings(config)
  state = jax.jit(lambda params: train_step_lib.create_train_state(config, model, optimizer,
                                                                  params))(initial_params)
  train_step = train_step_lib.make_train_step(model, optimizer, schedule, settings)
  eval_step = train_step_lib.make_eval_step(model, settings)

  t = config.train
  hosts = dict(process_index=jax.process_index(), process_count=jax.process_count())
  batches: Iterator[dict] = loader.train_iterator(data, t.batch_size, t.seed, **hosts)
  eval_batches = loader.eval_batches(data, t.batch_size, t.eval_batches, **hosts)
  tokens_per_step = t.batch_size * config.data.max_seq_length
  writer = metrics_lib.MetricWriter(workdir)
  window, window_start = [], time.perf_counter()
  eval_metrics = {}
  for step in range(1, t.steps + 1):
    state, stats = train_step(state, next(batches))
    window.append(stats)
    if step == 1:  # the first step compiles: time the rest
      jax.block_until_ready(stats)
      logging.info("Compiled the train step in %.1f s", time.perf_counter() - window_start)
      window, window_start = [], time.perf_counter()
    if window and (step % t.log_every == 0 or step == t.steps):
      totals = jax.tree_util.tree_map(lambda *xs: float(np.sum(xs)), *jax.device_get(window))
      elapsed = time.perf_counter() - window_start
      train_metrics = objective.summarize(totals, len(window))
      train_metrics.update(learning_rate=float(window[-1]["learning_rate"]),
                           grad_norm=totals["grad_norm"] / len(window),
                           tokens_per_s=tokens_per_step * len(window) / elapsed)
      writer.write(step, "train", train_metrics)
      logging.info(format_progress(step, t.steps, train_metrics,
                                   (t.steps - step) * elapsed / len(window)))
      window, window_start = [], time.perf_counter()
    if step == t.steps or (t.eval_every and step % t.eval_every == 0):
      eval_metrics = evaluate(eval_step, state.params, eval_batches, t.seed)
      writer.write(step, "eval", eval_metrics)
      logging.info("eval at step %d: %s", step,
                   ", ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items()))
      window_start = time.perf_counter()  # evaluation time is not training time
  writer.close()

  params_path = os.path.join(workdir, "params.msgpack")
  atomic_write(params_path, flax.serialization.msgpack_serialize(jax.device_get(state.params)))
  logging.info("Wrote the final parameters to %s", params_path)
  return eval_metrics


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}; see --help")
  config = cli.resolved_config(_CONFIG)
  if not _WORKDIR.value:
    raise UserError("--workdir is required: the directory that receives this run's outputs")
  train_and_evaluate(config, _WORKDIR.value)


if __name__ == "__main__":
  cli.run(main)
