"""Fine-tune pre-trained models, and a random-weight control, on several tasks and seeds.

Each (task, init, seed) is one fine-tuning run with the task's recipe
(electra_jax.finetune), in its own workdir OUT/<task>/<init>/seed<k>. `random`
is the architecture and tokenizer of the first other init with freshly
initialized weights (`random:DIR` names the model to copy). Overrides change
the fine-tuning config of every run (`train.epochs=2`) or of one task's
(`sst2:train.max_examples=20000`).

With learning rates to choose from, every run is made at each of them
(OUT/<task>/<init>/lr<rate>/seed<k>) and each (task, init) is reported at the
rate whose median score over the seeds is best: picked on the dev set the
scores come from, as the ELECTRA paper picks its fine-tuning rates.

OUT/results.json holds every run's metrics; OUT/results.md a table of each
task's score (the metric the ELECTRA paper reports for it) per init: the
median and the range over the seeds. A run whose results.json exists is read
back, not repeated, so an interrupted sweep continues where it stopped.
`python -m electra_jax.experiments.downstream` is its command line.
"""

import dataclasses
import json
import os
import time
from collections.abc import Sequence

import numpy as np
from absl import logging

from electra_jax.convert import pretrained
from electra_jax.errors import ConfigError, UserError
from electra_jax.finetune import config as config_lib
from electra_jax.finetune import tasks, trainer
from electra_jax.runtime import workdir as workdir_files
from electra_jax.runtime.fileio import atomic_write

RANDOM = "random"
LEARNING_RATE = "optim.learning_rate"  # the fine-tuning field --learning_rates sweeps


@dataclasses.dataclass(frozen=True)
class Init:
  label: str  # how the tables name it
  path: str  # the model loaded (for random: whose architecture and tokenizer)
  random: bool


def parse_inits(values: list[str]) -> list[Init]:
  """The --init values, each with a distinct label; `random` copies the first model's shape."""
  models = [v for v in values if not v.startswith(RANDOM)]
  inits = []
  for value in values:
    if value == RANDOM:
      if not models:
        raise UserError("--init=random needs a model to copy the architecture of: add one, or "
                        "write random:DIR")
      inits.append(Init(RANDOM, models[0], True))
    elif value.startswith(RANDOM + ":"):
      path = value[len(RANDOM) + 1:]
      inits.append(Init(f"{RANDOM}:{os.path.basename(os.path.normpath(path))}", path, True))
    else:
      inits.append(Init(os.path.basename(os.path.normpath(value)), value, False))
  labels = [init.label for init in inits]
  return [dataclasses.replace(init, label=f"{init.label}-{i}") if labels.count(init.label) > 1
          else init for i, init in enumerate(inits)]


def apply_override(config, override: str) -> None:
  """FIELD=VALUE into `config`, the value read as the field's type."""
  field, equals, text = override.partition("=")
  if not equals:
    raise ConfigError(f"--set={override} is not FIELD=VALUE")
  *sections, name = field.split(".")
  node = config
  try:
    for section in sections:
      node = node[section]
    kind = node.get_type(name)
  except (KeyError, AttributeError):
    raise ConfigError(f"--set={override}: the fine-tuning config has no field '{field}'") from None
  try:
    if kind is bool:
      if text.lower() not in ("true", "false"):
        raise ValueError
      value = text.lower() == "true"
    else:
      value = kind(text)
  except ValueError:
    raise ConfigError(f"--set={override}: {text!r} is not a {kind.__name__}") from None
  node[name] = value


def run_config(task: str, init: Init, seed: int, data_dirs: dict[str, str | None],
               overrides: list[str]):
  """The fine-tuning config of one run."""
  config = config_lib.default_config(task)
  kind = tasks.TASKS[task].kind
  data_dir = data_dirs[{tasks.TAGGING: "conll", tasks.SPAN: "squad"}.get(kind, "glue")]
  if data_dir is None:
    flag = {tasks.TAGGING: "conll_dir", tasks.SPAN: "squad_dir"}.get(kind, "glue_dir")
    raise UserError(f"the task {task} needs --{flag}")
  config.update(init=init.path, random_init=init.random, data_dir=data_dir)
  config.train.seed = seed
  for override in overrides:
    scope, assignment = scoped(override)
    if scope in (None, task):
      apply_override(config, assignment)
  config_lib.validate(config)
  return config


def scoped(override: str) -> tuple[str | None, str]:
  """"sst2:train.epochs=2" -> ("sst2", "train.epochs=2"); no task before the field: None."""
  if ":" in override.partition("=")[0]:
    scope, _, assignment = override.partition(":")
    return scope, assignment
  return None, override


