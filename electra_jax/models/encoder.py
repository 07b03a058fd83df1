"""The BERT-style Transformer encoder that both ELECTRA networks are made of.

By default post-LayerNorm blocks with exact (erf) GELU, absolute position
embeddings, biases and LayerNorm epsilon 1e-12, as in BERT and the original
ELECTRA, so that weights move to and from Hugging Face unchanged. ModernBERT's
choices (arXiv 2412.13663) are settings of their own: rotary position
embeddings on queries and keys (no absolute table), a GeGLU feed-forward
(gelu(x W) * (x V)), pre-LayerNorm blocks with a final LayerNorm, and linear
layers without biases.

Mixed precision: parameters are always float32 (the optimizer's master copy);
`dtype` is the compute dtype of the matmuls. With bfloat16 the matmuls take
bfloat16 inputs, while the embedding sums, the residual stream, LayerNorm,
the attention softmax and every logit stay float32.

Every parameter carries logical axis names ("vocab", "embed", "hidden", "mlp",
"heads", "kv"; None for a dimension never split) and the main activations are
constrained by them ("batch", "length", "activation_*"). The config's
`mesh.rules` map these names onto the device mesh (sharding.py); without a
mesh they change nothing.

The operations themselves (matmul, LayerNorm, GELU, softmax, how a batch goes
through attention and the layers) come from `ModelSettings.ops`: the plain
forms by default, a CPU's own where the step is compiled for one (models/ops.py).
"""

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from electra_jax.models.dropout import Dropout
from electra_jax.models.ops import Ops

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
  attention: str = "einsum"  # or "dot_product": jax.nn.dot_product_attention
  remat: str = "none"  # recompute in the backward pass: "full" layers or all but "dots"
  ops: Ops = Ops()  # the forms of the operations, chosen for the target devices
  # The backbone (model.position_embedding, .feed_forward, .norm_position, .use_bias).
  position_embedding: str = "absolute"  # or "rotary"
  feed_forward: str = "gelu"  # or "geglu"
  norm_position: str = "post"  # or "pre"
  use_bias: bool = True

  def kernel_init(self, *axes: str | None) -> nn.initializers.Initializer:
    return partitioned(nn.initializers.normal(self.initializer_range), *axes)

  def layer_norm(self, name: str, axis: str) -> nn.Module:
    # float32 in and out whatever the compute dtype: bf16 variances lose too much.
    return self.ops.layer_norm(epsilon=self.layer_norm_eps,
                               scale_init=partitioned(nn.initializers.ones, axis),
                               bias_init=partitioned(nn.initializers.zeros, axis), name=name)

  def dense(self, features: int, name: str, axes: tuple[str | None, str | None],
            dtype: Dtype | None = None) -> nn.Dense:
    """A dense layer whose kernel's (input, output) dimensions are named `axes`.

    It computes in the compute dtype unless `dtype` says otherwise.
    """
    return nn.Dense(features, dtype=dtype or self.dtype, kernel_init=self.kernel_init(*axes),
                    dot_general=self.ops.dot_general, use_bias=self.use_bias,
                    bias_init=partitioned(nn.initializers.zeros, axes[1]), name=name)


ACTIVATION_EMBED = ("batch", "length", "activation_embed")
ACTIVATION_HIDDEN = ("batch", "length", "activation_hidden")
ACTIVATION_MLP = ("batch", "length", "activation_mlp")
ACTIVATION_HEADS = ("batch", "length", "activation_heads", "kv")


class HeadsProjection(nn.Module):
  """The parameters of one of attention's query, key and value projections.

  Their names and shapes are nn.Einsum's ("kernel" [hidden, heads, head size]
  and "bias" [heads, head size]); `SelfAttention` applies all three together.
  """

  shape: tuple[int, int, int]
  settings: ModelSettings

  @nn.compact
  def __call__(self) -> tuple[jax.Array, jax.Array | None]:
    kernel = self.param("kernel", self.settings.kernel_init("hidden", "heads", "kv"),
                        self.shape, jnp.float32)
    if not self.settings.use_bias:
      return kernel, None
    bias = self.param("bias", partitioned(nn.initializers.zeros, "heads", "kv"), self.shape[1:],
                      jnp.float32)
    return kernel, bias


ROTARY_BASE = 10_000.0  # RoFormer's wavelength base


