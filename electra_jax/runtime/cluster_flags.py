"""The flags that lay out a run's processes and devices, shared by the tools that compute.

`python -m electra_jax.train` and `python -m electra_jax.finetune` take all four;
`python -m electra_jax.benchmark` takes `--cpu_devices`. Defined once here,
each tool adopts them into its `--help`.
"""

import jax
from absl import flags, logging

from electra_jax.runtime import distributed

_COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None,
    "Multi-process runs where no cluster tells JAX its peers: host:port of process 0, "
    "the same on every process (or JAX_COORDINATOR_ADDRESS). Not needed on Cloud TPU VMs "
    "or under SLURM.")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Multi-process runs: how many processes (or JAX_NUM_PROCESSES).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None,
    "Multi-process runs: this process's index, 0 to num_processes - 1 (or JAX_PROCESS_ID). "
    "Process 0 writes the workdir and the logs.")
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", None,
    "Runs on CPU: split each process's CPU into this many JAX devices, which share the "
    "batch like GPUs would (data parallelism across the cores of one machine). XLA's CPU "
    "code leaves cores idle in some operations of a step (attention's batched products, "
    "reductions), which a device of its own per core fills; but each device's matmuls get "
    "fewer rows. On a 2-core host, 2 devices made ELECTRA-Small's step at 32 x 128 2-5% "
    "faster on average and Base's at 8 x 128 12% slower: time yours with "
    "python -m electra_jax.benchmark --cpu_devices=N. The batch size must divide among the "
    "devices. Default: JAX's (one device, or XLA_FLAGS' --xla_force_host_platform_device_count).",
    lower_bound=1)


def split_cpu() -> None:
  """Applies --cpu_devices. Must run before anything touches a device."""
  if _CPU_DEVICES.value is not None:
    jax.config.update("jax_num_cpu_devices", _CPU_DEVICES.value)


def join_processes() -> None:
  """Splits the CPU as --cpu_devices says, then joins the run the flags, the environment
  or the cluster describe (distributed.py). Process 0 reports for all: the others
  log warnings only."""
  split_cpu()
  distributed.initialize_distributed(_COORDINATOR_ADDRESS.value, _NUM_PROCESSES.value,
                                     _PROCESS_ID.value)
  if not distributed.is_primary():
    logging.set_verbosity(logging.WARNING)
