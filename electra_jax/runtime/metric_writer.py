"""Where a run's logged metrics go: `metrics.jsonl` and TensorBoard event files in the workdir,
and Weights & Biases when the run names a project (wandb_run.py)."""

import json
import os
from typing import Any, Mapping

from electra_jax.runtime import wandb_run
from electra_jax.runtime.fileio import atomic_write
from electra_jax.runtime.workdir import METRICS_FILE, TENSORBOARD_DIR


class MetricWriter:
  """Appends metrics to `metrics.jsonl` and to TensorBoard event files in the workdir.

  Each JSON line is one logged step of one split: {"step", "split", "loss", ...}.
  A run that starts at `start_step` (resumed from a checkpoint, or 0) drops what
  an interrupted run logged after it, from both, since those steps run again.
  With `wandb_project`, every write also goes to the workdir's W&B run in that
  project, which gets `config` as its config.
  """

  def __init__(self, workdir: str, start_step: int = 0, wandb_project: str = "",
               config: Mapping[str, Any] | None = None):
    # Imported here: tensorboardX pulls in protobuf, which the library needs only here.
    from tensorboardX import SummaryWriter
    path = os.path.join(workdir, METRICS_FILE)
    if os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        kept = [line.rstrip("\n") + "\n" for line in f if _logged_step(line) <= start_step]
      atomic_write(path, "".join(kept))
    self._jsonl = open(path, "a", encoding="utf-8")
    self._tensorboard = SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR),
                                      purge_step=start_step + 1)
    self._wandb = wandb_run.start(workdir, wandb_project, config or {}) if wandb_project else None

  def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
    self._jsonl.write(json.dumps({"step": step, "split": split, **metrics}) + "\n")
    self._jsonl.flush()
    for name, value in metrics.items():
      self._tensorboard.add_scalar(f"{split}/{name}", value, step)
    self._tensorboard.flush()
    if self._wandb:
      wandb_run.log(self._wandb, step, split, metrics)

  def close(self) -> None:
    self._jsonl.close()
    self._tensorboard.close()
    if self._wandb:
      self._wandb.finish()


def last_logged(workdir: str, split: str) -> dict[str, float]:
  """The newest metrics of `split` in the workdir's metrics.jsonl ({} if none)."""
  path, last = os.path.join(workdir, METRICS_FILE), {}
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      for line in f:
        if f'"split": "{split}"' in line and _logged_step(line) != float("inf"):
          last = json.loads(line)
  return {name: value for name, value in last.items() if name not in ("step", "split")}


def _logged_step(line: str) -> float:
  """The step of a metrics.jsonl line; infinite for one cut short by a killed run."""
  try:
    return json.loads(line)["step"]
  except (ValueError, KeyError, TypeError):
    return float("inf")
