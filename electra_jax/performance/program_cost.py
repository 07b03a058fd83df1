"""What a compiled program costs each device: memory, FLOPs, bytes, collectives, a time bound.

All of it is XLA's own account of the program it compiled, for whatever
devices it compiled for (this host's, or a TPU topology's: tpu.py):
`memory_analysis()` for the memory a device holds at once, `cost_analysis()`
for the FLOPs and the bytes its operations read and write, and the optimized
HLO for the collectives between devices. From the FLOPs and bytes, a
roofline bound: no step can take less than the larger of its FLOPs over the
chip's peak and its bytes over the chip's memory bandwidth.
"""

import collections
import dataclasses
import re

import jax

# Collective operations of XLA's HLO; "-start"/"-done" pairs are their asynchronous form.
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute",
               "collective-broadcast", "ragged-all-to-all")
_COLLECTIVE = re.compile(
    r"^\s*(?:ROOT )?%[\w.\-]+ = (?P<result>.*?) (?P<kind>" + "|".join(COLLECTIVES) +
    r")(?P<phase>-start|-done)?\(", re.MULTILINE)
_ARRAY = re.compile(r"\b(pred|[sufc]\d+|bf16|f8\w*)\[([\d,]*)\]")
_BITS = re.compile(r"(\d+)")


@dataclasses.dataclass(frozen=True)
class Memory:
  """Bytes one device holds while the program runs (memory_analysis)."""

  arguments: int  # inputs: the state and the batch
  outputs: int
  aliased: int  # outputs written over donated inputs
  temporaries: int  # activations and other intermediates, at their peak
  generated_code: int

  @property
  def total(self) -> int:
    """Inputs, temporaries, outputs that have no donated input to go to, and code."""
    return (self.arguments + self.temporaries + self.outputs - self.aliased +
            self.generated_code)


@dataclasses.dataclass(frozen=True)
class Collective:
  """One kind of collective in a program: how many there are and the bytes they produce."""

  count: int
  bytes: int  # the collected arrays' sizes, summed over the operations


def memory(compiled: jax.stages.Compiled) -> Memory:
  analysis = compiled.memory_analysis()
  return Memory(arguments=analysis.argument_size_in_bytes,
                outputs=analysis.output_size_in_bytes, aliased=analysis.alias_size_in_bytes,
                temporaries=analysis.temp_size_in_bytes,
                generated_code=analysis.generated_code_size_in_bytes)


def flops_and_bytes(compiled: jax.stages.Compiled) -> tuple[float, float]:
  """XLA's FLOPs and bytes accessed per device for one run of the program.

  A loop's body (gradient accumulation's microbatches) is counted once.
  """
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # older jax: one per program
  return float(cost.get("flops", float("nan"))), float(cost.get("bytes accessed", float("nan")))


def array_bytes(hlo_type: str) -> int:
  """Bytes of the arrays in an HLO type: "f32[8,128]", or a tuple of them."""
  total = 0
  for dtype, dims in _ARRAY.findall(hlo_type):
    elements = 1
    for size in filter(None, dims.split(",")):
      elements *= int(size)
    bits = 8 if dtype == "pred" else int(_BITS.search(dtype)[1])
    total += elements * bits // 8
  return total


def collectives(hlo_text: str) -> dict[str, Collective]:
  """The collectives in an optimized HLO module (`compiled.as_text()`), by kind.

  An asynchronous pair counts once, with the bytes of its "-done" result (the
  "-start" result also holds the operands). An operation inside a loop counts
  once, whatever the loop's trip count.
  """
  counts, sizes = collections.Counter(), collections.Counter()
  for match in _COLLECTIVE.finditer(hlo_text):
    if match["phase"] == "-start":
      continue
    counts[match["kind"]] += 1
    sizes[match["kind"]] += array_bytes(match["result"])
  return {kind: Collective(counts[kind], sizes[kind]) for kind in COLLECTIVES if counts[kind]}


def roofline_seconds(flops: float, bytes_accessed: float, peak_flops_per_s: float,
                     bytes_per_s: float) -> float:
  """The least time one device can take: the larger of compute and memory traffic."""
  return max(flops / peak_flops_per_s, bytes_accessed / bytes_per_s)


def compiled_cost(compiled: jax.stages.Compiled, num_devices: int) -> dict[str, float]:
  """A compiled step's cost as the train loop logs it: FLOPs and bytes per device.

  `flops` counts the whole step over all devices (XLA reports the per-device
  program; replicated work is counted on every device). `peak_bytes` is what
  a device holds at once (`Memory.total`).
  """
  used = memory(compiled)
  flops_per_device, bytes_per_device = flops_and_bytes(compiled)
  return dict(flops=flops_per_device * num_devices, flops_per_device=flops_per_device,
              bytes_accessed_per_device=bytes_per_device, argument_bytes=used.arguments,
              output_bytes=used.outputs, alias_bytes=used.aliased, temp_bytes=used.temporaries,
              peak_bytes=used.total)


def device_memory_bytes() -> int | None:
  """Memory of one local device, where the platform says (GPU, TPU); None on CPU."""
  stats = jax.local_devices()[0].memory_stats() or {}
  return stats.get("bytes_limit")
