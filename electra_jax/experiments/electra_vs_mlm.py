"""ELECTRA against masked language modelling at equal pre-training compute, end to end.

`run` pre-trains an ELECTRA model and an MLM model (the same config with
objective=mlm: the same encoder, BERT's 80/10/10 masking) for the same model
FLOPs (electra_jax.performance.flops), keeps the parameters of both at fractions
of the budget, fine-tunes each of those, and the encoder with random weights,
over tasks and seeds (comparison.py), and writes

  OUT/results.json      every setting, the FLOPs and steps of each point, every score
  OUT/results.md        per task, model and FLOPs point: the median and min - max over seeds
  OUT/score_vs_flops.png  score against pre-training FLOPs per task (needs matplotlib:
                        pip install 'electra_jax[experiments]')

Each objective's steps are the budget over its model FLOPs per step, rounded
so that every fraction falls on a checkpoint. Everything goes under OUT:
data/ (the corpus prepared once, for both), pretrain/{electra,mlm} (training
workdirs), models/<objective>-<fraction> (exported encoders), finetune/ (the
comparison's runs). Run again after a stop, it continues: training resumes
from its checkpoints, finished parts are skipped.
`python -m electra_jax.experiments.equal_compute` is its command line.
"""

import dataclasses
import fractions
import json
import math
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from electra_jax import config as config_lib
import electra_jax
from electra_jax.convert import flax_format
from electra_jax.convert import run_export
from electra_jax.errors import UserError
from electra_jax.experiments import comparison
from electra_jax.performance import flops
from electra_jax.pretraining import loop
from electra_jax.pretraining import train_step as train_step_lib
from electra_jax.runtime import sharding
from electra_jax.runtime import workdir as workdir_files
from electra_jax.runtime.fileio import atomic_write

OBJECTIVES = ("electra", "mlm")
RANDOM = comparison.RANDOM
# Short fine-tuning runs, so that the whole grid (2 objectives x 3 fractions + random =
# 7 encoders x 3 tasks x 3 seeds = 63 runs) takes about an hour on 2 CPU cores: 64 tokens,
# 2,000 training examples per task (a fixed draw, the same for every run), CoNLL for 10
# epochs (its recipe's 3 leave every model near F1 0 with so few sentences:
# docs/finetune_results.md). Applied before the caller's overrides, which add to or override them.
FINETUNE_DEFAULTS = ("max_seq_length=64", "train.max_examples=2000", "conll:train.epochs=10")


@dataclasses.dataclass(frozen=True)
class Plan:
  """One objective's pre-training: its steps and where the fractions of the budget fall."""

  objective: str
  flops_per_step: float
  steps: int
  checkpoint_every: int  # every fraction's step is a multiple of it
  fraction_steps: dict[float, int]

  def flops_at(self, fraction: float) -> float:
    return self.fraction_steps[fraction] * self.flops_per_step


