"""Probes over training: each run's probe scores read from its workdir, in a plot and a table.

Runs of different architectures and objectives line up at equal compute: the
x axis is model FLOPs (step x the run's own FLOPs per step). The runs of one
model (a workdir's name without its `-seed<k>`) share a colour; the same
model's random-weight scores are dotted lines.
"""

import collections
import json
import os
import re

import numpy as np

from electra_jax.convert.flax_format import read_config
from electra_jax.errors import DataError, UserError
from electra_jax.performance import flops
from electra_jax.runtime import fileio
from electra_jax.runtime.workdir import CONFIG_FILE, METRICS_FILE


def model_name(workdir: str) -> str:
  """A run's model: its workdir's name without a trailing `-seed<k>`."""
  return re.sub(r"-seed\d+$", "", os.path.basename(os.path.normpath(workdir)))


def read_run(workdir: str) -> dict:
  """A run's probes: {"flops_per_step", "probes": {signal: [(step, score)]}, "random":
  {signal: score}, "settings"}; a run that never probed is refused."""
  config = read_config(os.path.join(workdir, CONFIG_FILE))
  probes, random = collections.defaultdict(list), {}
  path = os.path.join(workdir, METRICS_FILE)
  if not fileio.exists(path):
    raise DataError(f"{path} does not exist: is {workdir} a pre-training workdir?")
  with fileio.open_text(path) as f:
    for line in f:
      try:
        record = json.loads(line)
      except ValueError:
        continue  # a line cut short by a killed run
      scores = {name: value for name, value in record.items() if name not in ("step", "split")}
      if record.get("split") == "probe":
        for name, value in scores.items():
          probes[name].append((record["step"], value))
      elif record.get("split") == "probe_random":
        random = scores
  if not probes:
    raise DataError(f"{path} has no probes: the run needs --config.probes.every (and the "
                    "probes' data, config.probes.glue_dir and conll_dir)")
  return dict(flops_per_step=flops.step_flops(config)["total"], probes=dict(probes),
              random=random, settings=dict(max_examples=config.probes.max_examples,
                                           max_seq_length=config.probes.max_seq_length))


def markdown(runs: dict[str, dict]) -> str:
  """Each run's last probe beside its random-weight scores."""
  signals = _signals(runs)
  lines = ["| run | step | pre-training FLOPs | " + " | ".join(
      f"`{name}` (random)" for name in signals) + " | probe examples, length |",
           "|---|---|---|" + "---|" * len(signals) + "---|"]
  for workdir, run in runs.items():
    step = max(step for points in run["probes"].values() for step, _ in points)
    cells = []
    for name in signals:
      last = dict(run["probes"].get(name, [])).get(step)
      random = run["random"].get(name)
      cells.append(("-" if last is None else f"{last:.4f}") +
                   ("" if random is None else f" ({random:.4f})"))
    settings = run["settings"]
    lines.append(f"| {os.path.basename(os.path.normpath(workdir))} | {step} | "
                 f"{step * run['flops_per_step']:.3g} | " + " | ".join(cells) +
                 f" | {settings['max_examples']}, {settings['max_seq_length']} |")
  return "\n".join(lines) + "\n"


def plot(runs: dict[str, dict], path: str) -> None:
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise UserError("the plot needs matplotlib: pip install 'electra_jax[experiments]'") from None
  signals = _signals(runs)
  models = list(dict.fromkeys(model_name(workdir) for workdir in runs))
  colors = dict(zip(models, plt.rcParams["axes.prop_cycle"].by_key()["color"] * len(models)))
  figure, axes = plt.subplots(1, len(signals), figsize=(5 * len(signals), 3.8), squeeze=False)
  for ax, signal in zip(axes[0], signals):
    labelled = set()
    for workdir, run in runs.items():
      model = model_name(workdir)
      points = sorted(run["probes"].get(signal, []))
      if not points:
        continue
      steps, scores = map(np.asarray, zip(*points))
      ax.plot(steps * run["flops_per_step"], scores, marker="o", markersize=3,
              color=colors[model], label=None if model in labelled else model)
      labelled.add(model)
    for model in models:
      random = [run["random"][signal] for workdir, run in runs.items()
                if model_name(workdir) == model and signal in run["random"]]
      if random:
        ax.axhline(float(np.mean(random)), color=colors[model], linestyle=":", linewidth=1)
    ax.set_xlabel("pre-training FLOPs")
    ax.set_title(f"{signal} (dotted: random weights)", fontsize="medium")
    ax.legend(fontsize="small")
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


def _signals(runs: dict[str, dict]) -> list[str]:
  """Every signal any run probed, in the order they first appear."""
  return list(dict.fromkeys(name for run in runs.values() for name in run["probes"]))
