"""Where a compiled step spends its time: the kernel's share, and a JAX profiler trace.

`timed_steps` times steps and the CPU time the process spends in the kernel
during each. `trace_steps` records a few steps with `jax.profiler` (open the directory in
TensorBoard's profile plugin or the .json.gz in ui.perfetto.dev) and sums the
time of each XLA operation over them; `summarize` names each operation by the
model code it came from (the HLO's op_name metadata, layer numbers folded) and
tells matmuls from the rest.
"""

import collections
import glob
import gzip
import json
import os
import re
import resource
from typing import Callable

import jax

_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = .*$", re.MULTILINE)
_COMPUTATION = re.compile(r"^%?([\w.\-]+) [^\n]*\{\n(.*?)\n\}", re.MULTILINE | re.DOTALL)


def timed_steps(step: Callable[[], float], count: int) -> tuple[list[float], list[float]]:
  """`count` steps: each one's seconds, and the CPU seconds this process spent in the kernel.

  On a CPU, kernel time is mostly page faults on the memory that XLA allocates
  afresh for each step. It is small on most hosts, but a VM that hands freed
  memory back to its host (free page reporting) can make it as long as the
  step's own work (docs/performance.md); this is how a reader of the table
  tells the two apart.
  """
  seconds, kernel_seconds = [], []
  for _ in range(count):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    seconds.append(step())
    kernel_seconds.append(resource.getrusage(resource.RUSAGE_SELF).ru_stime - before)
  return seconds, kernel_seconds


def trace_steps(step: Callable[[], object], steps: int, directory: str) -> dict[str, float]:
  """Runs `step` `steps` times under the profiler; seconds per step of each XLA operation."""
  with jax.profiler.trace(directory, create_perfetto_trace=True):
    for _ in range(steps):
      step()
  newest = max(glob.glob(os.path.join(directory, "**", "*.trace.json.gz"), recursive=True),
               key=os.path.getmtime)
  with gzip.open(newest, "rt", encoding="utf-8") as f:
    events = json.load(f)
  events = events["traceEvents"] if isinstance(events, dict) else events
  seconds = collections.Counter()
  for event in events:
    if event.get("ph") == "X":
      seconds[event["name"]] += event["dur"] * 1e-6 / steps
  return dict(seconds)


def summarize(op_seconds: dict[str, float], hlo_text: str) -> list[tuple[str, bool, float]]:
  """(model code, is a matmul, seconds per step) for each group of operations, largest first.

  Only the operations of `hlo_text` (the compiled step's `as_text()`) count:
  runtime bookkeeping in the trace is left out.
  """
  bodies = dict(_COMPUTATION.findall(hlo_text))
  unseen, groups = dict(op_seconds), collections.Counter()
  for line in _INSTRUCTION.finditer(hlo_text):
    name = line.group(1)
    if name not in unseen:
      continue
    called = re.search(r"calls=%([\w.\-]+)", line.group(0))
    body = bodies.get(called.group(1), "") if called else ""
    is_matmul = " dot(" in line.group(0) or " dot(" in body or " convolution(" in body
    source = re.search(r'op_name="([^"]*)"', line.group(0))
    source = re.sub(r"layer_\d+", "layer_N", source.group(1) if source else "(no source)")
    source = re.sub(r"^jit\([^)]*\)/", "", source)
    groups[(source, is_matmul)] += unseen.pop(name)  # each operation counted once
  return [(source, is_matmul, seconds) for (source, is_matmul), seconds in groups.most_common()]
