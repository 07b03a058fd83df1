"""The BERT-style Transformer encoder that both ELECTRA networks are made of.

Post-LayerNorm blocks with exact (erf) GELU and LayerNorm epsilon 1e-12, as in
BERT and the original ELECTRA, so that weights move to and from Hugging Face
unchanged.

Mixed precision: parameters are always float32 (the optimizer's master copy);
`dtype` is the compute dtype of the matmuls. With bfloat16 the matmuls take
bfloat16 inputs, while the embedding sums, the residual stream, LayerNorm,
the attention softmax and every logit stay float32.

Every parameter carries logical axis names ("vocab", "embed", "hidden", "mlp",
"heads", "kv"; None for a dimension never split) and the main activations are
constrained by them ("batch", "length", "activation_*"). The config's
`mesh.rules` map these names onto the device mesh (sharding.py); without a
mesh they change nothing.
"""

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from electra_jax.models import matmul
from electra_jax.models.dropout import Dropout
from electra_jax.models.layer_norm import LayerNorm

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
  attention: str = "einsum"  # or "dot_product": jax.nn.dot_product_attention (cuDNN on GPU)
  remat: str = "none"  # recompute in the backward pass: "full" layers or all but "dots"

  def kernel_init(self, *axes: str | None) -> nn.initializers.Initializer:
    return partitioned(nn.initializers.normal(self.initializer_range), *axes)

  def layer_norm(self, name: str, axis: str) -> LayerNorm:
    # float32 in and out whatever the compute dtype: bf16 variances lose too much.
    return LayerNorm(epsilon=self.layer_norm_eps,
                     scale_init=partitioned(nn.initializers.ones, axis),
                     bias_init=partitioned(nn.initializers.zeros, axis), name=name)

  def dense(self, features: int, name: str, axes: tuple[str | None, str | None],
            dtype: Dtype | None = None) -> nn.Dense:
    """A dense layer whose kernel's (input, output) dimensions are named `axes`.

    It computes in the compute dtype unless `dtype` says otherwise.
    """
    return nn.Dense(features, dtype=dtype or self.dtype, kernel_init=self.kernel_init(*axes),
                    dot_general=matmul.dot_general,
                    bias_init=partitioned(nn.initializers.zeros, axes[1]), name=name)


ACTIVATION_EMBED = ("batch", "length", "activation_embed")
ACTIVATION_HIDDEN = ("batch", "length", "activation_hidden")
ACTIVATION_HEADS = ("batch", "length", "activation_heads", "kv")


@jax.custom_vjp
def gelu(x: jax.Array) -> jax.Array:
  """The exact erf GELU of BERT and ELECTRA (not the tanh approximation).

  Written with erf, as transformers does: on CPU it is 2.5x faster than flax's
  erfc form (nn.gelu(approximate=False)), and differs from it by < 1e-6. Its
  gradient recomputes erf from the input instead of keeping it from the forward
  pass: one [tokens, intermediate] array less to write and read back, which on
  a CPU is worth more than the arithmetic (3% of an ELECTRA-Small step).
  """
  return x * _normal_cdf(x)


def _normal_cdf(x: jax.Array) -> jax.Array:
  return 0.5 * (1.0 + jax.lax.erf(x * (2.0**-0.5)))


def _gelu_forward(x):
  return gelu(x), x


def _gelu_backward(x, grad):
  # Without the barrier XLA merges this erf with the forward pass's identical one
  # and keeps it after all: two passes forward, one more array read backward.
  x = jax.lax.optimization_barrier(x)
  density = jnp.exp(-0.5 * x * x) * (2.0 * jnp.pi)**-0.5
  return (grad * (_normal_cdf(x) + x * density),)


gelu.defvjp(_gelu_forward, _gelu_backward)


