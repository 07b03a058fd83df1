"""The device mesh, and where every array lives on it.

One program runs on 1 CPU, 8 simulated devices, a GPU node or a multi-host TPU
pod; only the mesh differs. Its axes (config.MESH_AXES), outermost first:

  data    each device takes a slice of the batch; parameters are replicated
  fsdp    a slice of the batch too, and parameters and optimizer state are
          split along their embed/hidden dimension (gathered when used)
  tensor  layers split inside: heads, feed-forward and vocabulary dimensions

The model names the dimensions of its parameters and main activations
(models/encoder.py), the config maps those names onto mesh axes (`mesh.rules`),
and this module turns both into `NamedSharding`s: parameters are created
directly in their shards, batches are split over data x fsdp. The processes
that share the mesh join in distributed.py.
"""

import contextlib
import math
from typing import Any, Callable, Iterator

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from electra_jax.config import DEFAULT_AXIS_RULES, MESH_AXES, mesh_axes_of
from electra_jax.errors import ConfigError

BATCH_AXES = ("data", "fsdp")

# flax's form of `mesh.rules`: (logical name, mesh axis or axes or None), in precedence order.
AxisRules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

# ---------------------------------------------------------------------------
# The mesh and the rules
# ---------------------------------------------------------------------------


def mesh_shape(mesh_config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, ...]:
  """The (data, fsdp, tensor) sizes for `num_devices`, with a -1 filled in."""
  sizes = [mesh_config[axis] for axis in MESH_AXES]
  named = " x ".join(f"{axis}={size}" for axis, size in zip(MESH_AXES, sizes))
  fixed = math.prod(size for size in sizes if size != -1)
  if -1 in sizes and num_devices % fixed == 0:
    sizes[sizes.index(-1)] = num_devices // fixed
  if math.prod(sizes) != num_devices:
    raise ConfigError(f"the mesh {named} does not fit the {num_devices} device(s) here: set "
                      "--config.mesh.data, .fsdp and .tensor so that their product is "
                      f"{num_devices}, or one of them to -1 to take the rest")
  return tuple(sizes)


def create_mesh(mesh_config: ml_collections.ConfigDict,
                devices: list[jax.Device] | None = None) -> Mesh:
  """The config's mesh over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(mesh_config, len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def axis_rules(mesh_config: ml_collections.ConfigDict) -> AxisRules:
  """`mesh.rules` in flax's form, in DEFAULT_AXIS_RULES' order of precedence."""
  rules = []
  for name, _ in DEFAULT_AXIS_RULES:
    axes = mesh_axes_of(mesh_config.rules[name])
    rules.append((name, axes[0] if len(axes) == 1 else (axes or None)))
  return tuple(rules)


@contextlib.contextmanager
def activate(mesh: Mesh, rules: AxisRules) -> Iterator[None]:
  """Puts the mesh and rules in scope, so that tracing applies the model's constraints."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


# ---------------------------------------------------------------------------
# Parameters and state
# ---------------------------------------------------------------------------


def _is_box(x: Any) -> bool:
  return isinstance(x, nn.Partitioned)


def unbox(tree: Any) -> Any:
  """`tree` with its logical-axis boxes replaced by their contents."""
  return jax.tree.map(lambda x: x.value if _is_box(x) else x, tree, is_leaf=_is_box)


def logical_shardings(tree: Any, mesh: Mesh, rules: AxisRules) -> Any:
  """A NamedSharding per leaf of `tree` (boxed or not), for its unboxed form.

  A boxed leaf is split as its logical names and `rules` say, except along a
  dimension that its mesh axes do not divide (2 heads over 4 tensor devices),
  which stays whole. Leaves without names (step counters, keys) are replicated.
  """

  def place(leaf: Any) -> NamedSharding:
    if not _is_box(leaf):
      return NamedSharding(mesh, PartitionSpec())
    spec = nn.logical_to_mesh_axes(leaf.names, rules)
    return NamedSharding(mesh, _dividing(spec, leaf.value.shape, mesh))

  return jax.tree.map(place, tree, is_leaf=_is_box)


