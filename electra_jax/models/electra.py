"""ELECTRA's generator and discriminator around one set of shared embeddings.

The parameter tree makes the sharing explicit:

  embeddings          word / position / token-type embeddings + LayerNorm (both)
  generator           its projection and layers
  generator_head      its MLM head (output tied to the word embeddings)
  discriminator       its projection and layers
  discriminator_head  its replaced-token-detection head
  discriminator_embeddings  with electra.embedding_sharing "none", the
                      discriminator's own embeddings (`embeddings` are then the
                      generator's); with "gdes", only its residual word table

GDES (DeBERTaV3, arXiv 2111.09543): the discriminator embeds a token as the
shared word table's row, through a stop-gradient, plus its residual table's
row; the generator's MLM loss alone trains the shared table, so the two
losses no longer pull the same embeddings in different directions.
`discriminator_embeddings(params, sharing)` gives the one set of embeddings the
discriminator reads, whatever the sharing: exports and fine-tuning use that.

Each network is a method applied with the full params:
`model.apply({'params': p}, ..., method='generator_logits')`. A method reads only
the parameters it needs, so the gradient of the discriminator loss is exactly
zero on the generator's own parameters once its samples are stop-gradiented.

`MaskedLMPretrainer` is BERT's model for the MLM objective: the
discriminator-sized encoder with the MLM head. Its tree is embeddings,
discriminator (the encoder: the name every reader of a pre-trained encoder
expects) and generator_head (the MLM head, here on the full-size encoder).
"""

from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from electra_jax import config as config_lib
from electra_jax.models.encoder import (Encoder, EncoderSizes, ModelSettings, SharedEmbeddings,
                                        partitioned)
from electra_jax.models.ops import Ops
from electra_jax.vocabulary import PAD_ID


class GeneratorHead(nn.Module):
  """Dense to embedding size, GELU, LayerNorm; logits come from the tied embeddings."""

  embedding_size: int
  vocab_size: int
  settings: ModelSettings

  @nn.compact
  def __call__(self, hidden: jax.Array, embeddings: SharedEmbeddings) -> jax.Array:
    x = self.settings.ops.gelu(
        self.settings.dense(self.embedding_size, "dense", ("hidden", "embed"))(hidden))
    x = self.settings.layer_norm("layer_norm", "embed")(x)
    output_bias = self.param("output_bias", partitioned(nn.initializers.zeros, "vocab"),
                             (self.vocab_size,))
    logits = embeddings.attend(x, output_bias)
    return nn.with_logical_constraint(logits, ("batch", None, "activation_vocab"))


class DiscriminatorHead(nn.Module):
  """Dense with GELU, then one logit per token: was this token replaced?"""

  hidden_size: int
  settings: ModelSettings

  @nn.compact
  def __call__(self, hidden: jax.Array) -> jax.Array:
    x = self.settings.ops.gelu(
        self.settings.dense(self.hidden_size, "dense", ("hidden", "mlp"))(hidden))
    # One output per token: float32 costs nothing here and keeps the logit exact.
    logits = self.settings.dense(1, "prediction", ("mlp", None), jnp.float32)(x)[..., 0]
    return nn.with_logical_constraint(logits, ("batch", "length"))


def masked_lm_logits(embeddings: SharedEmbeddings, encoder: Encoder, head: GeneratorHead,
                     input_ids: jax.Array, token_type_ids: jax.Array, positions: jax.Array,
                     deterministic: bool) -> jax.Array:
  """Vocabulary logits [batch, predictions, vocab] of `encoder` + `head` at `positions`.

  The head runs only at the masked positions, never over the whole sequence:
  the vocabulary projection is the most expensive matmul of a small model.
  """
  attention_mask = input_ids != PAD_ID
  embedded = embeddings(input_ids, token_type_ids, deterministic)
  hidden = encoder(embedded, attention_mask, deterministic)
  at_positions = jnp.take_along_axis(hidden, positions[..., None], axis=1)
  at_positions = nn.with_logical_constraint(at_positions, ("batch", None, "activation_hidden"))
  return head(at_positions, embeddings)


DISCRIMINATOR_EMBEDDINGS = "discriminator_embeddings"


class WordEmbeddingResidual(nn.Module):
  """GDES's word table of the discriminator's own, added to the shared table's rows; zero at
  first, so the discriminator starts from the shared embeddings."""

  vocab_size: int
  embedding_size: int

  def setup(self):
    self.word_embeddings = nn.Embed(
        self.vocab_size, self.embedding_size, dtype=jnp.float32,
        embedding_init=partitioned(nn.initializers.zeros_init(), "vocab", "embed"))

  def __call__(self, input_ids: jax.Array) -> jax.Array:
    return self.word_embeddings(input_ids)