def objective_config(base: ml_collections.ConfigDict, objective: str, temperature: float,
                     steps: int = 0, checkpoint_every: int = 0) -> ml_collections.ConfigDict:
  """`base` for one objective, with `steps` (if given) and checkpoints at the fractions."""
  config = base.copy_and_resolve_references()
  config.objective = objective
  config.electra.temperature = temperature
  if steps:
    config.train.steps = steps
    config.optim.warmup_steps = min(config.optim.warmup_steps, steps // 10)
    config.train.eval_every = 0  # evaluated at the end
    config.checkpoint.every_steps = config.checkpoint.keep_every = checkpoint_every
    config.checkpoint.keep = 1
  return config


def plan(config: ml_collections.ConfigDict, budget_flops: float,
         budget_fractions: list[float]) -> Plan:
  """Steps of `config`'s objective for `budget_flops`, a multiple of every fraction's step."""
  per_step = flops.step_flops(config)["total"]
  denominator = math.lcm(*(fractions.Fraction(f).limit_denominator(100).denominator
                           for f in budget_fractions))
  steps = max(1, round(budget_flops / per_step / denominator)) * denominator
  fraction_steps = {f: round(f * steps) for f in budget_fractions}
  return Plan(config.objective, per_step, steps, math.gcd(*fraction_steps.values()),
              fraction_steps)


def measure_flops_per_second(config: ml_collections.ConfigDict, steps: int = 10) -> float:
  """Model FLOPs per second of `config`'s train step here: the median of `steps` timed steps."""
  training = train_step_lib.compile_training(config, sharding.create_mesh(config.mesh))
  state = training.init_state()
  rng = np.random.default_rng(0)
  shape = (config.train.batch_size, config.data.max_seq_length)
  batch = sharding.global_batch(
      {"input_ids": rng.integers(5, config.model.vocab_size, shape, dtype=np.int32),
       "token_type_ids": np.zeros(shape, np.int32)}, training.batch_sharding,
      config.train.batch_size)
  seconds = []
  for _ in range(steps + 2):  # the first two warm up
    start = time.perf_counter()
    state, stats = training.train_step(state, batch)
    jax.block_until_ready(stats)
    seconds.append(time.perf_counter() - start)
  return flops.step_flops(config)["total"] / float(np.median(seconds[2:]))


def pretrain(config: ml_collections.ConfigDict, workdir: str) -> float:
  """Trains (or continues) a workdir to its last step; returns the seconds it took here."""
  if os.path.exists(os.path.join(workdir, workdir_files.PARAMS_FILE)):
    logging.info("%s is trained already", workdir)
    return 0.0
  start = time.perf_counter()
  if not loop.train_and_evaluate(config, workdir):
    raise UserError(f"pre-training in {workdir} stopped on SIGTERM; run the same command again "
                    "to continue")
  return time.perf_counter() - start


def export_fractions(p: Plan, workdir: str, models_dir: str) -> dict[float, str]:
  """The encoder at each fraction's step, exported for fine-tuning (once)."""
  paths = {}
  for fraction, step in p.fraction_steps.items():
    paths[fraction] = os.path.join(models_dir, f"{p.objective}-{fraction:g}")
    if not flax_format.is_saved_model(paths[fraction]):
      run_export.export_run(workdir, "flax", paths[fraction], step=step)
  return paths


def tabulate(plans: dict[str, Plan], summary: dict) -> list[dict]:
  """Rows of (task, model, fraction, FLOPs, median, min, max, scores) from downstream's summary.

  `summary` is comparison.summarize's: task -> init label -> statistics; the
  labels are `<objective>-<fraction>` and `random` (0 FLOPs).
  """
  rows = []
  for task, by_label in summary.items():
    for objective, p in plans.items():
      for fraction in p.fraction_steps:
        label = f"{objective}-{fraction:g}"
        if label in by_label:
          rows.append(_row(task, objective, fraction, p.flops_at(fraction), by_label[label]))
    if RANDOM in by_label:
      rows.append(_row(task, RANDOM, 0.0, 0.0, by_label[RANDOM]))
  return rows


def _row(task: str, model: str, fraction: float, flops_done: float, s: dict) -> dict:
  return dict(task=task, model=model, fraction=fraction, flops=flops_done,
              score_name=s["score_name"], median=s["median"], min=s["min"], max=s["max"],
              scores=s["scores"])


def markdown(rows: list[dict], plans: dict[str, Plan], budget_flops: float) -> str:
  lines = [f"Pre-training budget {budget_flops:.3g} model FLOPs per model; " + "; ".join(
      f"{name} {p.steps} steps of {p.flops_per_step:.3g} FLOPs" for name, p in plans.items()),
           "", "| task | metric | model | fraction | pre-training FLOPs | seeds | median | "
           "min - max |", "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['task']} | {r['score_name']} | {r['model']} | {r['fraction']:g} | "
                 f"{r['flops']:.3g} | {len(r['scores'])} | {r['median']:.4f} | "
                 f"{r['min']:.4f} - {r['max']:.4f} |")
  return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: str) -> bool:
  """Score against pre-training FLOPs, one panel per task; False when matplotlib is missing."""
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  except ImportError:
    logging.warning("No plot: matplotlib is not installed (pip install "
                    "'electra_jax[experiments]'); results.md and results.json are written")
    return False
  task_names = list(dict.fromkeys(r["task"] for r in rows))
  figure, axes = plt.subplots(1, len(task_names), figsize=(4.5 * len(task_names), 3.6),
                              squeeze=False)
  for ax, task in zip(axes[0], task_names):
    for model, color in zip(OBJECTIVES, ("tab:blue", "tab:orange")):
      points = sorted((r["flops"], r["median"], r["min"], r["max"]) for r in rows
                      if r["task"] == task and r["model"] == model)
      if points:
        x, median, low, high = map(np.asarray, zip(*points))
        ax.errorbar(x, median, yerr=[median - low, high - median], marker="o", capsize=3,
                    color=color, label=model.upper() if model == "mlm" else "ELECTRA")
    for r in rows:
      if r["task"] == task and r["model"] == RANDOM:
        ax.axhline(r["median"], color="gray", linestyle="--", label="random init")
    ax.set_xscale("log")
    ax.set_xlabel("pre-training FLOPs")
    ax.set_ylabel(next(r["score_name"] for r in rows if r["task"] == task))
    ax.set_title(task)
    ax.legend(fontsize="small")
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)
  return True


