"""Replaced token detection: masking, sampling, labels and losses as pure functions.

Every random choice takes an explicit key, so the same key always gives the
same corruption, and a step's randomness is a function of (seed, step) alone.
The flow of one example (ELECTRA.md, "The objective"):

  mask_tokens        pick positions, put [MASK] at 85% of them
  generator          predicts the originals at the picked positions (MLM loss)
  sample_tokens      Gumbel-max sample from its logits, no gradient through it
  replace_tokens     the discriminator's input, and its labels (1 = replaced)
  discriminator      one logit per token (RTD loss over all non-padding tokens)
"""

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from electra_jax.data.tokenizer import CLS_ID, MASK_ID, PAD_ID, SEP_ID

NEVER_MASKED = (PAD_ID, CLS_ID, SEP_ID, MASK_ID)


@flax.struct.dataclass
class MaskedBatch:
  """The generator's input and targets; `positions` has a fixed width P."""

  input_ids: jax.Array  # [B, L] with [MASK] (or the kept token) at the picked positions
  positions: jax.Array  # [B, P] picked positions; padded entries point at 0 with weight 0
  targets: jax.Array  # [B, P] original tokens at `positions`
  weights: jax.Array  # [B, P] 1.0 for real picks, 0.0 for padding entries


@dataclasses.dataclass(frozen=True)
class ObjectiveSettings:
  """The objective's hyperparameters (config section `objective`)."""

  mask_rate: float = 0.15
  mask_token_prob: float = 0.85
  max_predictions: int = 19
  gen_weight: float = 1.0
  disc_weight: float = 50.0
  temperature: float = 1.0


def maskable(input_ids: jax.Array) -> jax.Array:
  """True where a token may be picked: real text, never special tokens or padding."""
  special = jnp.isin(input_ids, jnp.asarray(NEVER_MASKED, input_ids.dtype))
  return ~special


def mask_tokens(key: jax.Array, input_ids: jax.Array, mask_rate: float, max_predictions: int,
                mask_token_prob: float = 0.85) -> MaskedBatch:
  """Picks max(1, round(n * mask_rate)) maskable tokens per row (capped at P).

  Positions are a uniform sample without replacement: the top P of random
  scores over the maskable tokens. Of the picked tokens, `mask_token_prob` become
  [MASK] and the rest keep their original id (ELECTRA uses no random tokens).
  """
  pick_key, replace_key = jax.random.split(key)
  candidates = maskable(input_ids)
  num_candidates = candidates.sum(axis=-1)
  num_to_pick = jnp.clip(jnp.round(num_candidates * mask_rate), 1, max_predictions)
  num_to_pick = jnp.minimum(num_to_pick, num_candidates).astype(jnp.int32)

  scores = jnp.where(candidates, jax.random.uniform(pick_key, input_ids.shape), -1.0)
  _, positions = jax.lax.top_k(scores, max_predictions)
  weights = jnp.arange(max_predictions)[None, :] < num_to_pick[:, None]
  positions = jnp.where(weights, positions, 0)
  targets = jnp.take_along_axis(input_ids, positions, axis=1)

  use_mask_token = weights & jax.random.bernoulli(replace_key, mask_token_prob, positions.shape)
  new_tokens = jnp.where(use_mask_token, MASK_ID, targets)
  masked_ids = scatter_tokens(input_ids, positions, new_tokens, weights)
  return MaskedBatch(masked_ids, positions, targets, weights.astype(jnp.float32))


def scatter_tokens(input_ids: jax.Array, positions: jax.Array, tokens: jax.Array,
                   weights: jax.Array) -> jax.Array:
  """`input_ids` with `tokens` written at `positions` where `weights` is set."""
  rows = jnp.arange(input_ids.shape[0])[:, None]
  tokens = jnp.where(weights > 0, tokens, input_ids[rows, positions])
  # Padding entries all point at position 0 and write back what is there.
  return input_ids.at[rows, positions].set(tokens.astype(input_ids.dtype))


def sample_tokens(key: jax.Array, logits: jax.Array, temperature: float = 1.0) -> jax.Array:
  """Gumbel-max sample per position; no gradient flows through the choice."""
  logits = jax.lax.stop_gradient(logits) / temperature
  gumbel = jax.random.gumbel(key, logits.shape, jnp.float32)
  return jnp.argmax(logits + gumbel, axis=-1).astype(jnp.int32)


