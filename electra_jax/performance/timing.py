"""Time the train step, ours and the PyTorch one of the same shape: what the benchmark CLI prints.

`measure` compiles our step for a config (and builds the transformers step
where asked), runs each framework's steps back to back after warm-up, and
returns a JSON-able record: step times, tokens/s, model FLOPs, MFU, compile
time, XLA's memory per device, kernel time per step, and optionally where the
time goes (`profile`). `print_record` and `print_profile` turn a record into
the table `python -m electra_jax.benchmark` prints.
"""

import dataclasses
import os
import statistics
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from electra_jax.cpu import huge_pages
from electra_jax.errors import UserError
from electra_jax.performance import flops, profiling, torch_reference
from electra_jax.pretraining import train_step as train_step_lib
from electra_jax.runtime import sharding

TRACE_TOP = 15  # operations listed
# Steps that spend more than this share of the median step in the kernel (on average)
# get a line saying so.
_KERNEL_SHARE_WORTH_A_NOTE = 0.1


@dataclasses.dataclass
class Timing:
  """Step times of one framework, and what they make of the model FLOPs."""

  step_seconds: list[float]
  kernel_seconds: list[float]
  tokens_per_step: int
  model_flops: float
  peak: flops.Peak | None

  @property
  def median(self) -> float:
    return statistics.median(self.step_seconds)

  def summary(self) -> dict[str, float]:
    return dict(step_s=self.median, step_s_min=min(self.step_seconds),
                kernel_s=statistics.fmean(self.kernel_seconds),
                tokens_per_s=self.tokens_per_step / self.median,
                flops_per_s=self.model_flops / self.median,
                mfu=flops.mfu(self.model_flops, self.median, self.peak))


