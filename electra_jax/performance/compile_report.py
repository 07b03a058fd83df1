"""A config's train and eval steps compiled for a TPU slice from any host, and what they cost.

`compile_for_topology` compiles both steps with `train_step.compile_training`
and `compile_eval_step`, the functions a run compiles them with for its own
devices, on a mesh of the slice's compile-only devices (tpu.py), and reports
per chip: memory against the chip's HBM, XLA's FLOPs and bytes accessed beside
the model FLOPs, the roofline bound on the step's time and the MFU it allows,
and the collectives in the compiled program. A step that needs more HBM than
the chip has is refused by XLA's TPU compiler itself; the report then gives
the compiler's figures. `largest_batch_per_chip` finds the largest batch that
still fits by compiling more batch sizes.
"""

import copy
import dataclasses
import math
import re
import time
from typing import Any

import jax
import ml_collections

from electra_jax.performance import flops, program_cost, reference_model, tpu
from electra_jax.pretraining import train_step as train_step_lib
from electra_jax.runtime import sharding


# XLA's TPU compiler refusing a program that needs more HBM than the chip has.
_OUT_OF_MEMORY = re.compile(r"RESOURCE_EXHAUSTED: Ran out of memory.*?required for ([\w ]+?) "
                            r"\(([\d.]+)G\) exceeds available HBM \(([\d.]+)G\)", re.DOTALL)


@dataclasses.dataclass(frozen=True)
class CompiledStep:
  """What one compiled step costs a chip; `memory` None where XLA refused it (`refusal`)."""

  compile_seconds: float
  memory: program_cost.Memory | None
  flops: float = math.nan  # XLA's count, per chip
  bytes_accessed: float = math.nan  # XLA's count, per chip
  collectives: dict[str, program_cost.Collective] = dataclasses.field(default_factory=dict)
  refusal: str = ""  # what the compiler said the step needs, where it would not fit
  needed_bytes: float = math.nan  # the compiler's figure, where it refused

  @property
  def collective_bytes(self) -> int:
    return sum(c.bytes for c in self.collectives.values())

  @property
  def total_bytes(self) -> float:
    """Memory per chip: the compiled step's total, or what the compiler said it needs."""
    return self.memory.total if self.memory else self.needed_bytes


@dataclasses.dataclass(frozen=True)
class Report:
  """A config's steps on a TPU slice."""

  topology: tpu.Topology
  num_slices: int
  mesh: dict[str, int]
  batch_size: int
  length: int
  dtype: str
  model_flops: float  # per step, all chips (flops.step_flops)
  train: CompiledStep
  eval: CompiledStep
  state_bytes: float  # per chip: parameters, optimizer moments, step and key in their shards
  reference: bool = False  # reference_model.py's model, not ours

  @property
  def num_chips(self) -> int:
    return self.topology.num_chips * self.num_slices

  @property
  def batch_per_chip(self) -> float:
    """Sequences per batch slice of the mesh (data x fsdp): per chip without tensor parallelism."""
    return self.batch_size / (self.mesh["data"] * self.mesh["fsdp"])

  @property
  def fits(self) -> bool:
    hbm = self.topology.chip.hbm_bytes
    return all(step.memory is not None and step.memory.total <= hbm
               for step in (self.train, self.eval))

  @property
  def estimated_largest_batch(self) -> int | None:
    """The largest batch per chip by the train step's own figures, compiling nothing more.

    The temporaries (activations, mostly) grow with the batch and the rest
    does not: the HBM left after the rest, over the temporaries per sequence.
    Where the compiler refused the step, its figure for the temporaries, and the
    state for the rest. `largest_batch_per_chip` checks by compiling.
    """
    t = self.train
    temporaries = t.memory.temporaries if t.memory else t.needed_bytes
    fixed = t.memory.total - t.memory.temporaries if t.memory else self.state_bytes
    per_sequence = temporaries / self.batch_per_chip
    if not per_sequence > 0:
      return None
    return max(0, int((self.topology.chip.hbm_bytes - fixed) / per_sequence))

  @property
  def roofline_seconds(self) -> float:
    """A lower bound on the train step's time: XLA's FLOPs or bytes at the chip's peak rate."""
    chip = self.topology.chip
    return program_cost.roofline_seconds(self.train.flops, self.train.bytes_accessed,
                                         chip.peak_bf16_flops, chip.hbm_bytes_per_s)

  @property
  def mfu_bound(self) -> float:
    """The highest MFU the roofline bound allows (model FLOPs per chip over peak x bound)."""
    per_chip = self.model_flops / self.num_chips
    return per_chip / (self.topology.chip.peak_bf16_flops * self.roofline_seconds)