def replace_tokens(original_ids: jax.Array, masked: MaskedBatch,
                   sampled: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The discriminator's input and labels.

  Label 1 where the token now differs from the original; a sample that equals
  the original token counts as original (0), as in the paper.
  """
  corrupted = scatter_tokens(original_ids, masked.positions, sampled, masked.weights)
  labels = (corrupted != original_ids).astype(jnp.float32)
  return corrupted, labels


def mlm_loss(logits: jax.Array, targets: jax.Array, weights: jax.Array) -> jax.Array:
  """Mean cross-entropy over the picked positions."""
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  return (losses * weights).sum() / jnp.maximum(weights.sum(), 1.0)


def rtd_loss(logits: jax.Array, labels: jax.Array, real_tokens: jax.Array) -> jax.Array:
  """Mean sigmoid cross-entropy over every non-padding token."""
  losses = optax.sigmoid_binary_cross_entropy(logits, labels)
  return (losses * real_tokens).sum() / jnp.maximum(real_tokens.sum(), 1.0)


def electra_loss(apply_fn: Any, params: Any, batch: dict[str, jax.Array], key: jax.Array,
                 settings: ObjectiveSettings,
                 deterministic: bool) -> tuple[jax.Array, tuple[dict, dict]]:
  """Total loss gen_weight * MLM + disc_weight * RTD, with what to log and evaluate.

  `apply_fn` is the model's `apply`; `key` is this step's key, from which the
  masking, sampling and both networks' dropout keys are derived by name.
  Returns (loss, (stats, disc_outputs)): `stats` are scalars to sum over steps,
  `disc_outputs` the per-token logits, labels and padding mask (for AUC).
  """
  mask_key, sample_key, gen_dropout, disc_dropout = (
      jax.random.fold_in(key, i) for i in range(4))
  input_ids, token_type_ids = batch["input_ids"], batch["token_type_ids"]

  masked = mask_tokens(mask_key, input_ids, settings.mask_rate, settings.max_predictions,
                       settings.mask_token_prob)
  gen_logits = apply_fn({"params": params}, masked.input_ids, token_type_ids, masked.positions,
                        deterministic, rngs={"dropout": gen_dropout},
                        method="generator_logits")
  gen_loss = mlm_loss(gen_logits, masked.targets, masked.weights)

  sampled = sample_tokens(sample_key, gen_logits, settings.temperature)
  corrupted, labels = replace_tokens(input_ids, masked, sampled)
  real_tokens = input_ids != PAD_ID
  disc_logits = apply_fn({"params": params}, corrupted, token_type_ids, deterministic,
                         real_tokens, rngs={"dropout": disc_dropout},
                         method="discriminator_logits")
  real_tokens = real_tokens.astype(jnp.float32)
  disc_loss = rtd_loss(disc_logits, labels, real_tokens)

  loss = settings.gen_weight * gen_loss + settings.disc_weight * disc_loss
  stats = dict(loss=loss, gen_loss=gen_loss, disc_loss=disc_loss,
               **counts(gen_logits, masked, disc_logits, labels, real_tokens))
  disc_outputs = dict(logits=disc_logits, labels=labels, real_tokens=real_tokens)
  return loss, (stats, disc_outputs)


def counts(gen_logits: jax.Array, masked: MaskedBatch, disc_logits: jax.Array,
           labels: jax.Array, real_tokens: jax.Array) -> dict[str, jax.Array]:
  """Sums from which accuracies, precision and recall are derived over any window.

  Sums, not ratios, so that a logging interval's metric is the ratio of its
  totals rather than an average of per-step ratios.
  """
  gen_correct = (jnp.argmax(gen_logits, -1) == masked.targets) * masked.weights
  predicted = (disc_logits > 0).astype(jnp.float32) * real_tokens
  replaced = labels * real_tokens
  return dict(
      gen_correct=gen_correct.sum(),
      gen_count=masked.weights.sum(),
      disc_correct=((predicted == replaced) * real_tokens).sum(),
      disc_count=real_tokens.sum(),
      true_positives=(predicted * replaced).sum(),
      predicted_positives=predicted.sum(),
      replaced=replaced.sum(),
  )


def summarize(totals: dict[str, float], steps: int) -> dict[str, float]:
  """Loggable metrics from summed step statistics (losses are per-step means)."""
  ratio = lambda a, b: float(totals[a]) / max(float(totals[b]), 1.0)
  return dict(
      loss=float(totals["loss"]) / steps,
      gen_loss=float(totals["gen_loss"]) / steps,
      disc_loss=float(totals["disc_loss"]) / steps,
      gen_accuracy=ratio("gen_correct", "gen_count"),
      disc_accuracy=ratio("disc_correct", "disc_count"),
      disc_precision=ratio("true_positives", "predicted_positives"),
      disc_recall=ratio("true_positives", "replaced"),
      replaced_fraction=ratio("replaced", "disc_count"),
  )
