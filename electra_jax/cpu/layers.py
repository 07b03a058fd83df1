"""A CPU's forms of the layers' operations (`OPS`): the functions of models/ops.py, faster there.

Each computes what its plain form does, up to float rounding, with the same
parameters (tests/test_cpu_forms.py checks every one, and the whole step):

- dense layers' weight gradients as row-major products (`matmul.py`);
- LayerNorm with its gradient written out (`layer_norm.py`);
- GELU whose gradient recomputes erf from the input instead of keeping it;
- the softmax of a single head without its size-1 axis;
- attention, and for large batches the whole stack of layers, on slices of
  the batch side by side: XLA's CPU runtime runs each batched product and
  most reductions on one core, but independent operations in parallel;
- the vocabulary bias as one more column of the tied output matmul, so that
  adding it and summing its gradient are not passes of their own over the
  largest array of the step.
"""

from typing import Callable

import jax
import jax.numpy as jnp

from electra_jax.cpu import matmul, SCOPE
from electra_jax.cpu.layer_norm import LayerNorm
from electra_jax.models.ops import Ops

# Attention runs on this many slices of the batch side by side, and so do the
# layers when each slice holds MIN_TOKENS_PER_LAYER_SLICE tokens (attention within
# each layer then cuts its slice again).
BATCH_SLICES = 2
# Each slice of the layers is one more copy of them for XLA to compile (twice the
# compile time of ELECTRA-Small): below this many tokens a slice gains too little.
MIN_TOKENS_PER_LAYER_SLICE = 2048


@jax.custom_vjp
def gelu(x: jax.Array) -> jax.Array:
  """The exact erf GELU, x * Phi(x); its gradient recomputes Phi from x.

  One [tokens, intermediate] array less to write and read back, which on a
  CPU is worth more than the arithmetic.
  """
  return x * _normal_cdf(x)


def _normal_cdf(x: jax.Array) -> jax.Array:
  return 0.5 * (1.0 + jax.lax.erf(x * (2.0**-0.5)))


def _gelu_forward(x):
  return gelu(x), x


def _gelu_backward(x, grad):
  with jax.named_scope(SCOPE):
    # Without the barrier XLA merges this erf with the forward pass's identical one
    # and keeps it after all: two passes forward, one more array read backward.
    x = jax.lax.optimization_barrier(x)
    density = jnp.exp(-0.5 * x * x) * (2.0 * jnp.pi)**-0.5
    return (grad * (_normal_cdf(x) + x * density),)


gelu.defvjp(_gelu_forward, _gelu_backward)


def softmax(scores: jax.Array) -> jax.Array:
  """Softmax over the last axis of [batch, heads, queries, keys].

  With one head (the Small generator's) XLA's CPU code for the softmax
  gradient ran several times slower with the size-1 axis than without it.
  """
  if scores.shape[1] != 1:
    return jax.nn.softmax(scores, axis=-1)
  with jax.named_scope(SCOPE):
    return jax.nn.softmax(scores[:, 0], axis=-1)[:, None]


def in_batch_slices(compute: Callable[..., jax.Array], slices: int,
                    *inputs: jax.Array) -> jax.Array:
  """`compute(*inputs)` on `slices` slices of the batch apart, put back together.

  Row i goes to slice i mod `slices`, so a data-parallel device whose share of
  the batch divides keeps its own rows. Each slice draws its own dropout masks
  (flax gives each call a new key). A batch that does not divide runs in one piece.
  """
  batch = inputs[0].shape[0]
  if slices == 1 or batch % slices:
    return compute(*inputs)
  with jax.named_scope(SCOPE):
    parts = [compute(*(x.reshape(batch // slices, slices, *x.shape[1:])[:, i] for x in inputs))
             for i in range(slices)]
    return jnp.stack(parts, axis=1).reshape(batch, *parts[0].shape[1:])


def run_attention(compute: Callable[..., jax.Array], *inputs: jax.Array) -> jax.Array:
  return in_batch_slices(compute, BATCH_SLICES, *inputs)


def run_layers(compute: Callable[..., jax.Array], x: jax.Array, *inputs: jax.Array) -> jax.Array:
  """The layers on slices of the batch where each slice holds enough tokens."""
  tokens = x.shape[0] * x.shape[1]
  slices = BATCH_SLICES if tokens >= BATCH_SLICES * MIN_TOKENS_PER_LAYER_SLICE else 1
  return in_batch_slices(compute, slices, x, *inputs)


def folded_vocabulary_logits(x: jax.Array, table: jax.Array, bias: jax.Array, dtype,
                             dot_general: Callable = matmul.dot_general) -> jax.Array:
  """`vocabulary_logits` with the bias as one more input column (x gets a column of ones).

  The table's gradient comes from `matmul`, the table passed transposed.
  """
  with jax.named_scope(SCOPE):
    x = jnp.concatenate([x.astype(dtype), jnp.ones((*x.shape[:-1], 1), dtype)], axis=-1)
    table = jnp.concatenate([table, bias[:, None]], axis=-1)
    return dot_general(x, table.astype(dtype).T, (((x.ndim - 1,), (0,)), ((), ())),
                       preferred_element_type=jnp.float32)


OPS = Ops(dot_general=matmul.dot_general, layer_norm=LayerNorm, gelu=gelu, softmax=softmax,
          run_attention=run_attention, run_layers=run_layers,
          vocabulary_logits=folded_vocabulary_logits)
