"""LayerNorm for a CPU, with its gradient written out: fewer passes over the activations.

The same function and parameters (`scale`, `bias`) as `flax.linen.LayerNorm`,
computed in float32 whatever the input's dtype. Differentiating flax's
version makes XLA's CPU code keep a full-size broadcast of the scale and run
more passes over the activations than the textbook gradient needs.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from electra_jax.cpu import SCOPE


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float) -> jax.Array:
  """(x - mean) / sqrt(variance + epsilon) * scale + bias over the last axis (float32 x)."""
  return _forward(x, scale, bias, epsilon)[0]


def _forward(x, scale, bias, epsilon):
  with jax.named_scope(SCOPE):
    return _normalize(x, scale, bias, epsilon)


def _normalize(x, scale, bias, epsilon):
  # The variance as E[x^2] - E[x]^2, as flax computes it by default: XLA takes
  # both means in one pass over x, where the centred form needs a second.
  mean = x.mean(axis=-1, keepdims=True)
  variance = jnp.maximum((x * x).mean(axis=-1, keepdims=True) - mean * mean, 0.0)
  inverse_std = jax.lax.rsqrt(variance + epsilon)
  normalized = (x - mean) * inverse_std
  return normalized * scale + bias, (normalized, inverse_std, scale)


def _backward(epsilon, residuals, grad):
  del epsilon
  with jax.named_scope(SCOPE):
    return _gradients(residuals, grad)


def _gradients(residuals, grad):
  normalized, inverse_std, scale = residuals
  scaled = grad * scale
  grad_x = inverse_std * (scaled - scaled.mean(axis=-1, keepdims=True) -
                          normalized * (scaled * normalized).mean(axis=-1, keepdims=True))
  rows = tuple(range(grad.ndim - 1))
  return grad_x, (grad * normalized).sum(axis=rows), grad.sum(axis=rows)


layer_norm.defvjp(_forward, _backward)


class LayerNorm(nn.Module):
  """`flax.linen.LayerNorm`'s parameters and result (float32), with `layer_norm`'s gradient."""

  epsilon: float
  scale_init: nn.initializers.Initializer = nn.initializers.ones
  bias_init: nn.initializers.Initializer = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = x.shape[-1]
    scale = self.param("scale", self.scale_init, (features,), jnp.float32)
    bias = self.param("bias", self.bias_init, (features,), jnp.float32)
    return layer_norm(x.astype(jnp.float32), scale, bias, self.epsilon)
