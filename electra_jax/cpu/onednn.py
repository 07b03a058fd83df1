"""oneDNN's matmuls for XLA on x86 CPUs, on by default in the command-line tools' CPU runs.

jaxlib's CPU backend ships oneDNN but leaves it off (`--xla_cpu_use_onednn`);
on x86 its matmuls ran our step's products faster (docs/cpu_performance.md).
XLA reads XLA_FLAGS when it first starts a backend, so the tools add the flag
to the environment before any computation (process.py). A user's own
XLA_FLAGS naming the flag (either value) is kept as it is.
"""

import os
import platform
from typing import Mapping

FLAG = "--xla_cpu_use_onednn"


def runs_on_x86() -> bool:
  """Whether this machine's CPU is x86-64, the one the flag is turned on for."""
  return platform.machine().lower() in ("x86_64", "amd64")


def xla_flags_with_onednn(environ: Mapping[str, str]) -> str | None:
  """XLA_FLAGS with oneDNN on; None where the user chose already or the CPU is not x86."""
  flags = environ.get("XLA_FLAGS", "")
  if FLAG in flags or not runs_on_x86():
    return None
  return " ".join(filter(None, [flags, f"{FLAG}=true"]))


def use_onednn() -> None:
  """Turns oneDNN's matmuls on for this process (and the processes it starts)."""
  flags = xla_flags_with_onednn(os.environ)
  if flags is not None:
    os.environ["XLA_FLAGS"] = flags