class _Pretrainer(nn.Module):
  """What both pre-training models have: the shared embeddings, the encoder that
  pre-training is for (named "discriminator", as every reader of a pre-trained
  encoder expects), and an MLM head tied to the word embeddings ("generator_head")."""

  vocab_size: int
  embedding_size: int
  max_position_embeddings: int
  type_vocab_size: int
  discriminator_sizes: EncoderSizes
  settings: ModelSettings

  def setup(self):
    self.embeddings = SharedEmbeddings(self.vocab_size, self.embedding_size,
                                       self.max_position_embeddings, self.type_vocab_size,
                                       self.settings)
    self.discriminator = Encoder(self.discriminator_sizes, self.settings)
    self.generator_head = GeneratorHead(self.embedding_size, self.vocab_size, self.settings)


class ElectraPretrainer(_Pretrainer):
  """Generator + discriminator with shared embeddings, for pre-training."""

  generator_sizes: EncoderSizes
  embedding_sharing: str = "shared"  # electra.embedding_sharing

  def setup(self):
    super().setup()
    self.generator = Encoder(self.generator_sizes, self.settings)
    self.discriminator_head = DiscriminatorHead(self.discriminator_sizes.hidden_size,
                                                self.settings)
    if self.embedding_sharing == "none":
      self.discriminator_embeddings = SharedEmbeddings(
          self.vocab_size, self.embedding_size, self.max_position_embeddings,
          self.type_vocab_size, self.settings)
    elif self.embedding_sharing == "gdes":
      self.discriminator_embeddings = WordEmbeddingResidual(self.vocab_size, self.embedding_size)

  def generator_logits(self, input_ids: jax.Array, token_type_ids: jax.Array,
                       positions: jax.Array, deterministic: bool = True) -> jax.Array:
    """The generator's vocabulary logits [batch, predictions, vocab] at `positions`."""
    return masked_lm_logits(self.embeddings, self.generator, self.generator_head, input_ids,
                            token_type_ids, positions, deterministic)

  def discriminator_logits(self, input_ids: jax.Array, token_type_ids: jax.Array,
                           deterministic: bool = True,
                           attention_mask: jax.Array | None = None) -> jax.Array:
    """One replaced-token logit per position [batch, length].

    `attention_mask` (True for real tokens) defaults to the non-[PAD] ids; the
    objective passes the original input's, since a generator may sample [PAD].
    """
    if attention_mask is None:
      attention_mask = input_ids != PAD_ID
    if self.embedding_sharing == "none":
      embedded = self.discriminator_embeddings(input_ids, token_type_ids, deterministic)
    else:
      residual = (self.discriminator_embeddings(input_ids)
                  if self.embedding_sharing == "gdes" else None)
      embedded = self.embeddings(input_ids, token_type_ids, deterministic, residual)
    hidden = self.discriminator(embedded, attention_mask, deterministic)
    return self.discriminator_head(hidden)

  def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array, positions: jax.Array,
               deterministic: bool = True) -> tuple[jax.Array, jax.Array]:
    """Both networks on the same input; used to create all parameters at once."""
    return (self.generator_logits(input_ids, token_type_ids, positions, deterministic),
            self.discriminator_logits(input_ids, token_type_ids, deterministic))


class MaskedLMPretrainer(_Pretrainer):
  """The full-size encoder with an MLM head: BERT's pre-training model (objective "mlm")."""

  def mlm_logits(self, input_ids: jax.Array, token_type_ids: jax.Array, positions: jax.Array,
                 deterministic: bool = True) -> jax.Array:
    """Vocabulary logits [batch, predictions, vocab] at `positions`."""
    return masked_lm_logits(self.embeddings, self.discriminator, self.generator_head, input_ids,
                            token_type_ids, positions, deterministic)

  def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array, positions: jax.Array,
               deterministic: bool = True) -> jax.Array:
    return self.mlm_logits(input_ids, token_type_ids, positions, deterministic)


Pretrainer = ElectraPretrainer | MaskedLMPretrainer


def build_pretrainer(config: ml_collections.ConfigDict, ops: Ops = Ops()) -> Pretrainer:
  """The model a config describes (sizes from `model.*`; ELECTRA's generator scaled down).

  `ops` are the forms of its operations: the plain ones, or those `target.choices`
  picks for the devices it will be compiled for. Parameters are the same either way.
  """
  m = config.model
  settings = ModelSettings(dropout_rate=m.dropout_rate,
                           attention_dropout_rate=m.attention_dropout_rate,
                           initializer_range=m.initializer_range,
                           layer_norm_eps=m.layer_norm_eps,
                           dtype=jnp.dtype(m.dtype), attention=m.attention, remat=m.remat,
                           ops=ops, position_embedding=m.position_embedding,
                           feed_forward=m.feed_forward, norm_position=m.norm_position,
                           use_bias=m.use_bias)
  shared = dict(vocab_size=m.vocab_size, embedding_size=m.embedding_size,
                max_position_embeddings=m.max_position_embeddings,
                type_vocab_size=m.type_vocab_size,
                discriminator_sizes=EncoderSizes(hidden_size=m.hidden_size,
                                                 num_layers=m.num_layers, num_heads=m.num_heads,
                                                 intermediate_size=m.intermediate_size),
                settings=settings)
  if config.objective == "mlm":
    return MaskedLMPretrainer(**shared)
  return ElectraPretrainer(generator_sizes=EncoderSizes(**config_lib.generator_dims(config)),
                           embedding_sharing=config.electra.embedding_sharing, **shared)


