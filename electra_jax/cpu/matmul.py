"""Dense layers' matmul for a CPU: the weight gradient as a row-major product.

Autodiff writes the weight gradient of y = x @ w as x^T @ dy, a product over
the token axis of both operands. XLA's CPU matmuls (YNNPACK's and oneDNN's)
run such a product well below their speed on a plain row-major product, so
here the narrower operand is transposed into a copy first. The tied output
embeddings use it too, their [vocab, embed] table passed transposed.
"""

import jax
import jax.numpy as jnp

from electra_jax.cpu import SCOPE

# Above this width ratio a weight gradient keeps XLA's product (see `_weight_gradient`).
_WIDE_OUTPUT_RATIO = 16


@jax.custom_vjp
def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
  """x @ w for x [..., in] and w [in, out], computed on the tokens as rows of one matrix.

  XLA's CPU code transposed [batch, length, features] operands first.
  """
  return (_rows(x) @ w).reshape(*x.shape[:-1], w.shape[1])


def _rows(x: jax.Array) -> jax.Array:
  return x.reshape(-1, x.shape[-1])


def _forward(x, w):
  return matmul(x, w), (x, w)


def _backward(residuals, grad):
  with jax.named_scope(SCOPE):
    x, w = residuals
    x_rows, grad_rows = _rows(x), _rows(grad)
    return (grad_rows @ w.T).reshape(x.shape), _weight_gradient(x_rows, grad_rows)


def _weight_gradient(x_rows: jax.Array, grad_rows: jax.Array) -> jax.Array:
  """x^T @ dy [in, out] from [tokens, in] and [tokens, out], as a plain row-major product.

  The narrower of the two is transposed into a copy (a few MB) that becomes the
  product's left operand, so the product contracts the left's minor axis with
  the right's major one: the fastest case of XLA's CPU matmuls. Very wide
  outputs (the tied vocabulary, over `_WIDE_OUTPUT_RATIO` times its input) run
  faster as XLA's own product over the token axis, with the result's minor
  axis the wide one. The barriers keep XLA from folding a transpose, ours or
  the caller's (a tied weight passed in transposed), back into the product.
  """
  barrier = jax.lax.optimization_barrier
  narrow, wide = sorted((x_rows.shape[1], grad_rows.shape[1]))
  input_is_wider = x_rows.shape[1] > grad_rows.shape[1]
  if wide > _WIDE_OUTPUT_RATIO * narrow:
    if input_is_wider:
      return barrier(jnp.einsum("to,ti->oi", grad_rows, x_rows)).T
    return barrier(jnp.einsum("ti,to->io", x_rows, grad_rows))
  if input_is_wider:
    return barrier(barrier(grad_rows.T) @ x_rows).T
  return barrier(x_rows.T) @ grad_rows


matmul.defvjp(_forward, _backward)


def dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers, precision=None,
                preferred_element_type=None) -> jax.Array:
  """`jax.lax.dot_general`, with `matmul` for dense layers' products ([..., in] x [in, out])."""
  (lhs_contracting, rhs_contracting), batch = dimension_numbers
  dense = (tuple(lhs_contracting) == (lhs.ndim - 1,) and tuple(rhs_contracting) == (0,)
           and batch == ((), ()) and rhs.ndim == 2 and lhs.dtype == rhs.dtype)
  if dense and precision is None and preferred_element_type in (None, lhs.dtype):
    return matmul(lhs, rhs)
  return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision, preferred_element_type)
