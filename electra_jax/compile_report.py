"""A config's train and eval steps compiled for a TPU slice from any host, and what they cost.

`compile_for_topology` compiles both steps with `train_step.compile_training`
and `compile_eval_step`, the functions a run compiles them with for its own
devices, on a mesh of the slice's compile-only devices (tpu.py), and reports
per chip: memory against the chip's HBM, XLA's FLOPs and bytes accessed beside
the model FLOPs, the roofline bound on the step's time and the MFU it allows,
and the collectives in the compiled program. `largest_batch_per_chip` finds
the largest batch that still fits by compiling more batch sizes.
"""

import copy
import dataclasses
import time
from typing import Any

import jax
import ml_collections

from electra_jax import flops, program_cost, reference_model, sharding, tpu
from electra_jax import train_step as train_step_lib


@dataclasses.dataclass(frozen=True)
class CompiledStep:
  """What one compiled step costs a chip."""

  compile_seconds: float
  memory: program_cost.Memory
  flops: float  # XLA's count, per chip
  bytes_accessed: float  # XLA's count, per chip
  collectives: dict[str, program_cost.Collective]

  @property
  def collective_bytes(self) -> int:
    return sum(c.bytes for c in self.collectives.values())


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
    return self.train.memory.total <= hbm and self.eval.memory.total <= hbm

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


def compile_train_step(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                       reference: bool = False) -> tuple[CompiledStep, Any]:
  """The train step's cost on `mesh`, and the state's abstract parameters (for the eval step).

  `reference`: the minimal Flax model (reference_model.py) in place of ours.
  """
  model = reference_model.build(config) if reference else None
  training = train_step_lib.compile_training(config, mesh, model)
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
  start = time.perf_counter()
  eval_step = train_step_lib.compile_eval_step(
      config, mesh, abstract_params, reference_model.build(config) if reference else None)
  evaluation = _step_cost(eval_step, time.perf_counter() - start)
  return Report(topology=topology, num_slices=num_slices, mesh=dict(mesh.shape),
                batch_size=config.train.batch_size, length=config.data.max_seq_length,
                dtype=config.model.dtype, model_flops=flops.step_flops(config)["total"],
                train=train, eval=evaluation, reference=reference)


def largest_batch_per_chip(config: ml_collections.ConfigDict, report: Report,
                           max_compiles: int = 8) -> tuple[int | None, int]:
  """The largest batch per batch slice whose train step fits the chip, and the compiles it took.

  Memory grows about linearly with the batch, so each guess comes from a line
  through the two nearest sizes measured, and is then compiled to check: the
  answer is a size that was compiled and fits, with the next size compiled and
  found too large. None where even one sequence per chip does not fit, or
  the compiles ran out before the two were found.
  """
  mesh = topology_mesh(config, report.topology, report.num_slices)
  slices = report.mesh["data"] * report.mesh["fsdp"] * config.train.grad_accum_steps
  hbm = report.topology.chip.hbm_bytes
  measured = {int(report.batch_per_chip): report.train.memory.total}

  def measure(per_chip: int) -> None:
    shaped = copy.deepcopy(config)
    shaped.train.batch_size = per_chip * slices
    step, _ = compile_train_step(shaped, mesh, report.reference)
    measured[per_chip] = step.memory.total

  compiles = 0
  while compiles < max_compiles:
    low = max((b for b, used in measured.items() if used <= hbm), default=0)
    high = min((b for b, used in measured.items() if used > hbm), default=None)
    if high is not None and high - low == 1:
      return (low or None), compiles
    if compiles < max_compiles // 2:
      guess = _line_guess(measured, low, high, hbm)
    else:  # the line did not close in: halve the interval
      guess = (low + high) // 2 if high is not None else 2 * low
    guess = max(guess, low + 1)
    measure(guess if high is None else min(guess, high - 1))
    compiles += 1
  return None, compiles


def _line_guess(measured: dict[int, int], low: int, high: int | None, hbm: float) -> int:
  """The batch where a line through the two measured sizes nearest the limit reaches `hbm`."""
  if high is not None and low:
    points = [low, high]
  elif low:  # everything measured fits
    points = sorted(measured)[-2:]
  else:  # nothing measured fits
    points = sorted(measured)[:2]
  if len(points) < 2:
    return 2 * low if low else max(1, points[0] // 2)
  (b0, m0), (b1, m1) = ((b, measured[b]) for b in points)
  slope = (m1 - m0) / (b1 - b0)
  if slope <= 0:
    return 2 * max(points)
  return int(b0 + (hbm - m0) / slope)


def _step_json(step: CompiledStep) -> dict[str, Any]:
  return dict(compile_seconds=step.compile_seconds, memory=dict(
      dataclasses.asdict(step.memory), total=step.memory.total),
              flops=step.flops, bytes_accessed=step.bytes_accessed,
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
      batch_per_chip=report.batch_per_chip, model_flops=report.model_flops,
      model_flops_per_chip=report.model_flops / report.num_chips,
      train=_step_json(report.train), eval=_step_json(report.eval),
      roofline_seconds=report.roofline_seconds, mfu_bound=report.mfu_bound, fits=report.fits)


def describe(report: Report) -> list[str]:
  """The report as table rows: (label, value) lines for people."""
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
    rows.append((f"{name} memory", (
        f"{m.total / gib:.2f} GiB per chip of {chip.hbm_bytes / gib:.0f} GiB = arguments "
        f"{m.arguments / gib:.2f} + temporaries {m.temporaries / gib:.2f} + outputs not "
        f"written in place {(m.outputs - m.aliased) / gib:.2f} + code "
        f"{m.generated_code / gib:.2f} GiB")))
  t = report.train
  compute_s, memory_s = t.flops / chip.peak_bf16_flops, t.bytes_accessed / chip.hbm_bytes_per_s
  rows += [
      ("train FLOPs", f"{t.flops:.3g} per chip (XLA), {report.model_flops / report.num_chips:.3g}"
                      " model FLOPs per chip (electra_jax.flops)"),
      ("train bytes", f"{t.bytes_accessed / 1e9:.3g} GB accessed per chip (XLA)"),
      ("roofline bound", f"at least {report.roofline_seconds:.3g} s per step (compute "
                         f"{compute_s:.3g} s, HBM traffic {memory_s:.3g} s): MFU at most "
                         f"{100 * report.mfu_bound:.1f}% (a bound, not a measurement)"),
      ("collectives", "; ".join(f"{kind} x{c.count} {c.bytes / 1e6:,.1f} MB"
                                for kind, c in t.collectives.items()) or "none"),
      ("compile time", f"train {t.compile_seconds:.1f} s, eval {report.eval.compile_seconds:.1f} s"),
  ]
  width = max(len(label) for label, _ in rows)
  lines = [f"{label:<{width}} | {value}" for label, value in rows]
  used = max(t.memory.total, report.eval.memory.total)
  lines.append(("fits" if report.fits else "does not fit") +
               f": {used / gib:.2f} GiB of {chip.hbm_bytes / gib:.0f} GiB per chip")
  return lines
