"""Files: written so that a crash or a full disk never leaves a half-written one, on local
paths or URLs (gs://, s3://) alike.

A path that names a scheme goes through fsspec, the layer etils.epath (and so
Orbax) uses for gs:// and s3:// without TensorFlow; a URL needs that scheme's
driver (gcsfs, s3fs), named when missing. Object stores replace an object in
one step, which is what `atomic_write` needs; they cannot append, so logs that
grow (metric_writer.py) are written whole. Exports and prepared data are local.
"""

import contextlib
import functools
import glob
import io
import os
import shutil
import tempfile
import uuid
from typing import Any, BinaryIO, Callable, Iterator, TextIO

from electra_jax.errors import DataError, UserError

# The process's umask, read once: temporary files are created private (0600), and
# a finished file gets the permissions that `open` would have given it.
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str, data: bytes | str) -> None:
  """Replaces `path` with `data` in one step: readers see the old file or the new one."""
  data = data.encode("utf-8") if isinstance(data, str) else data
  if is_url(path):
    fs, inner = _filesystem(path)
    fs.pipe_file(inner, data)
    return
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
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
  workdir = absolute(workdir)
  probe = os.path.join(workdir, f".write-test-{os.getpid()}")
  try:
    make_dirs(workdir)
    atomic_write(probe, "ok")
    remove(probe)
  except OSError as e:  # a URL's drivers raise OSError's kinds too (PermissionError, ...)
    raise UserError(f"cannot write to workdir {workdir}: {e.strerror or e}; "
                    "choose another --workdir") from None
  return workdir


def absolute(path: str) -> str:
  """A local path made absolute; a URL as it is."""
  return path if is_url(path) else os.path.abspath(path)


def make_dirs(path: str) -> None:
  """`path` and its parents, where missing (object stores have no directories to make)."""
  _ask(path, functools.partial(os.makedirs, exist_ok=True), "makedirs", exist_ok=True)


def remove(path: str) -> None:
  _ask(path, os.remove, "rm_file")


def remove_tree(path: str) -> None:
  _ask(path, shutil.rmtree, "rm", recursive=True)


def move(source: str, destination: str) -> None:
  """Renames `source` (a file or a directory) to `destination` on the same file system."""
  if not is_url(source):
    os.replace(source, destination)
    return
  fs, inner = _filesystem(source)
  fs.mv(inner, _filesystem(destination)[1], recursive=True)


# ---------------------------------------------------------------------------
# Local paths and URLs (gs://, s3://, ...) alike, through fsspec
# ---------------------------------------------------------------------------


def is_url(path: str) -> bool:
  """Whether `path` names a file system by its scheme (gs://, s3://, memory://, ...)."""
  return "://" in path


def _filesystem(path: str):
  """fsspec's file system for `path` and the path within it; a missing driver is named."""
  import fsspec  # pylint: disable=import-outside-toplevel  # only data that is not local needs it
  try:
    return fsspec.core.url_to_fs(path)
  except (ImportError, ValueError) as error:
    scheme = path.split("://", 1)[0]
    driver = {"gs": "gcsfs", "gcs": "gcsfs", "s3": "s3fs", "az": "adlfs", "abfs": "adlfs"}.get(
        scheme, f"fsspec's driver for {scheme}://")
    raise DataError(f"cannot use {path}: {error}; {scheme}:// paths need {driver} "
                    f"(pip install {driver})") from None


def open_binary(path: str) -> BinaryIO:
  """`path` opened for reading bytes, with `peek`, whether local or a URL."""
  if not is_url(path):
    return open(path, "rb")
  fs, inner = _filesystem(path)
  file = fs.open(inner, "rb")
  return file if hasattr(file, "peek") else io.BufferedReader(file)


def open_text(path: str) -> TextIO:
  """`path` opened for reading UTF-8 text (a byte-order mark dropped), newlines as they are."""
  return io.TextIOWrapper(open_binary(path), encoding="utf-8-sig", newline="")


def _ask(path: str, local: Callable[[str], Any], method: str, **kwargs: Any) -> Any:
  """`local(path)` for a local path, else the URL's file system's `method` on it."""
  if not is_url(path):
    return local(path)
  fs, inner = _filesystem(path)
  return getattr(fs, method)(inner, **kwargs)


def exists(path: str) -> bool:
  return _ask(path, os.path.exists, "exists")


def is_file(path: str) -> bool:
  return _ask(path, os.path.isfile, "isfile")


def is_dir(path: str) -> bool:
  return _ask(path, os.path.isdir, "isdir")


def size(path: str) -> int:
  return _ask(path, os.path.getsize, "size")


def glob_files(pattern: str) -> list[str]:
  """The files (not directories) that `pattern` matches, sorted; `**` spans directories."""
  if not is_url(pattern):
    return sorted(p for p in glob.glob(os.path.expanduser(pattern), recursive=True)
                  if not os.path.isdir(p))
  fs, inner = _filesystem(pattern)
  scheme = pattern.split("://", 1)[0]
  return sorted(f"{scheme}://{p.lstrip('/')}" for p in fs.glob(inner) if fs.isfile(p))
