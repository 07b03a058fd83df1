"""Orbax checkpoints for fine-tuning: the trainer's `Checkpointer`, on runtime/checkpointing.py.

A fine-tuning run's state is its TrainState and its progress dict (the step,
which is the whole data position, the best score and each epoch's metrics), so
the progress travels as the checkpoint's JSON "loader" item. Saves happen every
`checkpoint.every_steps` steps, after each epoch's evaluation (so also at the
end) and on SIGTERM or Ctrl-C; a run started
again with the same command continues from the newest readable checkpoint,
onto whatever mesh it runs on now.
"""

import json
import os

import jax
import ml_collections
from absl import logging

import electra_jax
from electra_jax.runtime import fileio
from electra_jax.errors import UserError
from electra_jax.pretraining.train_step import TrainState
from electra_jax.runtime import checkpointing, stop_signals
from electra_jax.runtime.workdir import CHECKPOINTS_DIR, CONFIG_FILE

# A checkpoint of another task, starting point or sequence length is another run...
_FIXED_FIELDS = ("config.task", "config.init", "config.random_init", "config.max_seq_length")
# ...where and how it runs may always change...
_FREE_FIELDS = ("config.mesh.", "config.checkpoint.", "config.train.log_every",
                "config.train.wandb_project",
                "config.train.eval_batch_size", "versions.")
# ...and anything else only when told so.
_ALLOW_HINT = "--config.checkpoint.allow_config_change=True"


def refuse_pretraining_workdir(workdir: str) -> None:
  """A pre-training run's workdir is no place for a fine-tuning run: say so before touching it."""
  try:
    with fileio.open_text(os.path.join(workdir, CONFIG_FILE)) as f:
      saved = json.load(f)
  except (OSError, ValueError):  # no config.json (a new workdir), or not ours: checked later
    return
  if isinstance(saved, dict) and "task" not in saved:
    raise UserError(f"--workdir={workdir} is the workdir of a pre-training run (its "
                    f"{CONFIG_FILE} has no fine-tuning task); give fine-tuning a new --workdir "
                    f"of its own, and the pre-training run as --config.init={workdir}")


class RunCheckpoints:
  """Checkpoints of one fine-tuning run in <workdir>/checkpoints; a context manager.

  Inside `with`, SIGTERM and Ctrl-C are noticed (runtime/stop_signals.py): the
  next `save` writes a checkpoint, waits for it, and returns True so that the
  loop stops; leaving the `with` after Ctrl-C raises errors.Interrupted.
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    c = config.checkpoint
    self._checkpointer = checkpointing.Checkpointer(
        os.path.join(workdir, CHECKPOINTS_DIR), c.every_steps, c.keep, c.keep_every,
        c.asynchronous)
    self._allow_changes = c.allow_config_change
    self._metadata = {"config": json.loads(config.to_json_best_effort()),
                      "versions": {"electra_jax": electra_jax.__version__,
                                   "jax": jax.__version__}}
    self._stop_signal = stop_signals.StopSignals()
    self._stopped_at = None

  def __enter__(self) -> "RunCheckpoints":
    self._stop_signal.__enter__()
    return self

  def __exit__(self, exc_type, *exc_info) -> None:
    self._stop_signal.__exit__(exc_type, *exc_info)
    self._checkpointer.close()  # waits for the last save
    if exc_type is None and self._stopped_at is not None:
      self._stop_signal.stop(self._stopped_at)

  def restore(self, abstract_state: TrainState) -> tuple[TrainState, dict] | None:
    directory = self._checkpointer.directory
    restored = self._checkpointer.restore_latest(
        abstract_state, check=lambda step, saved: checkpointing.check_compatible(
            saved, self._metadata, fixed=_FIXED_FIELDS, free=_FREE_FIELDS,
            allow_changes=self._allow_changes, allow_hint=_ALLOW_HINT,
            source=f"the checkpoint of step {step} in {directory}"))
    if restored is None:
      return None
    logging.info("Continuing from the checkpoint of step %d in %s", restored.step, directory)
    return restored.state, restored.loader_state

  def save(self, state: TrainState, progress: dict) -> bool:
    step = progress["step"]
    stopping = self._stop_signal.reached(step)
    evaluated = bool(progress["history"]) and progress["history"][-1]["step"] == step
    if stopping or evaluated or self._checkpointer.should_save(step):
      self._checkpointer.save(step, state, progress, self._metadata)
    if stopping:
      self._checkpointer.wait()
      self._stopped_at = step
    return stopping
