"""Writing files and directories so that a crash or a full disk never leaves a half-written one."""

import contextlib
import os
import shutil
import tempfile
import uuid
from typing import Iterator

from electra_jax.errors import UserError

# The process's umask, read once: temporary files are created private (0600), and
# a finished file gets the permissions that `open` would have given it.
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str, data: bytes | str) -> None:
  """Replaces `path` with `data` in one step: readers see the old file or the new one."""
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data.encode("utf-8") if isinstance(data, str) else data)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_UMASK)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


@contextlib.contextmanager
def staged_directory(path: str) -> Iterator[str]:
  """A new directory that appears at `path` complete, or not at all.

  The block writes into a hidden sibling, which takes the place of `path`
  (absent or empty) when the block succeeds and is deleted when it fails, so
  an interrupted export never leaves a half-written model behind.
  """
  path = os.path.abspath(path)
  if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
    raise UserError(f"{path} already exists and is not empty; choose a new directory, or empty "
                    "it first")
  staging = os.path.join(os.path.dirname(path),
                         f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.partial")
  try:
    os.makedirs(staging)
    yield staging
    os.replace(staging, path)
  except OSError as error:
    shutil.rmtree(staging, ignore_errors=True)
    raise UserError(f"cannot write {path}: {error.strerror or error}") from None
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
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
