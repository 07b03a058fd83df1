"""A minimal Flax ELECTRA: the yardstick for what our step costs on an accelerator.

The shapes, parameter count and objective of models/electra.py's
ElectraPretrainer, written as a Flax user would with flax.linen's own layers
and nothing of ours: nn.Embed (the tied output through `attend`), nn.Dense,
nn.LayerNorm, nn.Dropout, nn.gelu and nn.MultiHeadDotProductAttention.
`python -m electra_jax.compile --reference` compiles its train step in place
of ours, so that FLOPs, bytes accessed and memory can be compared on the same
slice (docs/tpu.md). It is not used for training: its parameters carry no
logical axis names, so every mesh axis but `data` replicates them.
"""

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from electra_jax import config as config_lib
from electra_jax.vocabulary import PAD_ID


class Layer(nn.Module):
  """Post-LayerNorm Transformer layer."""

  config: ml_collections.ConfigDict
  hidden: int
  heads: int
  intermediate: int

  @nn.compact
  def __call__(self, x, mask, deterministic):
    m = self.config.model
    dtype, init = jnp.dtype(m.dtype), nn.initializers.normal(m.initializer_range)
    # Attention dropout draws a mask per example and head, as BERT's and ELECTRA's do
    # (flax's default would share one mask across the batch and the heads).
    attended = nn.MultiHeadDotProductAttention(
        num_heads=self.heads, dtype=dtype, kernel_init=init, broadcast_dropout=False,
        dropout_rate=m.attention_dropout_rate)(x, mask=mask, deterministic=deterministic)
    x = nn.LayerNorm(m.layer_norm_eps)(
        x + nn.Dropout(m.dropout_rate)(attended, deterministic=deterministic))
    h = nn.gelu(nn.Dense(self.intermediate, dtype=dtype, kernel_init=init)(x), approximate=False)
    h = nn.Dense(self.hidden, dtype=dtype, kernel_init=init)(h)
    return nn.LayerNorm(m.layer_norm_eps)(
        x + nn.Dropout(m.dropout_rate)(h, deterministic=deterministic))


class Encoder(nn.Module):
  config: ml_collections.ConfigDict
  hidden: int
  layers: int
  heads: int
  intermediate: int

  @nn.compact
  def __call__(self, x, input_ids, deterministic):
    m = self.config.model
    if x.shape[-1] != self.hidden:
      x = nn.Dense(self.hidden, dtype=jnp.dtype(m.dtype))(x)
    mask = nn.make_attention_mask(input_ids != PAD_ID, input_ids != PAD_ID)
    for _ in range(self.layers):
      x = Layer(self.config, self.hidden, self.heads, self.intermediate)(x, mask, deterministic)
    return x


class ReferencePretrainer(nn.Module):
  """Generator and discriminator sharing their embeddings, as ElectraPretrainer."""

  config: ml_collections.ConfigDict

  def setup(self):
    m = self.config.model
    embed = lambda rows: nn.Embed(rows, m.embedding_size, dtype=jnp.dtype(m.dtype),
                                  embedding_init=nn.initializers.normal(m.initializer_range))
    self.word_embeddings = embed(m.vocab_size)
    self.position_embeddings = embed(m.max_position_embeddings)
    self.token_type_embeddings = embed(m.type_vocab_size)
    self.embeddings_norm = nn.LayerNorm(m.layer_norm_eps)
    self.dropout = nn.Dropout(m.dropout_rate)
    g = config_lib.generator_dims(self.config)
    self.generator = Encoder(self.config, g["hidden_size"], g["num_layers"], g["num_heads"],
                             g["intermediate_size"])
    self.generator_dense = nn.Dense(m.embedding_size, dtype=jnp.dtype(m.dtype))
    self.generator_norm = nn.LayerNorm(m.layer_norm_eps)
    self.output_bias = self.param("output_bias", nn.initializers.zeros, (m.vocab_size,))
    self.discriminator = Encoder(self.config, m.hidden_size, m.num_layers, m.num_heads,
                                 m.intermediate_size)
    self.discriminator_dense = nn.Dense(m.hidden_size, dtype=jnp.dtype(m.dtype))
    self.discriminator_prediction = nn.Dense(1)

  def embed(self, input_ids, token_type_ids, deterministic):
    positions = jnp.arange(input_ids.shape[-1])[None, :]
    x = (self.word_embeddings(input_ids) + self.position_embeddings(positions) +
         self.token_type_embeddings(token_type_ids))
    return self.dropout(self.embeddings_norm(x), deterministic=deterministic)

  def generator_logits(self, input_ids, token_type_ids, positions, deterministic=True):
    hidden = self.generator(self.embed(input_ids, token_type_ids, deterministic), input_ids,
                            deterministic)
    hidden = jnp.take_along_axis(hidden, positions[..., None], axis=1)
    x = self.generator_norm(nn.gelu(self.generator_dense(hidden), approximate=False))
    return self.word_embeddings.attend(x).astype(jnp.float32) + self.output_bias

  def discriminator_logits(self, input_ids, token_type_ids, deterministic=True,
                           attention_mask=None):
    del attention_mask  # the padding of `input_ids` masks attention here
    hidden = self.discriminator(self.embed(input_ids, token_type_ids, deterministic), input_ids,
                                deterministic)
    x = nn.gelu(self.discriminator_dense(hidden), approximate=False)
    return self.discriminator_prediction(x)[..., 0].astype(jnp.float32)

  def __call__(self, input_ids, token_type_ids, positions, deterministic=True):
    return (self.generator_logits(input_ids, token_type_ids, positions, deterministic),
            self.discriminator_logits(input_ids, token_type_ids, deterministic))


def build(config: ml_collections.ConfigDict) -> ReferencePretrainer:
  if config.objective != "electra":
    raise ValueError("the reference model is ELECTRA's; set --config.objective=electra")
  return ReferencePretrainer(ml_collections.FrozenConfigDict(config))
