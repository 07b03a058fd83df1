"""The pre-trained discriminator's encoder with a task head, its losses and its outputs.

The parameter tree is pre-training's without the generator, plus the head:

  embeddings      word / position / token-type embeddings + LayerNorm (pre-trained)
  discriminator   its projection and layers (pre-trained)
  head            the task's: a dense layer, new

so the pre-trained `embeddings` and `discriminator` drop in unchanged. The
heads are ELECTRA's: dropout then a dense layer on [CLS] for classification
and regression (no pooler), on every token for tagging, and a start and an
end score per token for span extraction.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from electra_jax import config as config_lib
from electra_jax.finetune import tasks
from electra_jax.models import electra
from electra_jax.models.encoder import Encoder, EncoderSizes, ModelSettings, SharedEmbeddings
from electra_jax.models.ops import Ops
from electra_jax.vocabulary import PAD_ID

Batch = dict[str, jax.Array]
PRETRAINED = ("embeddings", "discriminator")  # the subtrees that come from pre-training


class FineTuningModel(nn.Module):
  """Encoder + task head; returns [batch, num_outputs] or [batch, length, num_outputs]."""

  vocab_size: int
  embedding_size: int
  max_position_embeddings: int
  type_vocab_size: int
  sizes: EncoderSizes
  settings: ModelSettings
  kind: str  # tasks.CLASSIFICATION, REGRESSION, TAGGING or SPAN
  num_outputs: int

  @nn.compact
  def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array,
               deterministic: bool = True, encoder_only: bool = False) -> jax.Array:
    """The head's outputs; with `encoder_only`, the pre-trained encoder's last hidden states
    [batch, length, hidden] instead (a frozen-encoder probe's features: no head is made, so
    the pre-trained subtrees alone apply)."""
    embedded = SharedEmbeddings(self.vocab_size, self.embedding_size,
                                self.max_position_embeddings, self.type_vocab_size,
                                self.settings, name="embeddings")(input_ids, token_type_ids,
                                                                  deterministic)
    hidden = Encoder(self.sizes, self.settings, name="discriminator")(
        embedded, input_ids != PAD_ID, deterministic)
    if encoder_only:
      return hidden
    if self.kind in (tasks.CLASSIFICATION, tasks.REGRESSION):
      hidden = hidden[:, 0]  # [CLS]
    hidden = nn.Dropout(self.settings.dropout_rate)(hidden, deterministic=deterministic)
    return self.settings.dense(self.num_outputs, "head", ("hidden", None))(hidden).astype(
        jnp.float32)


def build_model(model_config: ml_collections.ConfigDict, kind: str, num_outputs: int,
                ops: Ops = Ops()) -> FineTuningModel:
  """The fine-tuning model for a pre-trained model's config section.

  `ops`: the forms of its operations for the target devices (target.choices).
  """
  config = config_lib.default_config()
  config.model = model_config
  pretrainer = electra.build_pretrainer(config, ops)  # the one place that reads the model section
  return FineTuningModel(
      vocab_size=pretrainer.vocab_size, embedding_size=pretrainer.embedding_size,
      max_position_embeddings=pretrainer.max_position_embeddings,
      type_vocab_size=pretrainer.type_vocab_size, sizes=pretrainer.discriminator_sizes,
      settings=pretrainer.settings, kind=kind, num_outputs=num_outputs)


def init_partitioned_params(model: FineTuningModel, rng: jax.Array, seq_length: int) -> dict:
  """Fresh parameters boxed with their logical axis names (sharding.py places them)."""
  ids = jnp.zeros((1, seq_length), jnp.int32)
  return model.init(rng, ids, ids)["params"]


def loss(kind: str, outputs: jax.Array, batch: Batch) -> jax.Array:
  """The mean loss of a batch: cross-entropy, squared error, or both span ends' cross-entropy."""
  if kind == tasks.CLASSIFICATION:
    return optax.softmax_cross_entropy_with_integer_labels(outputs, batch["targets"]).mean()
  if kind == tasks.REGRESSION:
    return jnp.mean((outputs[:, 0] - batch["targets"])**2)
  if kind == tasks.TAGGING:  # only a word's first token has a target
    labelled = batch["targets"] >= 0
    losses = optax.softmax_cross_entropy_with_integer_labels(
        outputs, jnp.where(labelled, batch["targets"], 0))
    return jnp.sum(losses * labelled) / jnp.maximum(jnp.sum(labelled), 1)
  start_logits, end_logits = span_logits(outputs, batch["input_ids"])
  return (optax.softmax_cross_entropy_with_integer_labels(start_logits, batch["start_positions"]) +
          optax.softmax_cross_entropy_with_integer_labels(end_logits, batch["end_positions"])
          ).mean() / 2


def span_logits(outputs: jax.Array, input_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Start and end scores [batch, length]; padding can be neither."""
  masked = jnp.where((input_ids != PAD_ID)[..., None], outputs, -1e9)
  return masked[..., 0], masked[..., 1]


def predictions(kind: str, outputs: jax.Array, batch: Batch):
  """What evaluation reads (tasks.EvalSet.evaluate): logits per example, a regression's
  value, each token's best tag id, or the start and end scores."""
  if kind == tasks.TAGGING:
    return outputs.argmax(axis=-1).astype(jnp.int32)
  if kind == tasks.SPAN:
    return span_logits(outputs, batch["input_ids"])
  return outputs
