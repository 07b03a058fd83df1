r"""Measure the train step: step time, tokens/s, model FLOPs and MFU, optionally against PyTorch.

  python -m electra_jax.benchmark --config=configs/small.py --config.train.batch_size=32

compiles the train step of the config (with any --config.* override), runs it
on a random batch of the config's shape, and prints a table: the median step
time over --steps steps (compilation and --warmup steps excluded), tokens/s,
the model FLOPs of a step counted from the config (generator, generator head at
the masked positions only, discriminator, discriminator head; x3 for forward
and backward; electra_jax.performance.flops) next to XLA's own count, the FLOP/s reached
and the MFU: their share of the devices' peak (a table of known accelerators;
on CPU, measured here with large matmuls, before and again after the steps,
the higher rate counting). Also the compile time, the memory per device
that XLA plans for the step, and the process's time in the kernel per step
(JSON; printed where it is over a tenth of the step).

  --compare=torch   also runs the Hugging Face transformers ELECTRA step of the same
                    shape (electra_jax.performance.torch_reference) in the same process, after
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

import jax
import ml_collections
from absl import flags, logging
from ml_collections import config_flags

from electra_jax import cli
from electra_jax import config as config_lib
from electra_jax.errors import UserError
from electra_jax.performance import flops, torch_reference
from electra_jax.performance.timing import (environment, measure, pin_threads, print_profile,
                                             print_record)
from electra_jax.runtime import cluster_flags
from electra_jax.runtime.fileio import atomic_write

_CONFIG = config_flags.DEFINE_config_file(
    "config", None,
    "A config file, or a shipped config by name (tiny, small, base, large); override any field "
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
flags.declare_key_flag("cpu_devices")  # cluster_flags.py's, listed in --help

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
  cluster_flags.split_cpu()  # and its devices
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
