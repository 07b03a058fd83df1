"""Transparent huge pages for the large host buffers of every CPU step.

XLA's CPU runtime allocates a step's intermediate buffers with malloc, and
glibc serves an allocation that large with a fresh mmap that goes back to the
kernel when the step ends: every step then faults its working set in 4 KiB at
a time. glibc 2.35 and later can advise huge pages for those mappings (the
`glibc.malloc.hugetlb=1` tunable), 512x fewer faults (docs/cpu_performance.md).
Tunables are read only when a process starts, so a command-line tool running
on the CPU restarts itself once with it set (process.py). Setting
GLIBC_TUNABLES yourself with any `glibc.malloc.hugetlb` value (0 turns it off)
leaves the choice to you.
"""

import os
import platform
import sys
from typing import Mapping

TUNABLE = "glibc.malloc.hugetlb"
_THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def _glibc_has_tunable() -> bool:
  libc, version = platform.libc_ver()
  if libc != "glibc":
    return False
  try:
    return tuple(int(part) for part in version.split(".")[:2]) >= (2, 35)
  except ValueError:
    return False


def _kernel_allows_huge_pages() -> bool:
  """False where transparent huge pages are off ("[never]") or unknown."""
  try:
    with open(_THP_SETTING) as setting:
      return "[never]" not in setting.read()
  except OSError:
    return False


def _tunable_value(environ: Mapping[str, str]) -> str | None:
  """The value GLIBC_TUNABLES gives the huge-page tunable; None where it names none."""
  for entry in environ.get("GLIBC_TUNABLES", "").split(":"):
    name, _, value = entry.partition("=")
    if name == TUNABLE:
      return value
  return None


def environment_with_huge_pages(environ: Mapping[str, str]) -> dict[str, str] | None:
  """`environ` with the tunable added, or None where it is set already or would do nothing."""
  if (_tunable_value(environ) is not None or sys.platform != "linux"
      or not _glibc_has_tunable() or not _kernel_allows_huge_pages()):
    return None
  tunables = environ.get("GLIBC_TUNABLES", "")
  return {**environ, "GLIBC_TUNABLES": ":".join(filter(None, [tunables, f"{TUNABLE}=1"]))}


def enabled() -> bool:
  """Whether this process started with glibc using huge pages for large allocations.

  1 advises transparent huge pages; 2 (glibc's other setting) uses hugetlbfs.
  """
  return _tunable_value(os.environ) not in (None, "0")


def restart_with_huge_pages() -> None:
  """Replaces this process by the same command with huge pages on, where that helps.

  Only an electra_jax module run as the program (`python -m electra_jax.<verb>`)
  restarts, so a script that merely imports ours never runs twice.
  """
  main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
  if main_spec is None or not main_spec.name.startswith("electra_jax."):
    return
  environ = environment_with_huge_pages(os.environ)
  if environ is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environ)
