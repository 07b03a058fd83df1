"""The flags that join a multi-process run, shared by the tools that train.

`python -m electra_jax.train` and `python -m electra_jax.finetune` take the
same three; defined once here, each tool adopts them into its `--help`.
"""

from absl import flags

from electra_jax import sharding

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


def join_processes() -> None:
  """Joins the run the flags, the environment or the cluster describe (sharding.py)."""
  sharding.initialize_distributed(_COORDINATOR_ADDRESS.value, _NUM_PROCESSES.value,
                                  _PROCESS_ID.value)