def topology_mesh(config: ml_collections.ConfigDict, topology: tpu.Topology,
                  num_slices: int = 1) -> jax.sharding.Mesh:
  """The config's mesh over the slice's compile-only devices."""
  return sharding.create_mesh(config.mesh, tpu.topology_devices(topology, num_slices))


def _step_cost(compiled: jax.stages.Compiled, seconds: float) -> CompiledStep:
  step_flops, step_bytes = program_cost.flops_and_bytes(compiled)
  return CompiledStep(compile_seconds=seconds, memory=program_cost.memory(compiled),
                      flops=step_flops, bytes_accessed=step_bytes,
                      collectives=program_cost.collectives(compiled.as_text()))


def _refused(error: jax.errors.JaxRuntimeError, seconds: float) -> CompiledStep | None:
  """The step XLA refused for lack of HBM, from its message; None for any other error."""
  match = _OUT_OF_MEMORY.search(str(error))
  if not match:
    return None
  what, needed, available = match.groups()
  return CompiledStep(compile_seconds=seconds, memory=None,
                      refusal=f"XLA's compiler: {what} need {needed} GiB, {available} GiB of "
                              "HBM available",
                      needed_bytes=float(needed) * 2**30)


def compile_train_step(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                       reference: bool = False) -> tuple[CompiledStep, Any]:
  """The train step's cost on `mesh`, and the state's abstract parameters (for the eval step).

  `reference`: the minimal Flax model (reference_model.py) in place of ours.
  """
  model = reference_model.build(config) if reference else None
  start = time.perf_counter()
  try:
    training = train_step_lib.compile_training(config, mesh, model)
  except jax.errors.JaxRuntimeError as error:
    refused = _refused(error, time.perf_counter() - start)
    if refused is None:
      raise
    return refused, None
  return (_step_cost(training.train_step, training.compile_seconds),
          training.abstract_state.params)


def compile_for_topology(config: ml_collections.ConfigDict, topology: tpu.Topology,
                         num_slices: int = 1, reference: bool = False) -> Report:
  """Compiles the config's train and eval steps for `num_slices` slices of `topology`.

  `reference`: the minimal Flax model (reference_model.py) in place of ours.
  """
  mesh = topology_mesh(config, topology, num_slices)
  sharding.batch_sharding(mesh, config.train.batch_size, config.train.grad_accum_steps)
  train, abstract_params = compile_train_step(config, mesh, reference)
  if train.memory is None:
    evaluation = CompiledStep(0.0, None, refusal="not compiled, since the train step does not fit")
  else:
    start = time.perf_counter()
    try:
      eval_step = train_step_lib.compile_eval_step(
          config, mesh, abstract_params, reference_model.build(config) if reference else None)
      evaluation = _step_cost(eval_step, time.perf_counter() - start)
    except jax.errors.JaxRuntimeError as error:
      evaluation = _refused(error, time.perf_counter() - start)
      if evaluation is None:
        raise
  state = train_step_lib.abstract_train_state(config, mesh)[0]
  state_bytes = sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
                    for x in jax.tree.leaves(state))
  return Report(topology=topology, num_slices=num_slices, mesh=dict(mesh.shape),
                batch_size=config.train.batch_size, length=config.data.max_seq_length,
                dtype=config.model.dtype, model_flops=flops.step_flops(config)["total"],
                train=train, eval=evaluation, state_bytes=state_bytes, reference=reference)


@dataclasses.dataclass(frozen=True)
class BatchSearch:
  """The largest batch per chip that fits, as far as the compiles went: exact where
  `too_large` is `fits` + 1."""

  fits: int | None  # the largest batch per chip compiled and found to fit
  too_large: int | None  # the smallest compiled and found too large
  compiles: int

  def describe(self) -> str:
    if self.fits is None:
      return f"none fits ({self.compiles} more compiles)"
    if self.too_large == self.fits + 1:
      return f"{self.fits} sequences per chip ({self.compiles} more compiles)"
    bound = f", {self.too_large} do not" if self.too_large else ""
    return f"at least {self.fits} sequences per chip{bound} ({self.compiles} more compiles)"


