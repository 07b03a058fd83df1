"""Dense layers' matmul, with the weight gradient in the orientation a CPU runs fastest.

Autodiff writes the weight gradient of y = x @ w as x^T @ dy, a product over
the token axis of both operands. XLA's CPU matmul (YNNPACK) runs that at full
speed when the result's minor dimension is the wider one, and at half speed
otherwise, as for the feed-forward's output layer ([1024, 256] in
ELECTRA-Small): there (dy^T @ x)^T gives the same numbers twice as fast, the
transpose being a copy of the small [out, in] result. This took 0.11 s off a
2.8 s ELECTRA-Small step on one CPU core (benchmarks/README.md). The tied output
embeddings use it too, their [vocab, embed] table passed transposed. GPUs and
TPUs choose matmul layouts themselves, so there `dot_general` is XLA's own.
"""

import jax
import jax.numpy as jnp


@jax.custom_vjp
def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
  """x @ w for x [..., in] and w [in, out]."""
  return x @ w


def _forward(x, w):
  return matmul(x, w), (x, w)


def _backward(residuals, grad):
  x, w = residuals
  x_rows, grad_rows = x.reshape(-1, x.shape[-1]), grad.reshape(-1, grad.shape[-1])
  # The barriers keep XLA from folding a transpose, ours or the caller's (a
  # tied `w` passed in transposed), back into the product's orientation.
  if w.shape[0] > w.shape[1]:
    grad_w = jax.lax.optimization_barrier(jnp.einsum("to,ti->oi", grad_rows, x_rows)).T
  else:
    grad_w = jax.lax.optimization_barrier(jnp.einsum("ti,to->io", x_rows, grad_rows))
  return grad @ w.T, grad_w


matmul.defvjp(_forward, _backward)


def dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers, precision=None,
                preferred_element_type=None) -> jax.Array:
  """`jax.lax.dot_general` for `flax.linen.Dense(dot_general=...)`: `matmul` on CPU."""
  (lhs_contracting, rhs_contracting), batch = dimension_numbers
  dense = (tuple(lhs_contracting) == (lhs.ndim - 1,) and tuple(rhs_contracting) == (0,)
           and batch == ((), ()) and rhs.ndim == 2 and lhs.dtype == rhs.dtype)
  if (dense and precision is None and preferred_element_type in (None, lhs.dtype)
      and jax.default_backend() == "cpu"):
    return matmul(lhs, rhs)
  return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision, preferred_element_type)