def rotary(x: jax.Array) -> jax.Array:
  """Rotary position embedding (RoFormer, arXiv 2104.09864) of [batch, length, heads, size]:
  feature i and i + size/2 turn by position x base^(-2i/size), in float32, as in GPT-NeoX."""
  half = x.shape[-1] // 2
  frequencies = ROTARY_BASE**(-jnp.arange(half, dtype=jnp.float32) / half)
  angles = jnp.arange(x.shape[1], dtype=jnp.float32)[:, None] * frequencies
  cos, sin = (f(angles)[None, :, None, :] for f in (jnp.cos, jnp.sin))
  first, second = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([first * cos - second * sin, second * cos + first * sin],
                         axis=-1).astype(x.dtype)


class SelfAttention(nn.Module):
  """Multi-head self-attention; padding keys are masked out."""

  sizes: EncoderSizes
  settings: ModelSettings

  @nn.compact
  def __call__(self, x: jax.Array, attention_mask: jax.Array, deterministic: bool) -> jax.Array:
    s = self.settings
    heads = self.sizes.num_heads
    head_dim = self.sizes.hidden_size // heads
    hidden = x.shape[-1]

    # Query, key and value come from one product with their kernels side by side;
    # the three keep their own parameters, as in BERT and Hugging Face.
    kernels, biases = zip(*(HeadsProjection((hidden, heads, head_dim), s, name=name)()
                            for name in ("query", "key", "value")))
    # [hidden, heads x 3 x head size]: heads outermost, so tensor parallelism splits it.
    kernel = jnp.stack(kernels, axis=2).reshape(hidden, -1)
    projected = s.ops.dot_general(x.astype(s.dtype), kernel.astype(s.dtype),
                                  (((x.ndim - 1,), (0,)), ((), ())))
    projected = projected.reshape(*x.shape[:-1], heads, 3, head_dim)
    if s.use_bias:
      projected = projected + jnp.stack(biases, axis=1).astype(s.dtype)
    query, key, value = (nn.with_logical_constraint(projected[..., i, :], ACTIVATION_HEADS)
                         for i in range(3))
    if s.position_embedding == "rotary":
      query, key = rotary(query), rotary(key)
    if s.attention == "dot_product":
      context = jax.nn.dot_product_attention(query, key, value,
                                             mask=attention_mask[:, None, None, :],
                                             implementation=s.ops.fused_attention)
    else:
      dropout = Dropout(s.attention_dropout_rate)
      attend = lambda *inputs: einsum_attention(
          *inputs, s.ops.softmax, lambda w: dropout(w, deterministic=deterministic))
      context = s.ops.run_attention(attend, query, key, value, attention_mask)
    context = nn.with_logical_constraint(context, ACTIVATION_HEADS)
    return nn.Einsum((heads, head_dim, self.sizes.hidden_size), "blhk,hkd->bld", dtype=s.dtype,
                     kernel_init=s.kernel_init("heads", "kv", "hidden"), use_bias=s.use_bias,
                     bias_init=partitioned(nn.initializers.zeros, "hidden"),
                     name="output")(context)


def einsum_attention(query: jax.Array, key: jax.Array, value: jax.Array,
                     attention_mask: jax.Array, softmax: Callable[[jax.Array], jax.Array],
                     dropout: Callable[[jax.Array], jax.Array]) -> jax.Array:
  """Softmax attention written out, with `dropout` on the attention weights.

  Scores and softmax are float32 whatever the inputs' dtype; the products run
  heads-major ([batch, heads, length, head size]).
  """
  query, key, value = (jnp.swapaxes(x, 1, 2) for x in (query, key, value))
  scores = jnp.einsum("bhqd,bhkd->bhqk", query * query.shape[-1]**-0.5, key,
                      preferred_element_type=jnp.float32)
  scores = jnp.where(attention_mask[:, None, None, :], scores, jnp.finfo(jnp.float32).min)
  weights = dropout(softmax(scores).astype(value.dtype))
  return jnp.swapaxes(jnp.einsum("bhqk,bhkd->bhqd", weights, value), 1, 2)


# model.remat: what the backward pass recomputes instead of keeping from the forward.
REMAT_POLICIES = {
    "full": None,  # everything inside a layer: only its input is kept
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # all but the dense layers
}


