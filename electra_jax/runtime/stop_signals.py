"""Stopping a training run cleanly on SIGTERM or Ctrl-C: save at the next step, then exit.

SIGTERM is what TPU VMs, SLURM and Kubernetes send before they stop a job;
Ctrl-C (SIGINT) is a person at the terminal. Either way the run should keep
what it has trained: the loop asks `reached(step)` after every step, and once
it is True saves a checkpoint and stops. A second Ctrl-C does not wait for
that save: it exits at once (code 130), leaving the newest complete checkpoint
as it was (a save cut short is never taken for one, runtime/checkpointing.py).

On one process a signal handler notes the request. On several, JAX's
preemption service (which listens for SIGTERM from `jax.distributed.initialize`
on) picks one step at which all processes stop together, so `reached` must be
asked at every step by every process; Ctrl-C there keeps Python's default.
"""

import os
import signal
import sys
import threading

import jax
from absl import logging
from jax.experimental import multihost_utils

from electra_jax.errors import Interrupted

CTRL_C = "Ctrl-C"
SIGTERM = "SIGTERM"


class StopSignals:
  """A context manager around a training loop that notices SIGTERM and Ctrl-C."""

  def __init__(self):
    self.received: str | None = None  # CTRL_C or SIGTERM, once one came
    self._previous = {}

  def __enter__(self) -> "StopSignals":
    # Python takes signals in the main thread only; elsewhere they keep their defaults.
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, self._note_sigterm),
                        signal.SIGINT: signal.signal(signal.SIGINT, self._note_ctrl_c)}
    return self

  def __exit__(self, *exc_info) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}

  def _note_sigterm(self, signum, frame) -> None:
    del signum, frame
    self.received = self.received or SIGTERM

  def _note_ctrl_c(self, signum, frame) -> None:
    del signum, frame
    if self.received == CTRL_C:
      sys.stderr.write("Stopped at once on the second Ctrl-C: the newest complete checkpoint is "
                       "where the same command continues\n")
      sys.stderr.flush()
      os._exit(Interrupted.exit_code)  # pylint: disable=protected-access  # no waiting on threads
    self.received = CTRL_C
    sys.stderr.write("Ctrl-C: saving a checkpoint after this step, then stopping (Ctrl-C again "
                     "stops at once, without it)\n")
    sys.stderr.flush()

  def reached(self, step: int) -> bool:
    """True once the run should save at this step and stop (ask at every step)."""
    if jax.process_count() == 1:
      return self.received is not None
    try:
      if multihost_utils.reached_preemption_sync_point(step):
        self.received = SIGTERM
        return True
    except RuntimeError:  # the preemption service is off (jax_enable_preemption_service)
      pass
    return False

  def stop(self, step: int) -> None:
    """Says that the run stopped at `step` with a checkpoint; after Ctrl-C raises Interrupted,
    so that the CLI exits with 130 (a SIGTERM stop is a normal end: exit 0)."""
    message = (f"Stopped at step {step} on {self.received}, with a checkpoint: run the same "
               "command again to continue")
    if self.received == CTRL_C:
      raise Interrupted(message)
    logging.warning(message)