def random_batch(config: ml_collections.ConfigDict, seed: int = 0) -> dict[str, np.ndarray]:
  """Full rows of random text ids, [CLS] first and [SEP] last, both segments: no padding."""
  rng = np.random.default_rng(seed)
  shape = (config.train.batch_size, config.data.max_seq_length)
  ids = rng.integers(5, config.model.vocab_size, shape, dtype=np.int32)
  ids[:, 0], ids[:, -1], ids[:, shape[1] // 2] = 2, 3, 3  # [CLS] A [SEP] B [SEP]
  types = np.zeros(shape, np.int32)
  types[:, shape[1] // 2 + 1:] = 1
  return {"input_ids": ids, "token_type_ids": types}


class JaxStep:
  """Our compiled train step on one batch, stepped and timed one step at a time."""

  def __init__(self, config: ml_collections.ConfigDict):
    mesh = sharding.create_mesh(config.mesh)
    self.training = train_step_lib.compile_training(config, mesh)
    self.state = self.training.init_state()
    self.batch = sharding.global_batch(random_batch(config), self.training.batch_sharding,
                                       config.train.batch_size)

  def __call__(self) -> float:
    start = time.perf_counter()
    self.state, stats = self.training.train_step(self.state, self.batch)
    loss = float(stats["loss"])  # waits for the step
    if not np.isfinite(loss):
      raise RuntimeError(f"the benchmark's loss is {loss}")
    return time.perf_counter() - start


class TorchStep:
  """The transformers step of the same shape (torch_reference), timed likewise."""

  def __init__(self, config: ml_collections.ConfigDict):
    torch, _ = torch_reference.import_torch()
    self.config = config
    self.models = torch_reference.build(config)
    self.batch = {name: torch.as_tensor(x, dtype=torch.long)
                  for name, x in random_batch(config).items()}

  def __call__(self) -> float:
    start = time.perf_counter()
    torch_reference.train_step(self.models, self.config, self.batch["input_ids"],
                               self.batch["token_type_ids"])
    return time.perf_counter() - start


def measure(config: ml_collections.ConfigDict, compare: str, steps: int, warmup: int,
            peak: flops.Peak | None, trace_dir: str | None = None
            ) -> tuple[dict[str, Any], flops.Peak | None]:
  """One shape: our step (and then the torch step), as a JSON-able record.

  Also returns the peak its MFU divides by: `peak`, or on a CPU the higher
  rate measured after the steps (`flops.remeasured`).
  """
  model_flops = flops.step_flops(config)
  tokens = config.train.batch_size * config.data.max_seq_length
  ours = JaxStep(config)
  steppers = {"jax": ours}
  if compare == "torch":
    steppers["torch"] = TorchStep(config)
  # Each framework's steps run back to back, as in training: a step of the other
  # one in between left the memory system in a state that slowed ours more than
  # twice over on this project's VM.
  times = {}
  for name, step in steppers.items():
    for _ in range(warmup):
      step()
    times[name] = profiling.timed_steps(step, steps)
  peak = flops.remeasured(peak, config.model.dtype)
  timings = {name: Timing(seconds, kernel_seconds, tokens, model_flops["total"], peak)
             for name, (seconds, kernel_seconds) in times.items()}
  cost = ours.training.cost
  record = dict(
      batch_size=config.train.batch_size, length=config.data.max_seq_length,
      dtype=config.model.dtype, grad_accum_steps=config.train.grad_accum_steps,
      remat=config.model.remat, attention=config.model.attention,
      model_flops=model_flops, xla_flops=cost["flops"],
      compile_s=ours.training.compile_seconds, peak_bytes_per_device=cost["peak_bytes"],
      peak_flops_per_s=peak and peak.flops_per_s,
      **{name: dict(timing.summary(), step_seconds=timing.step_seconds,
                    kernel_seconds=timing.kernel_seconds)
         for name, timing in timings.items()})
  if "torch" in timings:
    record["speedup"] = record["torch"]["step_s"] / record["jax"]["step_s"]
  if trace_dir:
    record["profile"] = profile(ours, trace_dir, model_flops["total"])
  return record, peak


def profile(ours: JaxStep, trace_dir: str, model_flops: float) -> dict[str, Any]:
  """Where our step's time goes: traced steps, summed by the model code of each operation."""
  groups = profiling.summarize(profiling.trace_steps(ours, 2, trace_dir),
                               ours.training.train_step.as_text())
  matmul = sum(seconds for _, is_matmul, seconds in groups if is_matmul)
  return dict(trace_dir=trace_dir, operation_seconds=sum(seconds for *_, seconds in groups),
              matmul_seconds=matmul, matmul_flops_per_s=model_flops / matmul,
              largest=[dict(source=source, matmul=is_matmul, seconds=seconds)
                       for source, is_matmul, seconds in groups[:TRACE_TOP]])


def print_profile(p: dict[str, Any]) -> None:
  total = p["operation_seconds"]
  print(f"profile ({p['trace_dir']}): {total:.3f} s of XLA operations per step; matmuls "
        f"{100 * p['matmul_seconds'] / total:.0f}% of it, at {p['matmul_flops_per_s']:.3g} "
        "model FLOP/s; the largest:")
  for op in p["largest"]:
    print(f"  {op['seconds']:7.3f} s {100 * op['seconds'] / total:5.1f}% "
          f"{'matmul' if op['matmul'] else '      '} {op['source']}")
  print(flush=True)


def print_record(record: dict[str, Any], peak: flops.Peak | None) -> None:
  """The table of one measured shape."""
  xla_share = record["xla_flops"] / record["model_flops"]["total"]
  rows = [
      ("shape", f"batch {record['batch_size']} x length {record['length']}, "
                f"{record['dtype']}, attention {record['attention']}, remat {record['remat']}, "
                f"{record['grad_accum_steps']} microbatch(es)"),
      ("compile", f"{record['compile_s']:.1f} s; XLA plans "
                  f"{record['peak_bytes_per_device'] / 2**30:.2f} GiB per device"),
      ("model FLOPs / step", flops.describe(record["model_flops"])),
      ("XLA's FLOPs / step", f"{record['xla_flops']:.3g} ({xla_share:.2f}x the model FLOPs: "
                             "they add elementwise work and the optimizer"
                             + ("; XLA counts the microbatch loop's body once)"
                                if record["grad_accum_steps"] > 1 else ")")),
      ("peak", flops.describe_peak(peak)),
  ]
  for name in ("jax", "torch"):
    if name in record:
      r = record[name]
      rows.append((f"{name} step", f"{r['step_s']:.3f} s median (min {r['step_s_min']:.3f}), "
                                   f"{r['tokens_per_s']:,.0f} tokens/s, "
                                   f"{r['flops_per_s']:.3g} FLOP/s, MFU {100 * r['mfu']:.1f}%"))
      if r["kernel_s"] > _KERNEL_SHARE_WORTH_A_NOTE * r["step_s"]:
        rows.append((f"{name} kernel time",
                     f"{r['kernel_s']:.3f} CPU seconds per step (mean, all threads) in the "
                     "kernel: page faults on freshly allocated memory, slow on VMs that return "
                     "freed memory to their host (docs/performance.md)"))
  if "speedup" in record:
    rows.append(("jax / torch", f"{record['speedup']:.2f}x the tokens/s"))
  width = max(len(label) for label, _ in rows)
  print("\n".join(f"{label:<{width}} | {value}" for label, value in rows), flush=True)


def environment(threads: int) -> dict[str, Any]:
  """What the figures depend on besides the config."""
  device = jax.devices()[0]
  return dict(date=time.strftime("%Y-%m-%d %H:%M"), jax=jax.__version__,
              device=f"{len(jax.devices())} x {device.device_kind}", platform=device.platform,
              cpu_cores=os.cpu_count(), threads=threads, load_average=os.getloadavg()[0],
              xla_flags=os.environ.get("XLA_FLAGS", ""), huge_pages=huge_pages.enabled())


def pin_threads(threads: int) -> int:
  """Pins this process to `threads` cores (0: keeps them all); returns how many it has."""
  cores = sorted(os.sched_getaffinity(0))
  if threads:
    if threads > len(cores):
      raise UserError(f"--threads={threads}, but this process may use {len(cores)} cores")
    os.sched_setaffinity(0, cores[:threads])
  return threads or len(cores)
