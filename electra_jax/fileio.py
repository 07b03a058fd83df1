"""Writing files so that a crash or a full disk never leaves a half-written one."""

import os
import tempfile

from electra_jax.errors import UserError


def atomic_write(path: str, data: bytes | str) -> None:
  """Replaces `path` with `data` in one step: readers see the old file or the new one."""
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data.encode("utf-8") if isinstance(data, str) else data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def prepare_workdir(workdir: str) -> str:
  """Creates the workdir and proves it writable before any work is done."""
  workdir = os.path.abspath(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write-test-{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise UserError(f"cannot write to workdir {workdir}: {e.strerror}; "
                    "choose another --workdir") from None
  return workdir
