"""The BERT-style Transformer encoder that both ELECTRA networks are made of.

Post-LayerNorm blocks with exact (erf) GELU and LayerNorm epsilon 1e-12, as in
BERT and the original ELECTRA, so that weights move to and from Hugging Face
unchanged. Parameters are float32; `dtype` is the compute dtype.

Every parameter carries logical axis names ("vocab", "embed", "hidden", "mlp",
"heads", "kv"; None for a dimension never split) and the main activations are
constrained by them ("batch", "length", "activation_*"). The config's
`mesh.rules` map these names onto the device mesh (sharding.py); without a
mesh they change nothing.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def partitioned(init: nn.initializers.Initializer, *axes: str | None
                ) -> nn.initializers.Initializer:
  """`init` whose parameter carries one logical axis name per dimension."""
  return nn.with_logical_partitioning(init, axes)


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

  def kernel_init(self, *axes: str | None) -> nn.initializers.Initializer:
    return partitioned(nn.initializers.normal(self.initializer_range), *axes)

  def layer_norm(self, name: str, axis: str) -> nn.LayerNorm:
    # float32 statistics whatever the compute dtype: bf16 variances lose too much.
    return nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=jnp.float32,
                        scale_init=partitioned(nn.initializers.ones, axis),
                        bias_init=partitioned(nn.initializers.zeros, axis), name=name)

  def dense(self, features: int, name: str, axes: tuple[str | None, str | None]) -> nn.Dense:
    """A dense layer whose kernel's (input, output) dimensions are named `axes`."""
    return nn.Dense(features, dtype=self.dtype, kernel_init=self.kernel_init(*axes),
                    bias_init=partitioned(nn.initializers.zeros, axes[1]), name=name)


ACTIVATION_EMBED = ("batch", "length", "activation_embed")
ACTIVATION_HIDDEN = ("batch", "length", "activation_hidden")
ACTIVATION_HEADS = ("batch", "length", "activation_heads", "kv")


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

    # nn.Einsum rather than nn.DenseGeneral (same parameters): DenseGeneral creates
    # its kernel flat, which flax's logical constraints reject under a mesh.
    def project(name: str) -> jax.Array:
      projected = nn.Einsum(
          (x.shape[-1], heads, head_dim), "bld,dhk->blhk", dtype=s.dtype,
          kernel_init=s.kernel_init("hidden", "heads", "kv"),
          bias_init=partitioned(nn.initializers.zeros, "heads", "kv"), name=name)(x)
      return nn.with_logical_constraint(projected, ACTIVATION_HEADS)

    query, key, value = project("query"), project("key"), project("value")
    scores = jnp.einsum("bqhd,bkhd->bhqk", query * head_dim**-0.5, key)
    scores = jnp.where(attention_mask[:, None, None, :], scores.astype(jnp.float32),
                       jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1).astype(s.dtype)
    weights = nn.Dropout(s.attention_dropout_rate)(weights, deterministic=deterministic)
    context = nn.with_logical_constraint(jnp.einsum("bhqk,bkhd->bqhd", weights, value),
                                         ACTIVATION_HEADS)
    return nn.Einsum((heads, head_dim, self.sizes.hidden_size), "blhk,hkd->bld", dtype=s.dtype,
                     kernel_init=s.kernel_init("heads", "kv", "hidden"),
                     bias_init=partitioned(nn.initializers.zeros, "hidden"),
                     name="output")(context)


class TransformerLayer(nn.Module):
  """Attention and feed-forward, each followed by dropout, residual and LayerNorm."""

  sizes: EncoderSizes
  settings: ModelSettings

  @nn.compact
  def __call__(self, x: jax.Array, attention_mask: jax.Array, deterministic: bool) -> jax.Array:
    s = self.settings
    dropout = nn.Dropout(s.dropout_rate)
    attended = SelfAttention(self.sizes, s, name="attention")(x, attention_mask, deterministic)
    x = s.layer_norm("attention_layer_norm", "hidden")(
        x + dropout(attended, deterministic=deterministic))
    hidden = gelu(s.dense(self.sizes.intermediate_size, "intermediate", ("hidden", "mlp"))(x))
    hidden = nn.with_logical_constraint(hidden, ("batch", "length", "activation_mlp"))
    out = s.dense(self.sizes.hidden_size, "output", ("mlp", "hidden"))(hidden)
    x = s.layer_norm("output_layer_norm", "hidden")(
        x + dropout(out, deterministic=deterministic))
    return nn.with_logical_constraint(x.astype(s.dtype), ACTIVATION_HIDDEN)


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
      x = self.settings.dense(self.sizes.hidden_size, "embeddings_project", ("embed", "hidden"))(x)
      x = nn.with_logical_constraint(x, ACTIVATION_HIDDEN)
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
    embed = lambda n, rows, name: nn.Embed(n, self.embedding_size, dtype=s.dtype,
                                           embedding_init=s.kernel_init(rows, "embed"), name=name)
    self.word_embeddings = embed(self.vocab_size, "vocab", "word_embeddings")
    # Positions and token types are few: their rows are never split.
    self.position_embeddings = embed(self.max_position_embeddings, None, "position_embeddings")
    self.token_type_embeddings = embed(self.type_vocab_size, None, "token_type_embeddings")
    self.layer_norm = s.layer_norm("layer_norm", "embed")
    self.dropout = nn.Dropout(s.dropout_rate)

  def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array,
               deterministic: bool) -> jax.Array:
    positions = jnp.arange(input_ids.shape[-1])[None, :]
    x = (self.word_embeddings(input_ids) + self.position_embeddings(positions) +
         self.token_type_embeddings(token_type_ids))
    x = self.layer_norm(x).astype(self.settings.dtype)
    x = nn.with_logical_constraint(x, ACTIVATION_EMBED)
    return self.dropout(x, deterministic=deterministic)

  def attend(self, x: jax.Array) -> jax.Array:
    """Logits over the vocabulary from vectors of embedding size (tied output)."""
    return self.word_embeddings.attend(x)