def largest_batch_per_chip(config: ml_collections.ConfigDict, report: Report,
                           max_compiles: int = 8) -> BatchSearch:
  """The largest batch per batch slice (data x fsdp) whose train step fits the chip.

  Memory grows about linearly with the batch, so once two sizes fit, the
  guess is where the line through the largest two (at least a tenth apart)
  reaches the HBM, aiming 2% lower after each such guess that did not fit, and
  growing 4x at most; after such a guess fits, the next size up is tried.
  Before two sizes fit, the size doubles, or halves the interval up to the
  smallest refused one where that is less; where nothing fits yet, the refused
  size is scaled down by what the compiler said it needs. Every size is
  compiled; after `max_compiles` the search stops with the sizes it has.
  """
  mesh = topology_mesh(config, report.topology, report.num_slices)
  slices = report.mesh["data"] * report.mesh["fsdp"] * config.train.grad_accum_steps
  hbm = report.topology.chip.hbm_bytes
  fitting, too_large = {}, {}  # batch per chip -> memory per chip (refused: the compiler's)

  def record(per_chip: int, step: CompiledStep) -> None:
    if step.memory is not None and step.memory.total <= hbm:
      fitting[per_chip] = step.memory.total
    else:
      too_large[per_chip] = step.total_bytes

  record(int(report.batch_per_chip), report.train)
  compiles, aim, estimate = 0, hbm, None  # estimate: the last guess, where the line made it
  while True:
    low, high = max(fitting, default=0), min(too_large, default=None)
    if (high is not None and high - low == 1) or compiles == max_compiles:
      return BatchSearch(low or None, high, compiles)
    if estimate is not None and estimate in fitting:  # is the next size too large?
      guess, estimate, aim = low + 1, None, hbm
    else:
      if estimate is not None:  # it did not fit: memory grows faster than the line; aim lower
        aim -= 0.02 * hbm
      guess = estimate = _line_guess(fitting, aim)
      if guess is None and not fitting and not math.isnan(too_large[high]):
        # Nothing fits yet: scale the batch down by what the compiler said it needs,
        # at least halving it.
        guess = int(high * min(hbm / too_large[high], 0.5))
      elif guess is None:  # double, or halve the interval where that is less
        guess = min(2 * low or high // 2, (low + high) // 2 if high is not None else 2 * low)
      elif low and guess > 4 * low:
        # Small batches pad their arrays to the chip's tiles, so a line through
        # them is too flat to reach far: grow 4x at most, not an estimate yet.
        guess, estimate = 4 * low, None
    guess = max(guess, low + 1)
    if high is not None:
      guess = min(guess, high - 1)
    estimate = estimate and guess
    shaped = copy.deepcopy(config)
    shaped.train.batch_size = guess * slices
    record(guess, compile_train_step(shaped, mesh, report.reference)[0])
    compiles += 1


def _line_guess(fitting: dict[int, float], hbm: float) -> int | None:
  """Where the line through the largest fitting size and one at least a tenth below it
  (the next largest such; else the smallest) reaches `hbm`. None without two sizes.

  Memory is affine in the batch only roughly (tiling pads small arrays), so
  two sizes close together give a poor slope.
  """
  if len(fitting) < 2:
    return None
  b1 = max(fitting)
  below = [b for b in fitting if b <= 0.9 * b1] or [min(fitting)]
  b0 = max(below)
  if b0 == b1:
    return None
  slope = (fitting[b1] - fitting[b0]) / (b1 - b0)
  return int(b1 + (hbm - fitting[b1]) / slope) if slope > 0 else None


def _step_json(step: CompiledStep) -> dict[str, Any]:
  memory = step.memory and dict(dataclasses.asdict(step.memory), total=step.memory.total)
  finite = lambda x: None if math.isnan(x) else x
  return dict(compile_seconds=step.compile_seconds, memory=memory, refusal=step.refusal or None,
              needed_bytes=finite(step.needed_bytes), flops=finite(step.flops),
              bytes_accessed=finite(step.bytes_accessed),
              collectives={kind: dataclasses.asdict(c) for kind, c in step.collectives.items()},
              collective_bytes=step.collective_bytes)


def to_json(report: Report) -> dict[str, Any]:
  chip = report.topology.chip
  return dict(
      topology=report.topology.name, accelerator_type=report.topology.accelerator_type,
      num_slices=report.num_slices, chips=report.num_chips, device_kind=chip.device_kind,
      chip=dict(hbm_bytes=chip.hbm_bytes, peak_bf16_flops=chip.peak_bf16_flops,
                hbm_bytes_per_s=chip.hbm_bytes_per_s),
      model="reference" if report.reference else "electra_jax",
      mesh=report.mesh, batch_size=report.batch_size, length=report.length, dtype=report.dtype,
      batch_per_chip=report.batch_per_chip, state_bytes_per_chip=report.state_bytes,
      estimated_largest_batch_per_chip=report.estimated_largest_batch,
      model_flops=report.model_flops,
      model_flops_per_chip=report.model_flops / report.num_chips,
      train=_step_json(report.train), eval=_step_json(report.eval),
      roofline_seconds=report.roofline_seconds if report.train.memory else None,
      mfu_bound=report.mfu_bound if report.train.memory else None, fits=report.fits)


def describe(report: Report, largest_batch: BatchSearch | None = None) -> list[str]:
  """The report as lines for people: a table, then the verdict.

  `largest_batch`: `largest_batch_per_chip`'s answer, where it was asked.
  """
  chip, gib = report.topology.chip, 2.0**30
  mesh = " x ".join(f"{axis} {size}" for axis, size in report.mesh.items())
  rows = [
      ("slice", f"{report.topology.name} ({report.topology.accelerator_type})"
                + (f" x {report.num_slices} slices" if report.num_slices > 1 else "")
                + f": {report.num_chips} chips of {chip.device_kind}, "
                  f"{chip.hbm_bytes / gib:.0f} GiB HBM, {chip.peak_bf16_flops / 1e12:.0f} "
                  f"TFLOP/s bf16, {chip.hbm_bytes_per_s / 1e9:,.0f} GB/s each"),
      ("mesh", f"{mesh}; batch {report.batch_size} x {report.length} "
               f"({report.batch_per_chip:g} sequences per chip), {report.dtype}"
               + (", the minimal Flax reference model" if report.reference else "")),
  ]
  for name, step in (("train step", report.train), ("eval step", report.eval)):
    m = step.memory
    rows.append((f"{name} memory", f"does not fit: {step.refusal}" if m is None else (
        f"{m.total / gib:.2f} GiB per chip of {chip.hbm_bytes / gib:.0f} GiB = arguments "
        f"{m.arguments / gib:.2f} + temporaries {m.temporaries / gib:.2f} + outputs not "
        f"written in place {(m.outputs - m.aliased) / gib:.2f} + code "
        f"{m.generated_code / gib:.2f} GiB")))
  t = report.train
  if t.memory is not None:
    compute_s, memory_s = t.flops / chip.peak_bf16_flops, t.bytes_accessed / chip.hbm_bytes_per_s
    rows += [
        ("train FLOPs", f"{t.flops:.3g} per chip (XLA), "
                        f"{report.model_flops / report.num_chips:.3g} model FLOPs per chip "
                        "(electra_jax.performance.flops)"),
        ("train bytes", f"{t.bytes_accessed / 1e9:.3g} GB accessed per chip (XLA)"),
        ("roofline bound", f"at least {report.roofline_seconds:.3g} s per step (compute "
                           f"{compute_s:.3g} s, HBM traffic {memory_s:.3g} s): MFU at most "
                           f"{100 * report.mfu_bound:.1f}% (a bound, not a measurement)"),
        ("collectives", "; ".join(f"{kind} x{c.count} {c.bytes / 1e6:,.1f} MB"
                                  for kind, c in t.collectives.items()) or "none"),
    ]
  rows.append(("compile time", f"train {t.compile_seconds:.1f} s, "
                               f"eval {report.eval.compile_seconds:.1f} s"))
  if report.estimated_largest_batch is not None:
    rows.append(("largest batch", f"about {report.estimated_largest_batch} sequences per chip "
                                   "(estimated from the temporaries per sequence)"))
  if largest_batch is not None:
    rows.append(("largest batch", f"compiled: {largest_batch.describe()}"))
  width = max(len(label) for label, _ in rows)
  lines = [f"{label:<{width}} | {value}" for label, value in rows]
  used = max(step.total_bytes for step in (t, report.eval) if not math.isnan(step.total_bytes))
  lines.append(("fits" if report.fits else "does not fit") +
               f": {used / gib:.2f} GiB of {chip.hbm_bytes / gib:.0f} GiB per chip")
  return lines