def summarize(runs: list[dict], inits: list[Init], task_names: list[str]) -> dict:
  """Per task and init: the score's median, min and max over the seeds, and the scores, at the
  learning rate with the best median (`learning_rate`: None where none was swept, "-" in the
  table; `median_by_learning_rate` where there were several)."""
  summary = {}
  for task in task_names:
    summary[task] = {}
    for init in inits:
      mine = [r for r in runs if r["task"] == task and r["label"] == init.label]
      by_rate = {rate: [r for r in mine if r["learning_rate"] == rate]
                 for rate in dict.fromkeys(r["learning_rate"] for r in mine)}
      medians = {rate: float(np.median([r["score"] for r in group]))
                 for rate, group in by_rate.items()}
      best = max(medians, key=medians.get)
      scores = [r["score"] for r in by_rate[best]]
      summary[task][init.label] = dict(
          score_name=tasks.TASKS[task].score, learning_rate=best, seeds=len(scores),
          median=medians[best], min=float(np.min(scores)), max=float(np.max(scores)),
          scores=scores,
          median_train_seconds=float(np.median([r["train_seconds"] for r in by_rate[best]])))
      if len(medians) > 1:
        summary[task][init.label]["median_by_learning_rate"] = {
            f"{rate:g}": median for rate, median in medians.items()}
  return summary


def markdown(summary: dict) -> str:
  lines = ["| task | metric | init | learning rate picked | seeds | median | min - max | scores | "
           "train s (median) |", "|---|---|---|---|---|---|---|---|---|"]
  for task, by_init in summary.items():
    for label, s in by_init.items():
      scores = ", ".join(f"{v:.4f}" for v in s["scores"])
      rate = "-" if s["learning_rate"] is None else f"{s['learning_rate']:g}"
      if "median_by_learning_rate" in s:
        rate += " (medians: " + ", ".join(
            f"{r} {m:.4f}" for r, m in s["median_by_learning_rate"].items()) + ")"
      lines.append(f"| {task} | {s['score_name']} | {label} | {rate} | {s['seeds']} | "
                   f"{s['median']:.4f} | {s['min']:.4f} - {s['max']:.4f} | {scores} | "
                   f"{s['median_train_seconds']:.0f} |")
  return "\n".join(lines) + "\n"


def run_all(inits: list[Init], task_names: list[str], seeds: list[int],
            data_dirs: dict[str, str | None], overrides: list[str], out: str,
            learning_rates: Sequence[float] = ()) -> dict:
  """Every (task, init, learning rate, seed) run, then the results files; returns the summary.

  No `learning_rates`: each task's recipe sets the rate (or an --set override).
  """
  for task in task_names:
    if task not in tasks.TASKS:
      raise UserError(f"unknown task '{task}'; choose from {', '.join(tasks.TASKS)}")
  for override in overrides:
    scope, assignment = scoped(override)
    if scope is not None and scope not in task_names:
      raise UserError(f"--set={override} names the task '{scope}', which is not in --tasks")
    if learning_rates and assignment.startswith(LEARNING_RATE + "="):
      raise UserError(f"--set={override} and --learning_rates both set the learning rate; "
                      "keep one")
  rates = list(learning_rates) or [None]
  configs = {(task, init.label, rate, seed): run_config(
                 task, init, seed, data_dirs,
                 overrides + ([] if rate is None else [f"{LEARNING_RATE}={rate!r}"]))
             for task in task_names for init in inits for rate in rates
             for seed in seeds}  # all checked first
  models = {}
  runs = []
  by_label = {init.label: init for init in inits}
  for (task, label, rate, seed), config in configs.items():
    init = by_label[label]
    name = f"{task} / {label}" + ("" if rate is None else f" / lr {rate:g}") + f" / seed {seed}"
    workdir = os.path.join(out, task, label.replace(":", "_"),
                           *([] if rate is None else [f"lr{rate:g}"]), f"seed{seed}")
    results_path = os.path.join(workdir, workdir_files.RESULTS_FILE)
    if os.path.exists(results_path):
      with open(results_path, encoding="utf-8") as f:
        results = json.load(f)
      logging.info("%s: done before, read from %s", name, results_path)
    else:
      if init.path not in models:
        models[init.path] = pretrained.load_discriminator(init.path)
      start = time.perf_counter()
      results = trainer.finetune(config, workdir, discriminator=models[init.path])
      logging.info("%s: %s %.4f (%.0f s)", name, results["score_name"], results["score"],
                   time.perf_counter() - start)
    runs.append(dict(results, label=label, learning_rate=rate, workdir=workdir))
  summary = summarize(runs, inits, task_names)
  atomic_write(os.path.join(out, "results.json"), json.dumps(
      dict(settings=dict(inits=[dataclasses.asdict(i) for i in inits], tasks=task_names,
                         seeds=seeds, overrides=overrides, learning_rates=list(learning_rates)),
           summary=summary, runs=runs), indent=2))
  atomic_write(os.path.join(out, "results.md"), markdown(summary))
  return summary
