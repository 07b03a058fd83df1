"""TPU chips and topologies: what each generation has, and its devices for compiling on any host.

`CHIPS` lists per chip the HBM, the peak dense bfloat16 FLOP/s and the HBM
bandwidth, from Google Cloud's system architecture pages
(cloud.google.com/tpu/docs/v4, /v5e, /v5p, /v6e): v4 32 GiB, 275 TFLOP/s,
1,200 GB/s; v5e 16 GiB, 197 TFLOP/s, 819 GB/s; v5p 95 GiB, 459 TFLOP/s,
2,765 GB/s; v6e 32 GiB, 918 TFLOP/s, 1,638 GB/s. (The pages give v5e's, v5p's
and v6e's capacity in "GB"; JAX reports each chip's usable HBM a little below
these figures, since the runtime keeps some.)

`topology_devices` gives compile-only devices of a named slice through libtpu
(`pip install -e ".[tpu]"`), which runs on a host without a TPU: JAX then
compiles for them exactly as on the slice (MaxText's train_compile does the
same). One JAX device is one chip: v4 and v5p run their chip's two
TensorCores as one device ("megacore"), as on Cloud TPU VMs.
"""

import dataclasses
import importlib.util
import os
import re

import jax

from electra_jax.errors import UserError

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
  """One TPU generation, per chip."""

  generation: str  # as in topology names: v4, v5e, v5p, v6e
  device_kind: str  # jax.Device.device_kind
  hbm_bytes: float
  peak_bf16_flops: float  # dense, per second
  hbm_bytes_per_s: float
  cores_per_chip: int  # TensorCores, which accelerator type names count for v4 and v5p
  chip_config: str  # libtpu's name for how a chip's cores form devices
  accelerator_prefix: str  # the accelerator type's prefix on Cloud TPU (v5litepod-8)


CHIPS = (
    Chip("v4", "TPU v4", 32 * GiB, 275e12, 1200e9, 2, "megacore", "v4"),
    Chip("v5e", "TPU v5 lite", 16 * GiB, 197e12, 819e9, 1, "default", "v5litepod"),
    Chip("v5p", "TPU v5", 95 * GiB, 459e12, 2765e9, 2, "megacore", "v5p"),
    Chip("v6e", "TPU v6 lite", 32 * GiB, 918e12, 1638e9, 1, "default", "v6e"),
)
_CHIPS = {chip.generation: chip for chip in CHIPS}
_ALIASES = {"v5litepod": "v5e", "v5lite": "v5e"}

# Slice shapes by chip count, for names like v5e-8 (chips) and v4-8 (TensorCores):
# Cloud TPU's standard shapes.
_SHAPES_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16",
              256: "16x16"}
_SHAPES_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8",
              256: "4x8x8", 512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16"}


@dataclasses.dataclass(frozen=True)
class Topology:
  """A slice: its chip and its shape in chips ("2x4", "2x2x1")."""

  chip: Chip
  shape: str

  @property
  def name(self) -> str:
    return f"{self.chip.generation}:{self.shape}"

  @property
  def num_chips(self) -> int:
    count = 1
    for size in self.shape.split("x"):
      count *= int(size)
    return count

  @property
  def accelerator_type(self) -> str:
    """Cloud TPU's name for the slice: v5litepod-8, v4-8 (TensorCores for v4 and v5p)."""
    return f"{self.chip.accelerator_prefix}-{self.num_chips * self.chip.cores_per_chip}"


def parse_topology(name: str) -> Topology:
  """"v5e:2x4" (generation:shape in chips) or "v5e-8", "v4-8" (Cloud TPU's accelerator types)."""
  known = ", ".join(chip.generation for chip in CHIPS)
  shaped = re.fullmatch(r"(\w+):(\d+(?:x\d+){1,2})", name.strip())
  typed = re.fullmatch(r"(\w+)-(\d+)", name.strip())
  if not shaped and not typed:
    raise UserError(f"--topology={name!r} is not a TPU topology: give generation:shape in "
                    "chips (v5e:2x4, v4:2x2x1) or an accelerator type (v5e-8, v4-8)")
  generation = (shaped or typed)[1].lower()
  chip = _CHIPS.get(_ALIASES.get(generation, generation))
  if chip is None:
    raise UserError(f"--topology={name!r}: unknown TPU generation {generation!r}; known: {known}")
  if shaped:
    shape = shaped[2]
    if len(shape.split("x")) != (3 if chip.cores_per_chip == 2 else 2):
      raise UserError(f"--topology={name!r}: {chip.generation} slices have "
                      f"{3 if chip.cores_per_chip == 2 else 2} dimensions")
    return Topology(chip, shape)
  count = int(typed[2])
  shapes = _SHAPES_3D if chip.cores_per_chip == 2 else _SHAPES_2D
  chips, remainder = divmod(count, chip.cores_per_chip)
  if remainder or chips not in shapes:
    unit = "TensorCores" if chip.cores_per_chip == 2 else "chips"
    sizes = ", ".join(str(n * chip.cores_per_chip) for n in shapes)
    raise UserError(f"--topology={name!r}: {typed[1]}-N counts {unit}, one of {sizes}; "
                    f"or give the shape, {chip.generation}:AxB"
                    + ("xC" if chip.cores_per_chip == 2 else ""))
  return Topology(chip, shapes[chips])


def chip_of(device_kind: str) -> Chip | None:
  """The chip whose JAX device kind this is (the longest name that matches)."""
  matches = [chip for chip in CHIPS if chip.device_kind in device_kind]
  return max(matches, key=lambda chip: len(chip.device_kind), default=None)


def topology_devices(topology: Topology, num_slices: int = 1) -> list[jax.Device]:
  """Compile-only devices of `num_slices` slices of `topology`, on any host (needs libtpu)."""
  if importlib.util.find_spec("libtpu") is None:
    raise UserError('compiling for a TPU needs libtpu: pip install -e ".[tpu]" '
                    f'(or pip install "jax[tpu]=={jax.__version__}")')
  # libtpu reads these when it loads. Without the first two, on a host without a
  # TPU, it warns that it cannot find its (here irrelevant) accelerator and workers;
  # without the third, a second process compiling at the same time (or a run on
  # this TPU VM) finds libtpu's lock file taken and fails.
  os.environ.setdefault("TPU_ACCELERATOR_TYPE", topology.accelerator_type)
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  description = topologies.get_topology_desc(
      platform="tpu", topology_name=topology.name, chip_config_name=topology.chip.chip_config,
      num_slices=num_slices)
  return list(description.devices)