class HeadsProjection(nn.Module):
  """The parameters of one of attention's query, key and value projections.

  Their names and shapes are nn.Einsum's ("kernel" [hidden, heads, head size]
  and "bias" [heads, head size]); `SelfAttention` applies all three together.
  """

  shape: tuple[int, int, int]
  settings: ModelSettings

  @nn.compact
  def __call__(self) -> tuple[jax.Array, jax.Array]:
    kernel = self.param("kernel", self.settings.kernel_init("hidden", "heads", "kv"),
                        self.shape, jnp.float32)
    bias = self.param("bias", partitioned(nn.initializers.zeros, "heads", "kv"), self.shape[1:],
                      jnp.float32)
    return kernel, bias


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

    # Query, key and value come from one product with their kernels side by side
    # (ELECTRA-Small's CPU step 2.6% faster than three products a third as wide).
    # The three keep their own parameters, as in BERT and Hugging Face.
    kernels, biases = zip(*(HeadsProjection((hidden, heads, head_dim), s, name=name)()
                            for name in ("query", "key", "value")))
    # [hidden, heads x 3 x head size]: heads outermost, so tensor parallelism splits it.
    kernel = jnp.stack(kernels, axis=2).reshape(hidden, -1)
    rows = x.reshape(-1, hidden).astype(s.dtype)
    projected = matmul.dot_general(rows, kernel.astype(s.dtype), (((1,), (0,)), ((), ())))
    projected = (projected.reshape(*x.shape[:-1], heads, 3, head_dim) +
                 jnp.stack(biases, axis=1).astype(s.dtype))
    query, key, value = (nn.with_logical_constraint(projected[..., i, :], ACTIVATION_HEADS)
                         for i in range(3))
    if s.attention == "dot_product":
      context = jax.nn.dot_product_attention(
          query, key, value, mask=attention_mask[:, None, None, :],
          implementation=fused_attention_implementation(s.dtype))
    else:
      dropout = Dropout(s.attention_dropout_rate)
      attend = lambda *inputs: einsum_attention(
          *inputs, lambda w: dropout(w, deterministic=deterministic))
      context = in_batch_slices(attend, cpu_batch_slices(), query, key, value, attention_mask)
    context = nn.with_logical_constraint(context, ACTIVATION_HEADS)
    return nn.Einsum((heads, head_dim, self.sizes.hidden_size), "blhk,hkd->bld", dtype=s.dtype,
                     kernel_init=s.kernel_init("heads", "kv", "hidden"),
                     bias_init=partitioned(nn.initializers.zeros, "hidden"),
                     name="output")(context)


# On CPU, attention runs on this many slices of the batch side by side, and so do
# the layers when each slice holds MIN_TOKENS_PER_LAYER_SLICE tokens (attention
# within each layer then cuts its slice again; see `in_batch_slices`).
CPU_BATCH_SLICES = 2
# Each slice of the layers is one more copy of them for XLA to compile (ELECTRA-Small
# 34 -> 69 s): below this many tokens a slice gains too little to repay it.
# Measured on two cores: Small at 32 x 128 (2,048 tokens a slice) and 128 x 128 2%
# faster steps, tiny at 32 x 128 5%; Small at 8 x 512 (2,048) and Base at 8 x 128
# (512) neither faster nor slower.
MIN_TOKENS_PER_LAYER_SLICE = 2048


def cpu_batch_slices() -> int:
  """How many slices of the batch `in_batch_slices` cuts: CPU_BATCH_SLICES on CPU, else 1."""
  return CPU_BATCH_SLICES if jax.default_backend() == "cpu" else 1


