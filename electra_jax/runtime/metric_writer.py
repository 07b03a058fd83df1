"""Where a run's logged metrics go: `metrics.jsonl` and TensorBoard event files in the workdir,
and Weights & Biases when the run names a project (wandb_run.py)."""

import io
import json
import os
from typing import Any, Mapping

from electra_jax.runtime import fileio, wandb_run
from electra_jax.runtime.workdir import METRICS_FILE, TENSORBOARD_DIR


class MetricWriter:
  """Appends metrics to `metrics.jsonl` and to TensorBoard event files in the workdir.

  Each JSON line is one logged step of one split: {"step", "split", "loss", ...}.
  A run that starts at `start_step` (resumed from a checkpoint, or 0) drops what
  an interrupted run logged after it, from both, since those steps run again.
  With `wandb_project`, every write also goes to the workdir's W&B run in that
  project, which gets `config` as its config.

  A workdir at a URL (gs://, s3://) gets both through fsspec: an object store
  cannot append, so each write replaces metrics.jsonl and the event file whole.
  """

  def __init__(self, workdir: str, start_step: int = 0, wandb_project: str = "",
               config: Mapping[str, Any] | None = None):
    # Imported here: tensorboardX pulls in protobuf, which the library needs only here.
    from tensorboardX import SummaryWriter
    self._path = os.path.join(workdir, METRICS_FILE)
    kept = []
    if fileio.exists(self._path):
      with fileio.open_text(self._path) as f:
        kept = [line.rstrip("\n") + "\n" for line in f if _logged_step(line) <= start_step]
      fileio.atomic_write(self._path, "".join(kept))
    # A local file is appended to; a URL's lines are kept here to rewrite it whole.
    self._lines = kept if fileio.is_url(workdir) else None
    self._jsonl = None if fileio.is_url(workdir) else open(self._path, "a", encoding="utf-8")
    if fileio.is_url(workdir):
      _write_tensorboard_through_fsspec(workdir.split("://", 1)[0])
    self._tensorboard = SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR),
                                      purge_step=start_step + 1)
    self._wandb = wandb_run.start(workdir, wandb_project, config or {}) if wandb_project else None

  def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
    line = json.dumps({"step": step, "split": split, **metrics}) + "\n"
    if self._jsonl:
      self._jsonl.write(line)
      self._jsonl.flush()
    else:
      self._lines.append(line)
      fileio.atomic_write(self._path, "".join(self._lines))
    for name, value in metrics.items():
      self._tensorboard.add_scalar(f"{split}/{name}", value, step)
    self._tensorboard.flush()
    if self._wandb:
      wandb_run.log(self._wandb, step, split, metrics)

  def close(self) -> None:
    if self._jsonl:
      self._jsonl.close()
    self._tensorboard.close()
    if self._wandb:
      self._wandb.finish()


def last_logged(workdir: str, split: str) -> dict[str, float]:
  """The newest metrics of `split` in the workdir's metrics.jsonl ({} if none)."""
  path, last = os.path.join(workdir, METRICS_FILE), {}
  if fileio.exists(path):
    with fileio.open_text(path) as f:
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


class _WholeFileWriter:
  """An event file at a URL, replaced whole at each flush (tensorboardX's writer factories
  take this shape; its own gs:// and s3:// ones need google-cloud-storage and boto3)."""

  def __init__(self, path: str):
    self._path, self._buffer = path, io.BytesIO()

  def write(self, data: bytes) -> None:
    self._buffer.write(data)

  def flush(self) -> None:
    fileio.atomic_write(self._path, self._buffer.getvalue())

  def close(self) -> None:
    self.flush()


class _WholeFileWriters:

  def open(self, path: str) -> _WholeFileWriter:
    return _WholeFileWriter(path)

  def directory_check(self, path: str) -> None:
    fileio.make_dirs(path)


def _write_tensorboard_through_fsspec(scheme: str) -> None:
  from tensorboardX import record_writer  # pylint: disable=import-outside-toplevel
  record_writer.register_writer_factory(scheme, _WholeFileWriters())