def run(base: ml_collections.ConfigDict, budget_flops: float, budget_fractions: list[float],
        task_names: list[str], seeds: list[int], data_dirs: dict[str, str | None],
        overrides: list[str], out: str, temperature: float = 1.0,
        measured: dict[str, Any] | None = None) -> list[dict]:
  """The whole experiment into `out`; returns the result rows.

  `overrides` are downstream's --set values; `measured` how the budget was
  converted from minutes (recorded).
  """
  base = base.copy_and_resolve_references()
  base.data.dir = base.data.dir or os.path.join(out, "data")  # prepared once, for both
  plans, configs = {}, {}
  for objective in OBJECTIVES:
    shaped = objective_config(base, objective, temperature)
    p = plan(shaped, budget_flops, budget_fractions)
    plans[objective] = p
    configs[objective] = objective_config(base, objective, temperature, p.steps,
                                          p.checkpoint_every)
    config_lib.validate(configs[objective])
    logging.info("%s: %.4g model FLOPs per step, %d steps for %.4g FLOPs; fine-tuned at steps %s",
                 objective, p.flops_per_step, p.steps, p.steps * p.flops_per_step,
                 ", ".join(map(str, p.fraction_steps.values())))
  inits, pretrain_seconds = [], {}
  for objective in OBJECTIVES:
    workdir = os.path.join(out, "pretrain", objective)
    pretrain_seconds[objective] = pretrain(configs[objective], workdir)
    paths = export_fractions(plans[objective], workdir, os.path.join(out, "models"))
    inits += [comparison.Init(f"{objective}-{f:g}", path, False) for f, path in paths.items()]
  inits.append(comparison.Init(RANDOM, inits[0].path, True))
  summary = comparison.run_all(inits, task_names, seeds, data_dirs, overrides,
                               os.path.join(out, "finetune"))
  rows = tabulate(plans, summary)
  settings = dict(
      budget_flops=budget_flops, measured=measured, fractions=budget_fractions,
      tasks=task_names, seeds=seeds, finetune_overrides=overrides,
      electra_temperature=temperature, pretrain_seconds=pretrain_seconds,
      plans={name: dataclasses.asdict(p) for name, p in plans.items()},
      configs={name: json.loads(config_lib.resolved(c).to_json_best_effort())
               for name, c in configs.items()},
      versions={"electra_jax": electra_jax.__version__, "jax": jax.__version__})
  atomic_write(os.path.join(out, "results.json"),
               json.dumps(dict(settings=settings, rows=rows), indent=2))
  table = markdown(rows, plans, budget_flops)
  atomic_write(os.path.join(out, "results.md"), table)
  if plot(rows, os.path.join(out, "score_vs_flops.png")):
    logging.info("Wrote %s", os.path.join(out, "score_vs_flops.png"))
  print(table)
  return rows
