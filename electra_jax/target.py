"""Every device-specific choice of a compiled step, taken from the devices it is compiled for.

A step is compiled for a mesh whose devices need not be this host's: a TPU
topology compiled from a CPU host (`python -m electra_jax.compile`), say. So
no choice reads `jax.default_backend()`; each comes from `platform_of` the
mesh's devices, here:

- the forms of the model's operations (`Ops`): a CPU's own (electra_jax/cpu/),
  else the plain ones, with cuDNN's fused attention on NVIDIA GPUs in 16-bit floats;
- the form of the optimizer's update on a finite step (a `lax.cond` on CPU,
  a `where` elsewhere);
- the peak FLOP/s that MFU divides by (`flops.peak_flops`).
"""

import dataclasses
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp

from electra_jax.cpu import layers as cpu_layers
from electra_jax.cpu import update as cpu_update
from electra_jax.models.ops import Ops

# update_if(condition, update, params, opt_state) -> (params, opt_state)
UpdateIf = Callable[[jax.Array, Callable[[Any, Any], tuple[Any, Any]], Any, Any], tuple[Any, Any]]


def platform_of(devices: Iterable[jax.Device]) -> str:
  """The platform ("cpu", "gpu", "tpu") of the devices a program is compiled for."""
  platforms = {device.platform for device in devices}
  if len(platforms) != 1:
    raise ValueError(f"a mesh needs devices of one platform, not {sorted(platforms)}")
  return platforms.pop()


def update_where(condition: jax.Array, update: Callable[[Any, Any], tuple[Any, Any]],
                 params: Any, opt_state: Any) -> tuple[Any, Any]:
  """`update(params, opt_state)` where `condition` holds, the two unchanged where not."""
  return jax.tree.map(lambda new, old: jnp.where(condition, new, old),
                      update(params, opt_state), (params, opt_state))


@dataclasses.dataclass(frozen=True)
class Choices:
  """What the target's platform decides about a step."""

  platform: str
  ops: Ops  # the forms of the model's operations
  update_if: UpdateIf  # the optimizer update, applied only on a finite step


def choices(devices: Iterable[jax.Device], dtype: str) -> Choices:
  """The choices for a step compiled for `devices`, computing in `dtype` (model.dtype)."""
  platform = platform_of(devices)
  if platform == "cpu":
    return Choices(platform, cpu_layers.OPS, cpu_update.update_in_branch)
  half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
  fused_attention = "cudnn" if platform == "gpu" and half else None
  return Choices(platform, Ops(fused_attention=fused_attention), update_where)
