"""A small state with every kind of leaf a train state has, for the checkpoint fault tests
(and the processes they start)."""

import jax
import jax.numpy as jnp
import numpy as np


def state_at(step: int) -> dict:
  """A state with each kind of leaf a train state has: float32, bfloat16, int32, a PRNG key."""
  return {"params": {"kernel": jnp.arange(64 * 48, dtype=jnp.float32).reshape(64, 48) + step,
                     "scale": jnp.full((48,), step, jnp.bfloat16)},
          "step": jnp.asarray(step, jnp.int32), "key": jax.random.key(step)}


ABSTRACT = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state_at(0))


def assert_state_is(restored, step: int) -> None:
  expected = state_at(step)
  expected["key"] = jax.random.key_data(expected["key"])
  restored = dict(restored, key=jax.random.key_data(restored["key"]))
  jax.tree.map(np.testing.assert_array_equal, restored, expected)
