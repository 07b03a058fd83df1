"""Checksums of a train state, computed on the devices that hold it.

Orbax verifies that a checkpoint's files exist and parse, not that the numbers
read back are the numbers written: a byte flipped inside a chunk (a disk fault,
a partial copy from a bucket) restores silently as a wrong parameter. So each
save records, per array, the sum over its elements of (the element's bits) x
(an odd weight from its position), in uint32 arithmetic; a restore recomputes
it and compares. Any change to one element changes its term by a nonzero
amount times an odd number, which is never 0 modulo 2^32, so it is always
caught; changes to several elements cancel out with probability about 2^-32.

The sum is one jitted pass over the state where it lives (sharded, on any
number of hosts), read back as one number per array: a save or a restore
costs one extra read of the state from device memory.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_UNSIGNED = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}


def _leaf_checksum(x: jax.Array) -> jax.Array:
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    x = x.astype(jnp.uint8)
  size = np.dtype(x.dtype).itemsize
  if size == 8:  # two uint32 words per element
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
  else:
    bits = jax.lax.bitcast_convert_type(x, _UNSIGNED[size]).astype(jnp.uint32)
  position = jnp.zeros(bits.shape, jnp.uint32)
  for axis in range(bits.ndim):  # the row-major index of each element, modulo 2^32
    stride = int(np.prod(bits.shape[axis + 1:], dtype=np.uint64) % 2**32)
    position = position + jax.lax.broadcasted_iota(jnp.uint32, bits.shape, axis) * jnp.uint32(
        stride)
  return jnp.sum(bits * (position * jnp.uint32(2) + jnp.uint32(1)), dtype=jnp.uint32)


@jax.jit
def _checksums(state: Any) -> Any:
  return jax.tree.map(_leaf_checksum, state)


def compute(state: Any) -> dict[str, int]:
  """{path of each array in `state`: its checksum}, as JSON-able numbers."""
  sums = jax.device_get(_checksums(state))
  return {jax.tree_util.keystr(path): int(value)
          for path, value in jax.tree_util.tree_flatten_with_path(sums)[0]}


def mismatches(state: Any, expected: dict[str, int]) -> list[str]:
  """The arrays of `state` whose checksum is not the one in `expected` (or that it lacks)."""
  actual = compute(state)
  return sorted(name for name in actual.keys() | expected.keys()
                if actual.get(name) != expected.get(name))
