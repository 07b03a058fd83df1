"""Metrics that need the whole evaluation set, and where logged metrics are written."""

import json
import os
from typing import Mapping

import numpy as np


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
  """Area under the ROC curve (the Mann-Whitney statistic, ties counted as half).

  NaN when only one class is present, since AUC is undefined then.
  """
  scores, labels = np.asarray(scores, np.float64).ravel(), np.asarray(labels).ravel() > 0
  positives, negatives = labels.sum(), (~labels).sum()
  if positives == 0 or negatives == 0:
    return float("nan")
  ranks = average_ranks(scores)
  return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def average_ranks(values: np.ndarray) -> np.ndarray:
  """The 1-based rank of each value; tied values share the mean of their ranks."""
  _, inverse, tie_counts = np.unique(np.asarray(values).ravel(), return_inverse=True,
                                     return_counts=True)
  first_rank = np.cumsum(tie_counts) - tie_counts + 1
  return (first_rank + (tie_counts - 1) / 2.0)[inverse]


class MetricWriter:
  """Appends metrics to `metrics.jsonl` and to TensorBoard event files in the workdir.

  Each JSON line is one logged step of one split: {"step", "split", "loss", ...}.
  """

  def __init__(self, workdir: str):
    # Imported here: tensorboardX pulls in protobuf, which the library needs only here.
    from tensorboardX import SummaryWriter
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
    self._tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
    self._jsonl.write(json.dumps({"step": step, "split": split, **metrics}) + "\n")
    self._jsonl.flush()
    for name, value in metrics.items():
      self._tensorboard.add_scalar(f"{split}/{name}", value, step)
    self._tensorboard.flush()

  def close(self) -> None:
    self._jsonl.close()
    self._tensorboard.close()
