r"""Compile a config's train and eval steps for a TPU slice, on any host, and report what they cost.

  python -m electra_jax.compile --config=configs/base.py --topology=v5e:2x4

compiles the steps of any config (with any --config.* override, the mesh
included) for the named TPU slice through libtpu, without a TPU: the same
compile a run does on the slice itself. It prints, per chip: the memory
(arguments, temporaries, outputs, code) against the chip's HBM, XLA's FLOPs
and bytes accessed beside the model FLOPs, a roofline bound on the step time
(the larger of FLOPs over the chip's peak and bytes over its HBM bandwidth:
a bound, not a measurement) and the MFU that bound allows, the collectives in
the compiled train step (kind, count, bytes), the compile times, and a last
line saying `fits` (exit 0) or `does not fit` (exit 1).

  --topology=v5e:2x4      generation:shape in chips (v4 and v5p: AxBxC), or a
                          Cloud TPU accelerator type: v5e-8, v4-8, v5p-8, v6e-8
  --num_slices=N          N such slices joined over the data-center network
  --reference             compile a minimal Flax ELECTRA, flax.linen's own layers
                          (electra_jax/performance/reference_model.py), in place
                          of ours: the yardstick for FLOPs, bytes and memory
  --max_batch=N           also find the largest batch per chip whose train step
                          fits, compiling up to N more batch sizes (about 5 find
                          it exactly where memory grows linearly with the batch)
  --json=PATH             also write the report as JSON

Needs libtpu: pip install -e ".[tpu]". Nothing else is read or written.
"""

import dataclasses
import json
import os

from absl import flags, logging
from ml_collections import config_flags

from electra_jax import cli
from electra_jax.errors import UserError
from electra_jax.performance import compile_report, tpu
from electra_jax.runtime.fileio import atomic_write

# The slice is compiled for, never run on: this host's own accelerators stay untouched.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

_CONFIG = config_flags.DEFINE_config_file(
    "config", None,
    "A config file, or a shipped config by name (tiny, small, base, large); override any field "
    "with --config.<section>.<field>=<value>, e.g. --config.mesh.fsdp=-1 --config.mesh.data=1.")
_TOPOLOGY = flags.DEFINE_string(
    "topology", None, "The TPU slice to compile for: generation:shape in chips (v5e:2x4, "
    "v6e:4x4, v4:2x2x1, v5p:2x2x2) or an accelerator type (v5e-8, v4-8, v5p-8, v6e-8).")
_NUM_SLICES = flags.DEFINE_integer("num_slices", 1, "How many such slices (multi-slice).",
                                   lower_bound=1)
_REFERENCE = flags.DEFINE_bool(
    "reference", False, "Compile the minimal Flax reference model "
    "(electra_jax/performance/reference_model.py) in place of ours, to compare FLOPs, bytes "
    "and memory.")
_MAX_BATCH = flags.DEFINE_integer(
    "max_batch", 0, "Also find the largest batch per chip whose train step fits, compiling up "
    "to this many more batch sizes (8 is plenty); 0: do not.", lower_bound=0)
_JSON = flags.DEFINE_string("json", None, "Also write the report to this JSON file.")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}; see --help")
  config = cli.resolved_config(_CONFIG)
  if not _TOPOLOGY.value:
    raise UserError("--topology is required, e.g. --topology=v5e:2x4 (see --help)")
  topology = tpu.parse_topology(_TOPOLOGY.value)
  logging.set_verbosity(logging.WARNING)
  report = compile_report.compile_for_topology(config, topology, _NUM_SLICES.value,
                                               _REFERENCE.value)
  result = compile_report.to_json(report)
  largest = None
  if _MAX_BATCH.value:
    largest = compile_report.largest_batch_per_chip(config, report, _MAX_BATCH.value)
    result["largest_batch_per_chip"] = dataclasses.asdict(largest)
  print("\n".join(compile_report.describe(report, largest)), flush=True)
  if _JSON.value:
    atomic_write(_JSON.value, json.dumps(result, indent=2))
  if not report.fits:
    raise SystemExit(1)


if __name__ == "__main__":
  cli.run(main)