class TransformerLayer(nn.Module):
  """Attention and feed-forward, each with dropout and a residual connection, and a LayerNorm
  after the sum (post, BERT's) or before the sublayer (pre)."""

  sizes: EncoderSizes
  settings: ModelSettings

  @nn.compact
  def __call__(self, x: jax.Array, attention_mask: jax.Array, deterministic: bool) -> jax.Array:
    s = self.settings
    dropout = Dropout(s.dropout_rate)
    attention = SelfAttention(self.sizes, s, name="attention")

    def feed_forward(h: jax.Array) -> jax.Array:
      """GELU(h W) V, or with GeGLU (gelu(h W) * (h U)) V; its layers are this layer's."""
      up = lambda name: s.dense(self.sizes.intermediate_size, name, ("hidden", "mlp"))(h)
      hidden = s.ops.gelu(up("intermediate"))
      if s.feed_forward == "geglu":
        hidden = hidden * up("intermediate_gate")
      hidden = nn.with_logical_constraint(hidden, ACTIVATION_MLP)
      return s.dense(self.sizes.hidden_size, "output", ("mlp", "hidden"))(hidden)

    sublayers = ((lambda h: attention(h, attention_mask, deterministic), "attention_layer_norm"),
                 (feed_forward, "output_layer_norm"))
    for sublayer, norm_name in sublayers:
      norm = s.layer_norm(norm_name, "hidden")
      if s.norm_position == "pre":
        x = x + dropout(sublayer(norm(x)), deterministic=deterministic)
      else:
        x = norm(x + dropout(sublayer(x), deterministic=deterministic))
    return nn.with_logical_constraint(x, ACTIVATION_HIDDEN)


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
    layer = TransformerLayer
    if self.settings.remat != "none":
      # Argument 3 (counting the module) is `deterministic`, a Python bool.
      layer = nn.remat(TransformerLayer, static_argnums=(3,),
                       policy=REMAT_POLICIES[self.settings.remat])
    layers = [layer(self.sizes, self.settings, name=f"layer_{i}")
              for i in range(self.sizes.num_layers)]

    def run_layers(x: jax.Array, attention_mask: jax.Array) -> jax.Array:
      for each in layers:
        x = each(x, attention_mask, deterministic)
      return x

    x = self.settings.ops.run_layers(run_layers, x, attention_mask)
    if self.settings.norm_position == "pre":  # the residual stream is never normalized else
      x = self.settings.layer_norm("final_layer_norm", "hidden")(x)
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
    # Looked up and summed in float32; the projection or first layer casts them.
    embed = lambda n, rows, name: nn.Embed(n, self.embedding_size, dtype=jnp.float32,
                                           embedding_init=s.kernel_init(rows, "embed"), name=name)
    self.word_embeddings = embed(self.vocab_size, "vocab", "word_embeddings")
    # Positions and token types are few: their rows are never split. Rotary
    # positions turn queries and keys instead (SelfAttention).
    if s.position_embedding == "absolute":
      self.position_embeddings = embed(self.max_position_embeddings, None,
                                       "position_embeddings")
    self.token_type_embeddings = embed(self.type_vocab_size, None, "token_type_embeddings")
    self.layer_norm = s.layer_norm("layer_norm", "embed")
    self.dropout = Dropout(s.dropout_rate)

  def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array, deterministic: bool,
               word_residual: jax.Array | None = None) -> jax.Array:
    """Embedded tokens; with `word_residual` (GDES, the discriminator's own rows for
    `input_ids`), the word table's rows pass no gradient back and the residual's are added."""
    positions = jnp.arange(input_ids.shape[-1])[None, :]
    words = self.word_embeddings(input_ids)
    if word_residual is not None:
      words = jax.lax.stop_gradient(words) + word_residual
    x = words + self.token_type_embeddings(token_type_ids)
    if self.settings.position_embedding == "absolute":
      x = x + self.position_embeddings(positions)
    x = nn.with_logical_constraint(self.layer_norm(x), ACTIVATION_EMBED)
    return self.dropout(x, deterministic=deterministic)

  def attend(self, x: jax.Array, bias: jax.Array) -> jax.Array:
    """float32 logits x @ word_embeddings^T + bias over the vocabulary (tied output)."""
    s = self.settings
    return s.ops.vocabulary_logits(x, self.word_embeddings.embedding, bias, s.dtype)
