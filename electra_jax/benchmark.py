r"""Measure the train step: step time, tokens/s, model FLOPs and MFU, optionally against PyTorch.

  python -m electra_jax.benchmark --config=configs/small.py --config.train.batch_size=32

compiles the train step of the config (with any --config.* override), runs it
on a random batch of the config's shape, and prints a table: the median step
time over --steps steps (compilation and --warmup steps excluded), tokens/s,
the model FLOPs of a step counted from the config (generator, generator head at
the masked positions only, discriminator, discriminator head; x3 for forward
and backward; electra_jax.flops) next to XLA's own count, the FLOP/s reached
and the MFU: their share of the devices' peak (a table of known accelerators;
on CPU, measured here with large matmuls, before and again after the steps,
the higher rate counting). Also the compile time, the memory per device
that XLA plans for the step, and the process's time in the kernel per step
(JSON; printed where it is over a tenth of the step).

  --compare=torch   also runs the Hugging Face transformers ELECTRA step of the same
                    shape (electra_jax.torch_reference) in the same process, after
                    ours, and prints the tokens/s ratio (needs torch and
                    transformers: pip install -e ".[hf]")
  --threads=N       pins the process to N cores; XLA and torch then use N threads
  --cpu_devices=N   splits the CPU into N JAX devices that share the batch (data
                    parallelism across cores; the torch step stays one process)
  --batch_sizes=8,32 --lengths=128,512   a table over these shapes (overriding
                    train.batch_size and data.max_seq_length), e.g. for scaling
  --json=PATH       also writes the results as JSON
  --trace_dir=DIR   also records 2 of our steps with jax.profiler into DIR (TensorBoard's
                    profile plugin, or the .trace.json.gz in ui.perfetto.dev) and prints
                    where their time goes: matmuls against the rest, the largest
                    operations by the model code they come from

Nothing is read or written besides --json: no data, no workdir.
"""

import copy
import dataclasses
import json
import os
import statistics
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import flags, logging
from ml_collections import config_flags

from electra_jax import cli, flops, process_flags, profiling, sharding, torch_reference
from electra_jax import config as config_lib
from electra_jax import train_step as train_step_lib
from electra_jax.cpu import huge_pages
from electra_jax.errors import UserError
from electra_jax.fileio import atomic_write

_CONFIG = config_flags.DEFINE_config_file(
    "config", None,
    "Path to a config file (configs/tiny.py, small.py, base.py, large.py); override any field "
    "with --config.<section>.<field>=<value>, e.g. --config.model.dtype=bfloat16.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps (of each framework); the median is "
                              "reported.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after compiling (of each framework).")
_COMPARE = flags.DEFINE_enum(
    "compare", "none", ["none", "torch"],
    "torch: also time the Hugging Face transformers ELECTRA step of the same shape, after "
    "ours, and report the ratio of tokens/s.")
_THREADS = flags.DEFINE_integer(
    "threads", 0, "Pin the process to this many CPU cores, so that XLA and torch both use "
    "this many threads; 0: all cores.")
_BATCH_SIZES = flags.DEFINE_list(
    "batch_sizes", [], "Batch sizes to measure in turn (default: the config's).")
_LENGTHS = flags.DEFINE_list(
    "lengths", [], "Sequence lengths to measure in turn (default: the config's).")
_PEAK_FLOPS = flags.DEFINE_float(
    "peak_flops", 0.0, "Peak FLOP/s of all devices together, for a device that electra_jax "
    "does not know (flops.DEVICE_PEAKS); 0: from that table, or measured on CPU.")
_JSON = flags.DEFINE_string("json", None, "Also write the results to this JSON file.")
_TRACE_DIR = flags.DEFINE_string(
    "trace_dir", None, "Also profile 2 of our steps into this directory and print where "
    "their time goes.")
flags.declare_key_flag("cpu_devices")  # process_flags.py's, listed in --help
_TRACE_TOP = 15  # operations listed
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
  # twice over here (benchmarks/README.md).
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
                       for source, is_matmul, seconds in groups[:_TRACE_TOP]])


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
                     "freed memory to their host (benchmarks/README.md)"))
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


def shapes(config: ml_collections.ConfigDict) -> list[tuple[int, int]]:
  """(batch size, length) pairs from --batch_sizes and --lengths."""
  try:
    batch_sizes = [int(b) for b in _BATCH_SIZES.value] or [config.train.batch_size]
    lengths = [int(n) for n in _LENGTHS.value] or [config.data.max_seq_length]
  except ValueError:
    raise UserError("--batch_sizes and --lengths take comma-separated integers") from None
  return [(b, n) for n in lengths for b in batch_sizes]


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}; see --help")
  config = cli.resolved_config(_CONFIG)
  if _STEPS.value < 1 or _WARMUP.value < 0:
    raise UserError("--steps must be at least 1 and --warmup at least 0")
  threads = pin_threads(_THREADS.value)  # before JAX starts its thread pools
  process_flags.split_cpu()  # and its devices
  if _COMPARE.value == "torch":
    torch, _ = torch_reference.import_torch()
    torch.set_num_threads(threads)
  logging.set_verbosity(logging.WARNING)
  env = environment(threads)
  peak = (flops.Peak(_PEAK_FLOPS.value, "--peak_flops") if _PEAK_FLOPS.value else
          flops.peak_flops(config.model.dtype))
  print(f"{env['date']}: jax {env['jax']} on {env['device']}, {threads} threads "
        f"({env['cpu_cores']} cores, load average {env['load_average']:.1f}, huge pages "
        f"{'on' if env['huge_pages'] else 'off'})"
        + (f", XLA_FLAGS={env['xla_flags']}" if env["xla_flags"] else ""), flush=True)
  records = []
  for batch_size, length in shapes(config):
    shaped = copy.deepcopy(config)
    shaped.train.batch_size, shaped.data.max_seq_length = batch_size, length
    config_lib.validate(shaped)
    trace_dir = _TRACE_DIR.value and os.path.join(_TRACE_DIR.value, f"b{batch_size}_l{length}")
    try:
      record, peak = measure(shaped, _COMPARE.value, _STEPS.value, _WARMUP.value, peak,
                             trace_dir)
      records.append(record)
    except jax.errors.JaxRuntimeError as error:
      if "RESOURCE_EXHAUSTED" not in str(error):
        raise
      # One shape too big for the device ends its row of the table, not the whole sweep.
      records.append(dict(batch_size=batch_size, length=length, error=str(error).splitlines()[0]))
      print(f"batch {batch_size} x length {length}: does not fit ({records[-1]['error']})\n",
            flush=True)
      continue
    print_record(records[-1], peak)
    if "profile" in records[-1]:
      print_profile(records[-1]["profile"])
  if _JSON.value:
    atomic_write(_JSON.value, json.dumps(
        dict(environment=env, peak_flops=peak and dataclasses.asdict(peak), results=records),
        indent=2))


if __name__ == "__main__":
  cli.run(main)
