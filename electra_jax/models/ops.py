"""The operations the layers are made of, in the form the target device runs best.

`Ops()` holds the plain forms that any Flax transformer uses: XLA's matmul,
flax's LayerNorm, erf GELU, softmax, the whole batch at once, the vocabulary
bias added to the logits. GPUs and TPUs run these. A CPU runs forms of its own
(`electra_jax/cpu/layers.py`) that compute the same functions with the same
parameters, so what a model learns does not depend on where it ran.
`electra_jax/target.py` picks the forms from the devices the step is compiled
for; nothing else does.
"""

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def whole_batch(compute: Callable[..., jax.Array], *inputs: jax.Array) -> jax.Array:
  """`compute(*inputs)`: the batch in one piece."""
  return compute(*inputs)


def vocabulary_logits(x: jax.Array, table: jax.Array, bias: jax.Array, dtype: Dtype,
                      dot_general: Callable = jax.lax.dot_general) -> jax.Array:
  """float32 logits x @ table^T + bias over the vocabulary ([vocab, features] table)."""
  logits = dot_general(x.astype(dtype), table.astype(dtype), (((x.ndim - 1,), (1,)), ((), ())),
                       preferred_element_type=jnp.float32)
  return logits + bias


@dataclasses.dataclass(frozen=True)
class Ops:
  """How a model computes each kind of operation; the defaults are the plain forms."""

  # Dense layers, attention's projections and the tied output: lax.dot_general's signature.
  dot_general: Callable[..., jax.Array] = jax.lax.dot_general
  # A LayerNorm module: flax.linen.LayerNorm's epsilon, scale_init, bias_init and name,
  # float32 results.
  layer_norm: Callable[..., nn.Module] = nn.LayerNorm
  # The exact (erf) GELU of BERT and ELECTRA.
  gelu: Callable[[jax.Array], jax.Array] = functools.partial(nn.gelu, approximate=False)
  # The attention weights' softmax over the last axis of [batch, heads, queries, keys].
  softmax: Callable[[jax.Array], jax.Array] = jax.nn.softmax
  # How a batch goes through attention, and through the stack of layers:
  # `run(compute, *inputs)`, whose inputs all have the batch as their first axis.
  run_attention: Callable[..., jax.Array] = whole_batch
  run_layers: Callable[..., jax.Array] = whole_batch
  # The tied output layer: `vocabulary_logits`' signature.
  vocabulary_logits: Callable[..., jax.Array] = vocabulary_logits
  # model.attention="dot_product": jax.nn.dot_product_attention's `implementation`.
  fused_attention: str | None = None
