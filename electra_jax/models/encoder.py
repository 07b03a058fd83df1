"""The BERT-style Transformer encoder that both ELECTRA networks are made of.

Post-LayerNorm blocks with exact (erf) GELU and LayerNorm epsilon 1e-12, as in
BERT and the original ELECTRA, so that weights move to and from Hugging Face
unchanged. Parameters are float32; `dtype` is the compute dtype.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


@dataclasses.dataclass(frozen=True)
class EncoderSizes:
  """The shape of one Transformer stack (the generator's or the discriminator's)."""

  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int


@dataclasses.dataclass(frozen=True)
class ModelSettings:
  """What every layer needs besides its sizes."""

  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  initializer_range: float = 0.02
  layer_norm_eps: float = 1e-12
  dtype: Dtype = jnp.float32

  def kernel_init(self) -> nn.initializers.Initializer:
    return nn.initializers.normal(self.initializer_range)

  def layer_norm(self, name: str) -> nn.LayerNorm:
    # float32 statistics whatever the compute dtype: bf16 variances lose too much.
    return nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=jnp.float32, name=name)

  def dense(self, features: int, name: str) -> nn.Dense:
    return nn.Dense(features, dtype=self.dtype, kernel_init=self.kernel_init(), name=name)


def gelu(x: jax.Array) -> jax.Array:
  """The exact erf GELU of BERT and ELECTRA (not the tanh approximation)."""
  return nn.gelu(x, approximate=False)


class SelfAttention(nn.Module):
  """Multi-head self-attention; padding keys are masked out."""

  sizes: EncoderSizes
  settings: ModelSettings

  @nn.compact
  def __call__(self, x: jax.Array, attention_mask: jax.Array, deterministic: bool) -> jax.Array:
    s = self.settings
    heads = self.sizes.num_heads
    head_dim = self.sizes.hidden_size // heads

    def project(name: str) -> jax.Array:
      return nn.DenseGeneral((heads, head_dim), dtype=s.dtype, kernel_init=s.kernel_init(),
                             name=name)(x)

    query, key, value = project("query"), project("key"), project("value")
    scores = jnp.einsum("bqhd,bkhd->bhqk", query * head_dim**-0.5, key)
    scores = jnp.where(attention_mask[:, None, None, :], scores.astype(jnp.float32),
                       jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1).astype(s.dtype)
    weights = nn.Dropout(s.attention_dropout_rate)(weights, deterministic=deterministic)
    context = jnp.einsum("bhqk,bkhd->bqhd", weights, value)
    return nn.DenseGeneral(self.sizes.hidden_size, axis=(-2, -1), dtype=s.dtype,
                           kernel_init=s.kernel_init(), name="output")(context)


class TransformerLayer(nn.Module):
  """Attention and feed-forward, each followed by dropout, residual and LayerNorm."""

  sizes: EncoderSizes
  settings: ModelSettings

  @nn.compact
  def __call__(self, x: jax.Array, attention_mask: jax.Array, deterministic: bool) -> jax.Array:
    s = self.settings
    dropout = nn.Dropout(s.dropout_rate)
    attended = SelfAttention(self.sizes, s, name="attention")(x, attention_mask, deterministic)
    x = s.layer_norm("attention_layer_norm")(x + dropout(attended, deterministic=deterministic))
    hidden = gelu(s.dense(self.sizes.intermediate_size, "intermediate")(x))
    out = s.dense(self.sizes.hidden_size, "output")(hidden)
    x = s.layer_norm("output_layer_norm")(x + dropout(out, deterministic=deterministic))
    return x.astype(s.dtype)


class Encoder(nn.Module):
  """Projects shared embeddings to this stack's width, then runs its layers.

  The projection exists only when the embedding size differs from the hidden
  size (ELECTRA's factorized embeddings), so its parameters match the original.
  """

  sizes: EncoderSizes
  settings: ModelSettings

  @nn.compact
  def __call__(self, embedded: jax.Array, attention_mask: jax.Array,
               deterministic: bool) -> jax.Array:
    x = embedded
    if x.shape[-1] != self.sizes.hidden_size:
      x = self.settings.dense(self.sizes.hidden_size, "embeddings_project")(x)
    for i in range(self.sizes.num_layers):
      x = TransformerLayer(self.sizes, self.settings, name=f"layer_{i}")(
          x, attention_mask, deterministic)
    return x


class SharedEmbeddings(nn.Module):
  """Word, position and token-type embeddings plus their LayerNorm.

  One instance serves the generator and the discriminator: ELECTRA shares these
  parameters between the two networks, and the generator's output layer is tied
  to the word embeddings through `attend`.
  """

  vocab_size: int
  embedding_size: int
  max_position_embeddings: int
  type_vocab_size: int
  settings: ModelSettings

  def setup(self):
    s = self.settings
    embed = lambda n, name: nn.Embed(n, self.embedding_size, dtype=s.dtype,
                                     embedding_init=s.kernel_init(), name=name)
    self.word_embeddings = embed(self.vocab_size, "word_embeddings")
    self.position_embeddings = embed(self.max_position_embeddings, "position_embeddings")
    self.token_type_embeddings = embed(self.type_vocab_size, "token_type_embeddings")
    self.layer_norm = s.layer_norm("layer_norm")
    self.dropout = nn.Dropout(s.dropout_rate)

  def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array,
               deterministic: bool) -> jax.Array:
    positions = jnp.arange(input_ids.shape[-1])[None, :]
    x = (self.word_embeddings(input_ids) + self.position_embeddings(positions) +
         self.token_type_embeddings(token_type_ids))
    x = self.layer_norm(x).astype(self.settings.dtype)
    return self.dropout(x, deterministic=deterministic)

  def attend(self, x: jax.Array) -> jax.Array:
    """Logits over the vocabulary from vectors of embedding size (tied output)."""
    return self.word_embeddings.attend(x)
