"""The processes of a run: joining them, and which one writes.

One process per host (or per task under SLURM) drives that host's devices;
all of them share one mesh (sharding.py). `initialize_distributed` joins them
before anything touches a device; process 0 writes the workdir and the logs,
and what it prepares the others read after it (`primary_first`).
"""

import os
from typing import Callable, TypeVar

import jax
from absl import logging
from jax.experimental import multihost_utils

from electra_jax.errors import UserError

T = TypeVar("T")


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """Joins the other processes of a multi-host run; on a single host, does nothing.

  Values given here or in JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
  JAX_PROCESS_ID come first; JAX detects the rest where the cluster tells it
  (Cloud TPU VMs, SLURM, Open MPI). With none given and no cluster found, this
  is one process. Must run before anything touches a device.
  """
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  num_processes = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
  process_id = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
  if (coordinator_address, num_processes, process_id) != (None, None, None):
    try:
      jax.distributed.initialize(coordinator_address, num_processes, process_id)
    except ValueError as e:
      raise UserError(f"cannot join a multi-process run: {e} Give --coordinator_address, "
                      "--num_processes and --process_id (or JAX_COORDINATOR_ADDRESS, "
                      "JAX_NUM_PROCESSES, JAX_PROCESS_ID), or run under a cluster that JAX "
                      "detects (Cloud TPU, SLURM, Open MPI)") from None
  elif int(os.environ.get("SLURM_NTASKS", "0")) == 1:
    # One SLURM task owns every local device; JAX's SLURM detection would give
    # it a single GPU (it assumes one task per GPU).
    return
  else:
    try:
      jax.distributed.initialize()
    except ValueError as e:  # no cluster environment found: one process, nothing to say
      logging.vlog(1, "Running as a single process: %s", e)
      return
  logging.info("Process %d of %d joined %s", jax.process_index(), jax.process_count(),
               coordinator_address or "the cluster")


def _env_int(name: str) -> int | None:
  value = os.environ.get(name)
  if value is None:
    return None
  try:
    return int(value)
  except ValueError:
    raise UserError(f"environment variable {name}={value!r} must be an integer") from None


def is_primary() -> bool:
  """True on the process that writes files and logs (process 0)."""
  return jax.process_index() == 0


def primary_first(fn: Callable[[], T], name: str) -> T:
  """Runs `fn` on process 0, then on the others: what process 0 writes, they then read.

  All processes must call this with the same `name`, which says what process 0
  prepares (it is a barrier).
  """
  if jax.process_count() == 1:
    return fn()
  result = fn() if is_primary() else None
  try:
    multihost_utils.sync_global_devices(name)
  except jax.errors.JaxRuntimeError as e:  # process 0 failed or is gone
    raise UserError(f"process 0 did not finish preparing the {name}; its log says why "
                    f"({str(e).splitlines()[0]})") from None
  return result if is_primary() else fn()