def _dividing(spec: PartitionSpec, shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
  fitted = []
  for size, axes in zip(shape, spec):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    fitted.append(axes if size % math.prod(mesh.shape[a] for a in names) == 0 else None)
  return PartitionSpec(*fitted)


def abstract_sharded(init_fn: Callable[[], Any], mesh: Mesh,
                     rules: AxisRules) -> tuple[Any, Any]:
  """Shapes of what `init_fn` creates (unboxed, each with its sharding), and the shardings.

  Allocates nothing: enough to compile a step for a model too big to create here.
  """
  boxed = jax.eval_shape(init_fn)
  shardings = logical_shardings(boxed, mesh, rules)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          unbox(boxed), shardings)
  return abstract, shardings


def sharded_initializer(init_fn: Callable[[], Any], shardings: Any) -> Callable[[], Any]:
  """`init_fn` compiled so that each device creates only its own shards.

  No array is ever whole on one device (the random initializers are
  partitionable), and what it returns is unboxed: plain arrays in `shardings`.
  """
  return jax.jit(lambda: unbox(init_fn()), out_shardings=shardings)


def to_host(tree: Any) -> Any:
  """Whole numpy arrays on every process; a collective, so every process must call it."""
  return multihost_utils.process_allgather(tree, tiled=True)


# ---------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------


def batch_sharding(mesh: Mesh, batch_size: int, microbatches: int = 1) -> NamedSharding:
  """Rows split over data x fsdp; refuses a batch (or microbatch) that does not split evenly."""
  splits = math.prod(mesh.shape[axis] for axis in BATCH_AXES)
  mesh_named = (f"the {splits} batch slices of the mesh (data x fsdp = {mesh.shape['data']} x "
                f"{mesh.shape['fsdp']})")
  if batch_size % splits:
    raise ConfigError(f"config field 'train.batch_size' = {batch_size} must be divisible by "
                      f"{mesh_named}; choose a multiple of {splits} or another --config.mesh")
  if (batch_size // microbatches) % splits:
    raise ConfigError(f"config fields 'train.batch_size' / 'train.grad_accum_steps' = "
                      f"{batch_size} / {microbatches} give microbatches of "
                      f"{batch_size // microbatches} rows, which must be divisible by "
                      f"{mesh_named}; choose fewer microbatches or a larger batch")
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  """Whole on every device: what every process can read back (metrics, eval outputs)."""
  return NamedSharding(mesh, PartitionSpec())


def host_rows(sharding: NamedSharding, batch_size: int) -> slice:
  """The rows of a global batch that this process's devices hold (one contiguous block)."""
  blocks = [index[0].indices(batch_size)[:2]
            for index in sharding.addressable_devices_indices_map((batch_size,)).values()]
  return slice(min(start for start, _ in blocks), max(stop for _, stop in blocks))


def host_block(sharding: NamedSharding, batch_size: int) -> dict[str, int]:
  """This process's rows of each global batch as the loader counts them.

  The loader reads block `process_index` of `process_count` equal blocks; the
  mesh decides which block that is (its devices need not follow process order),
  so the loader is told from the mesh, never from `jax.process_index()`.
  """
  rows = host_rows(sharding, batch_size)
  size = rows.stop - rows.start
  return dict(process_index=rows.start // size, process_count=batch_size // size)


def global_batch(batch: dict[str, np.ndarray], sharding: NamedSharding,
                 batch_size: int) -> dict[str, jax.Array]:
  """The global batch as sharded arrays, from the host's numpy arrays.

  `batch` holds either the whole global batch (every process reads the same
  stream; this process keeps its rows) or just this process's rows
  (`host_rows`, for a loader split by process). Rows go straight to the
  devices that hold them.
  """
  rows = host_rows(sharding, batch_size)

  def to_global(x: np.ndarray) -> jax.Array:
    if x.shape[0] == batch_size:
      x = x[rows]
    elif x.shape[0] != rows.stop - rows.start:
      raise ValueError(f"a batch of {x.shape[0]} rows is neither the global batch "
                       f"({batch_size}) nor this process's rows {rows}")
    return jax.make_array_from_process_local_data(sharding, x, (batch_size, *x.shape[1:]))

  return {name: to_global(x) for name, x in batch.items()}