def init_partitioned_params(model: Pretrainer, rng: jax.Array, seq_length: int,
                            num_predictions: int) -> dict:
  """Fresh parameters, each boxed in `nn.LogicallyPartitioned` with its logical axis names.

  Under `jax.eval_shape` this allocates nothing: sharding.py reads the names
  from the boxes to place every parameter before it is created.
  """
  ids = jnp.zeros((1, seq_length), jnp.int32)
  positions = jnp.zeros((1, num_predictions), jnp.int32)
  return model.init(rng, ids, ids, positions)["params"]


def init_params(model: Pretrainer, rng: jax.Array, seq_length: int,
                num_predictions: int) -> dict:
  """Fresh parameters as plain arrays (the tree that apply, optimizers and files see)."""
  return nn.unbox(init_partitioned_params(model, rng, seq_length, num_predictions))


def parameter_counts(config: ml_collections.ConfigDict) -> dict[str, int]:
  """Parameter counts from the config alone (shapes only, no memory, no data).

  `discriminator` includes the embeddings it reads, as exported (it is the model
  users keep; MLM's encoder); `generator` counts the generator's own parameters
  only (for MLM, its head's; with separate embeddings, its embeddings too).
  `total` counts what training holds, a GDES residual included.
  """
  model = build_pretrainer(config)
  shapes = jax.eval_shape(lambda rng: init_params(model, rng, 8, 1), jax.random.PRNGKey(0))
  count = lambda tree: sum(x.size for x in jax.tree_util.tree_leaves(tree))
  own = lambda *names: sum(count(shapes[n]) for n in names if n in shapes)
  separate = config.objective == "electra" and config.electra.embedding_sharing == "none"
  embeddings = DISCRIMINATOR_EMBEDDINGS if separate else "embeddings"
  return dict(
      embeddings=own(embeddings),
      generator=own("generator", "generator_head", *(["embeddings"] if separate else [])),
      discriminator=own(embeddings, "discriminator", "discriminator_head"),
      total=count(shapes),
  )


def discriminator_embeddings(params: Mapping, sharing: str) -> dict:
  """The one set of embeddings the discriminator reads (word, position, token type, LayerNorm):
  the shared set, its own ("none"), or under GDES the shared set with the residual added to
  the word table, which is what an export or fine-tuning takes."""
  if sharing == "none":
    return params[DISCRIMINATOR_EMBEDDINGS]
  shared = params["embeddings"]
  if sharing == "shared":
    return shared
  word = shared["word_embeddings"]["embedding"]
  residual = params[DISCRIMINATOR_EMBEDDINGS]["word_embeddings"]["embedding"]
  return {**shared, "word_embeddings": {"embedding": word + residual}}


def discriminator_alone(params: Mapping, sharing: str) -> dict:
  """`params` as a discriminator alone holds them: its one set of embeddings (above) as
  `embeddings`, no `discriminator_embeddings`; the generator's entries, if any, untouched."""
  alone = {name: value for name, value in params.items() if name != DISCRIMINATOR_EMBEDDINGS}
  alone["embeddings"] = discriminator_embeddings(params, sharing)
  return alone


def embeddings_from_networks(generator: Mapping, discriminator: Mapping, sharing: str) -> dict:
  """The embedding entries of our tree from each network's own set (an imported pair): the
  inverse of `discriminator_embeddings`. Under "shared" the discriminator's set is kept; under
  "gdes" the discriminator's word table becomes the residual over the generator's, and its
  other embeddings must be the generator's (the caller checks)."""
  if sharing == "shared":
    return {"embeddings": dict(discriminator)}
  if sharing == "none":
    return {"embeddings": dict(generator), DISCRIMINATOR_EMBEDDINGS: dict(discriminator)}
  residual = (discriminator["word_embeddings"]["embedding"] -
              generator["word_embeddings"]["embedding"])
  return {"embeddings": dict(generator),
          DISCRIMINATOR_EMBEDDINGS: {"word_embeddings": {"embedding": residual}}}