def in_batch_slices(compute: Callable[..., jax.Array], slices: int,
                    *inputs: jax.Array) -> jax.Array:
  """`compute(*inputs)` on `slices` slices of the batch apart, put back together.

  XLA's CPU runtime runs each of attention's batched products, and most
  reductions, on one core whatever the threads, but runs independent
  operations side by side: with the batch in slices, the slices' products,
  softmaxes and LayerNorms each take a core. On two cores, ELECTRA-Small's step
  at 32 x 128 took 2.359 s with attention in one piece and 2.277 s in two
  slices; with the layers in two slices as well, each cutting its attention
  in two again, 2.354 -> 2.307 s and 2.381 -> 2.298 s (benchmarks/README.md).

  Row i goes to slice i mod `slices`, so a data-parallel device whose share of
  the batch divides keeps its own rows. Each slice draws its own dropout masks.
  A batch that does not divide runs in one piece.
  """
  batch = inputs[0].shape[0]
  if slices == 1 or batch % slices:
    return compute(*inputs)
  parts = [compute(*(x.reshape(batch // slices, slices, *x.shape[1:])[:, i] for x in inputs))
           for i in range(slices)]
  return jnp.stack(parts, axis=1).reshape(batch, *parts[0].shape[1:])


def einsum_attention(query: jax.Array, key: jax.Array, value: jax.Array,
                     attention_mask: jax.Array,
                     dropout: Callable[[jax.Array], jax.Array]) -> jax.Array:
  """Softmax attention written out, with `dropout` on the attention weights.

  Scores and softmax are float32 whatever the inputs' dtype. The products run
  heads-major ([batch, heads, length, head size]), transposed here: given the
  [batch, length, heads, head size] inputs as they are, XLA's CPU layouts made
  them 20% slower (about 30 ms of an ELECTRA-Small step).
  """
  query, key, value = (jnp.swapaxes(x, 1, 2) for x in (query, key, value))
  scores = jnp.einsum("bhqd,bhkd->bhqk", query * query.shape[-1]**-0.5, key,
                      preferred_element_type=jnp.float32)
  scores = jnp.where(attention_mask[:, None, None, :], scores, jnp.finfo(jnp.float32).min)
  if scores.shape[1] == 1:
    # One head (the Small generator's): XLA's CPU code for the softmax gradient ran
    # 5x slower with the size-1 dimension than without it.
    weights = jax.nn.softmax(scores[:, 0], axis=-1)[:, None]
  else:
    # Not reshaped to [batch, heads x queries, keys] as above: with several heads XLA
    # then kept a second copy of the weights (0.4 GiB more for Small's 4 heads at
    # 8 x 512) and ran 15% slower.
    weights = jax.nn.softmax(scores, axis=-1)
  weights = dropout(weights.astype(value.dtype))
  return jnp.swapaxes(jnp.einsum("bhqk,bhkd->bhqd", weights, value), 1, 2)


def fused_attention_implementation(dtype: Dtype) -> str | None:
  """cuDNN's fused attention on NVIDIA GPUs in 16-bit floats; elsewhere XLA's.

  jax.nn.dot_product_attention has no dropout: model.attention="dot_product"
  needs model.attention_dropout_rate=0 (config.py checks).
  """
  half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
  return "cudnn" if half and jax.default_backend() == "gpu" else None


# model.remat: what the backward pass recomputes instead of keeping from the forward.
REMAT_POLICIES = {
    "full": None,  # everything inside a layer: only its input is kept
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # all but the dense layers
}


class TransformerLayer(nn.Module):
  """Attention and feed-forward, each followed by dropout, residual and LayerNorm."""

  sizes: EncoderSizes
  settings: ModelSettings

  @nn.compact
  def __call__(self, x: jax.Array, attention_mask: jax.Array, deterministic: bool) -> jax.Array:
    s = self.settings
    dropout = Dropout(s.dropout_rate)
    attended = SelfAttention(self.sizes, s, name="attention")(x, attention_mask, deterministic)
    x = s.layer_norm("attention_layer_norm", "hidden")(
        x + dropout(attended, deterministic=deterministic))
    # The feed-forward runs on the tokens as rows of one matrix: on CPU the step was
    # 11% faster than with [batch, length, features] arrays (XLA transposed those).
    rows = x.reshape(-1, x.shape[-1])
    hidden = gelu(s.dense(self.sizes.intermediate_size, "intermediate", ("hidden", "mlp"))(rows))
    hidden = nn.with_logical_constraint(hidden, ("batch", "activation_mlp"))
    out = s.dense(self.sizes.hidden_size, "output", ("mlp", "hidden"))(hidden).reshape(x.shape)
    x = s.layer_norm("output_layer_norm", "hidden")(
        x + dropout(out, deterministic=deterministic))
    return nn.with_logical_constraint(x, ACTIVATION_HIDDEN)


class Encoder(nn.Module):
  """Projects shared embeddings to this stack's width, then runs its layers.

  The projection exists only when the embedding size differs from the hidden
  size (ELECTRA's factorized embeddings), so its parameters match the original.
  On CPU, large batches run the layers on slices of the batch side by side
  (`in_batch_slices`).
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

    slices = cpu_batch_slices()
    if x.shape[0] * x.shape[1] < slices * MIN_TOKENS_PER_LAYER_SLICE:
      slices = 1
    return in_batch_slices(run_layers, slices, x, attention_mask)


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
    # Positions and token types are few: their rows are never split.
    self.position_embeddings = embed(self.max_position_embeddings, None, "position_embeddings")
    self.token_type_embeddings = embed(self.type_vocab_size, None, "token_type_embeddings")
    self.layer_norm = s.layer_norm("layer_norm", "embed")
    self.dropout = Dropout(s.dropout_rate)

  def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array,
               deterministic: bool) -> jax.Array:
    positions = jnp.arange(input_ids.shape[-1])[None, :]
    x = (self.word_embeddings(input_ids) + self.position_embeddings(positions) +
         self.token_type_embeddings(token_type_ids))
    x = nn.with_logical_constraint(self.layer_norm(x), ACTIVATION_EMBED)
    return self.dropout(x, deterministic=deterministic)

  def attend(self, x: jax.Array, bias: jax.Array) -> jax.Array:
    """float32 logits x @ word_embeddings^T + bias over the vocabulary (tied output).

    The bias rides in the matmul as one more input column (x gets a column of
    ones): adding it, and summing its gradient, would each be one more pass over
    the [positions, vocabulary] logits, the largest array of the step. On CPU the
    table's gradient comes from `matmul` in its fast orientation: XLA's own
    transposed that largest array first (20 ms of an ELECTRA-Small step).
    """
    dtype = self.settings.dtype
    x = jnp.concatenate([x.astype(dtype), jnp.ones((*x.shape[:-1], 1), dtype)], axis=-1)
    table = jnp.concatenate([self.word_embeddings.embedding, bias[:, None]], axis=-1)
    return matmul.dot_general(x, table.astype(dtype).T, (((x.ndim - 1,), (0,)), ((), ())),
                              preferred_element_type=jnp.float32)
