"""The pre-training objectives, ELECTRA's and BERT's: masking, sampling, labels, losses.

Every random choice takes an explicit key, so the same key always gives the
same corruption, and a step's randomness is a function of (seed, step) alone.
The flow of one example (ELECTRA.md, "The objective"):

  mask_tokens        pick positions, put [MASK] at 85% of them
  generator          predicts the originals at the picked positions (MLM loss)
  sample_tokens      Gumbel-max sample from its logits, no gradient through it
  replace_tokens     the discriminator's input, and its labels (1 = replaced)
  discriminator      one logit per token (RTD loss over all non-padding tokens)

The MLM objective (`objective="mlm"`, the baseline ELECTRA is measured against)
is the first two steps alone, with BERT's masking (80% [MASK], 10% a random
token, 10% kept) and the discriminator-sized encoder in the generator's place.
"""

import dataclasses
import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from electra_jax.vocabulary import CLS_ID, MASK_ID, PAD_ID, SEP_ID, SPECIAL_PIECES

NEVER_MASKED = (PAD_ID, CLS_ID, SEP_ID, MASK_ID)
FIRST_TEXT_ID = len(SPECIAL_PIECES)  # random replacement tokens are drawn from here on
# What each random choice of a step folds into the step's key.
MASK_STREAM, SAMPLE_STREAM, GEN_DROPOUT_STREAM, DISC_DROPOUT_STREAM = range(4)


@flax.struct.dataclass
class MaskedBatch:
  """The generator's input and targets; `positions` has a fixed width P."""

  input_ids: jax.Array  # [B, L] with [MASK] (or the kept token) at the picked positions
  positions: jax.Array  # [B, P] picked positions; padded entries point at 0 with weight 0
  targets: jax.Array  # [B, P] original tokens at `positions`
  weights: jax.Array  # [B, P] 1.0 for real picks, 0.0 for padding entries


@dataclasses.dataclass(frozen=True)
class ObjectiveSettings:
  """The objective's hyperparameters (config fields `objective`, `masking.*`, `electra.*`)."""

  objective: str = "electra"  # or "mlm"
  mask_rate: float = 0.15
  mask_token_prob: float = 0.85
  random_token_prob: float = 0.0
  vocab_size: int = 0  # where random replacement tokens come from; needed when they are used
  max_predictions: int = 19
  gen_weight: float = 1.0
  disc_weight: float = 50.0
  temperature: float = 1.0


def maskable(input_ids: jax.Array) -> jax.Array:
  """True where a token may be picked: real text, never special tokens or padding."""
  special = jnp.isin(input_ids, jnp.asarray(NEVER_MASKED, input_ids.dtype))
  return ~special


def mask_tokens(key: jax.Array, input_ids: jax.Array, mask_rate: float, max_predictions: int,
                mask_token_prob: float = 0.85, random_token_prob: float = 0.0,
                vocab_size: int = 0) -> MaskedBatch:
  """Picks max(1, round(n * mask_rate)) maskable tokens per row (capped at P).

  Positions are a uniform sample without replacement: the top P of random
  scores over the maskable tokens. Of the picked tokens, `mask_token_prob` become
  [MASK], `random_token_prob` a uniform draw from the text ids below
  `vocab_size` (BERT's 10%; ELECTRA uses none), and the rest keep their id.
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

  choice = jax.random.uniform(replace_key, positions.shape)
  new_tokens = jnp.where(choice < mask_token_prob, MASK_ID, targets)
  if random_token_prob > 0:
    random_ids = jax.random.randint(jax.random.fold_in(key, 1), positions.shape, FIRST_TEXT_ID,
                                    vocab_size)
    use_random = (choice >= mask_token_prob) & (choice < mask_token_prob + random_token_prob)
    new_tokens = jnp.where(use_random, random_ids, new_tokens)
  masked_ids = scatter_tokens(input_ids, positions, new_tokens, weights)
  return MaskedBatch(masked_ids, positions, targets, weights.astype(jnp.float32))


def scatter_tokens(input_ids: jax.Array, positions: jax.Array, tokens: jax.Array,
                   weights: jax.Array) -> jax.Array:
  """`input_ids` with `tokens` written at `positions` where `weights` is set."""
  rows = jnp.arange(input_ids.shape[0])[:, None]
  tokens = jnp.where(weights > 0, tokens, input_ids[rows, positions])
  # Padding entries all point at position 0 and write back what is there.
  return input_ids.at[rows, positions].set(tokens.astype(input_ids.dtype))


def sample_tokens(key: jax.Array, logits: jax.Array, temperature: float = 1.0,
                  rows: jax.Array | None = None) -> jax.Array:
  """A sample per position from softmax(logits / temperature); no gradient flows through it.

  Gumbel-max in two stages, exact in distribution: a block of about sqrt(V)
  vocabulary entries is drawn by Gumbel-max over the blocks' log-masses, then an
  entry of that block by Gumbel-max over its logits. That takes 2 sqrt(V) random
  numbers per position instead of V; at 30,522 tokens, drawing V of them was the
  largest cost of a CPU train step after the matmuls. Row i's noise comes from
  `fold_in(key, rows[i])` (default: its index), so a row samples the same in
  any split of the batch into microbatches.
  """
  if logits.ndim == 1:
    return sample_tokens(key, logits[None], temperature, rows)[0]
  logits = jax.lax.stop_gradient(logits).astype(jnp.float32) / temperature
  *lead, vocab = logits.shape
  block = math.isqrt(vocab - 1) + 1  # ceil(sqrt(V)): the two draws are the same size
  whole = vocab // block * block  # entries in whole blocks; the last block may be short
  block_mass = jax.nn.logsumexp(logits[..., :whole].reshape(*lead, -1, block), axis=-1)
  if whole < vocab:
    block_mass = jnp.concatenate(
        [block_mass, jax.nn.logsumexp(logits[..., whole:], axis=-1, keepdims=True)], axis=-1)
  rows = jnp.arange(lead[0]) if rows is None else rows
  block_noise, entry_noise = _row_gumbel(key, rows, (*lead[1:], 2, block))
  chosen = jnp.argmax(block_mass + block_noise[..., :block_mass.shape[-1]], axis=-1)
  entries = chosen[..., None] * block + jnp.arange(block)
  entry_logits = jnp.where(
      entries < vocab, jnp.take_along_axis(logits, jnp.minimum(entries, vocab - 1), axis=-1),
      -jnp.inf)
  picked = jnp.argmax(entry_logits + entry_noise, axis=-1)
  return jnp.take_along_axis(entries, picked[..., None], axis=-1)[..., 0].astype(jnp.int32)


def _row_gumbel(key: jax.Array, rows: jax.Array,
                shape: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
  """Standard Gumbel noise of `shape` for each row, seeded by its index; split on axis -2."""
  noise = jax.vmap(lambda row: jax.random.gumbel(jax.random.fold_in(key, row), shape))(rows)
  return noise[..., 0, :], noise[..., 1, :]


def replace_tokens(original_ids: jax.Array, masked: MaskedBatch,
                   sampled: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The discriminator's input and labels.

  Label 1 where the token now differs from the original; a sample that equals
  the original token counts as original (0), as in the paper.
  """
  corrupted = scatter_tokens(original_ids, masked.positions, sampled, masked.weights)
  labels = (corrupted != original_ids).astype(jnp.float32)
  return corrupted, labels


def mlm_loss(logits: jax.Array, targets: jax.Array, weights: jax.Array,
             total_weight: jax.Array | None = None) -> jax.Array:
  """Cross-entropy summed over the picked positions, divided by `total_weight`.

  `total_weight` defaults to these positions' count (the mean); a microbatch
  passes its whole batch's, so that the microbatches' losses add up to the batch's.
  """
  losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
  total_weight = weights.sum() if total_weight is None else total_weight
  return (losses * weights).sum() / jnp.maximum(total_weight, 1.0)


def rtd_loss(logits: jax.Array, labels: jax.Array, real_tokens: jax.Array,
             total_weight: jax.Array | None = None) -> jax.Array:
  """Sigmoid cross-entropy summed over the non-padding tokens, divided as `mlm_loss`."""
  losses = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), labels)
  total_weight = real_tokens.sum() if total_weight is None else total_weight
  return (losses * real_tokens).sum() / jnp.maximum(total_weight, 1.0)


@flax.struct.dataclass
class MaskedInput:
  """A batch (or some of its rows) with its masking: what the generator reads.

  Masking is drawn once for the whole batch, so a row is masked the same
  whichever microbatch it ends up in; `rows` are its indices in the whole batch.
  """

  input_ids: jax.Array  # [B, L] the original tokens
  token_type_ids: jax.Array  # [B, L]
  masked: MaskedBatch
  rows: jax.Array  # [B]


def mask_batch(key: jax.Array, batch: dict[str, jax.Array],
               settings: ObjectiveSettings) -> MaskedInput:
  """The step's masking of a whole batch, from the step's key."""
  input_ids = batch["input_ids"]
  masked = mask_tokens(jax.random.fold_in(key, MASK_STREAM), input_ids, settings.mask_rate,
                       settings.max_predictions, settings.mask_token_prob,
                       settings.random_token_prob, settings.vocab_size)
  return MaskedInput(input_ids, batch["token_type_ids"], masked, jnp.arange(input_ids.shape[0]))


def loss_denominators(inputs: MaskedInput) -> tuple[jax.Array, jax.Array]:
  """(picked positions, real tokens) of a whole batch: what its two losses average over."""
  return inputs.masked.weights.sum(), (inputs.input_ids != PAD_ID).sum().astype(jnp.float32)


def pretraining_loss(apply_fn: Any, params: Any, batch: dict[str, jax.Array], key: jax.Array,
                     settings: ObjectiveSettings,
                     deterministic: bool) -> tuple[jax.Array, tuple[dict, dict]]:
  """The objective's loss of a batch, with what to log and evaluate.

  ELECTRA's is gen_weight * MLM + disc_weight * RTD; MLM's the masked positions'
  cross-entropy. `apply_fn` is the model's `apply`; `key` is this step's key,
  from which the masking, sampling and dropout keys are derived by name.
  Returns (loss, (stats, disc_outputs)): `stats` are scalars to sum over steps,
  `disc_outputs` ELECTRA's per-token logits, labels and padding mask (for AUC;
  empty for MLM).
  """
  inputs = mask_batch(key, batch, settings)
  return microbatch_loss(apply_fn, params, inputs, loss_denominators(inputs), key, settings,
                         deterministic)


def microbatch_loss(apply_fn: Any, params: Any, inputs: MaskedInput,
                    denominators: tuple[jax.Array, jax.Array], key: jax.Array,
                    settings: ObjectiveSettings, deterministic: bool,
                    microbatch: int | jax.Array = 0) -> tuple[jax.Array, tuple[dict, dict]]:
  """`pretraining_loss` of some rows of a masked batch, as their share of the batch's loss.

  The losses are sums divided by the whole batch's `denominators`
  (loss_denominators), so the shares of all microbatches add up to the loss of
  the batch in one piece; `microbatch` (its index) varies the dropout keys.
  """
  loss_fn = _mlm_microbatch_loss if settings.objective == "mlm" else _electra_microbatch_loss
  return loss_fn(apply_fn, params, inputs, denominators, key, settings, deterministic, microbatch)


def _mlm_microbatch_loss(apply_fn: Any, params: Any, inputs: MaskedInput,
                         denominators: tuple[jax.Array, jax.Array], key: jax.Array,
                         settings: ObjectiveSettings, deterministic: bool,
                         microbatch: int | jax.Array) -> tuple[jax.Array, tuple[dict, dict]]:
  """BERT's loss: the full-size encoder predicts the originals at the picked positions."""
  del settings  # the masking, drawn before, is all MLM needs of them
  dropout = jax.random.fold_in(jax.random.fold_in(key, GEN_DROPOUT_STREAM), microbatch)
  masked = inputs.masked
  logits = apply_fn({"params": params}, masked.input_ids, inputs.token_type_ids,
                    masked.positions, deterministic, rngs={"dropout": dropout},
                    method="mlm_logits")
  loss = mlm_loss(logits, masked.targets, masked.weights, denominators[0])
  return loss, (dict(loss=loss, mlm_loss=loss, **prediction_counts(logits, masked, "mlm")), {})


def _electra_microbatch_loss(apply_fn: Any, params: Any, inputs: MaskedInput,
                             denominators: tuple[jax.Array, jax.Array], key: jax.Array,
                             settings: ObjectiveSettings, deterministic: bool,
                             microbatch: int | jax.Array) -> tuple[jax.Array, tuple[dict, dict]]:
  """ELECTRA's loss: the generator's MLM loss plus the discriminator's, weighted."""
  gen_dropout, disc_dropout = (jax.random.fold_in(jax.random.fold_in(key, stream), microbatch)
                               for stream in (GEN_DROPOUT_STREAM, DISC_DROPOUT_STREAM))
  input_ids, token_type_ids, masked = inputs.input_ids, inputs.token_type_ids, inputs.masked
  gen_total, disc_total = denominators

  gen_logits = apply_fn({"params": params}, masked.input_ids, token_type_ids, masked.positions,
                        deterministic, rngs={"dropout": gen_dropout},
                        method="generator_logits")
  gen_loss = mlm_loss(gen_logits, masked.targets, masked.weights, gen_total)

  sampled = sample_tokens(jax.random.fold_in(key, SAMPLE_STREAM), gen_logits,
                          settings.temperature, inputs.rows)
  corrupted, labels = replace_tokens(input_ids, masked, sampled)
  real_tokens = input_ids != PAD_ID
  disc_logits = apply_fn({"params": params}, corrupted, token_type_ids, deterministic,
                         real_tokens, rngs={"dropout": disc_dropout},
                         method="discriminator_logits")
  real_tokens = real_tokens.astype(jnp.float32)
  disc_loss = rtd_loss(disc_logits, labels, real_tokens, disc_total)

  loss = settings.gen_weight * gen_loss + settings.disc_weight * disc_loss
  stats = dict(loss=loss, gen_loss=gen_loss, disc_loss=disc_loss,
               **counts(gen_logits, masked, disc_logits, labels, real_tokens))
  disc_outputs = dict(logits=disc_logits, labels=labels, real_tokens=real_tokens)
  return loss, (stats, disc_outputs)


def prediction_counts(logits: jax.Array, masked: MaskedBatch, prefix: str
                      ) -> dict[str, jax.Array]:
  """`prefix`_correct and `prefix`_count: right predictions and picked positions, summed.

  Sums, not ratios, so that a logging interval's metric is the ratio of its
  totals rather than an average of per-step ratios.
  """
  # The target's logit is the largest (no argmax: on CPU one over the vocabulary costs
  # as much as several matmuls of the step).
  target_logits = jnp.take_along_axis(logits, masked.targets[..., None], axis=-1)[..., 0]
  correct = (target_logits >= logits.max(axis=-1)) * masked.weights
  return {f"{prefix}_correct": correct.sum(), f"{prefix}_count": masked.weights.sum()}


def counts(gen_logits: jax.Array, masked: MaskedBatch, disc_logits: jax.Array,
           labels: jax.Array, real_tokens: jax.Array) -> dict[str, jax.Array]:
  """ELECTRA's sums from which accuracies, precision and recall are derived over any window."""
  predicted = (disc_logits > 0).astype(jnp.float32) * real_tokens
  replaced = labels * real_tokens
  return dict(
      **prediction_counts(gen_logits, masked, "gen"),
      disc_correct=((predicted == replaced) * real_tokens).sum(),
      disc_count=real_tokens.sum(),
      true_positives=(predicted * replaced).sum(),
      predicted_positives=predicted.sum(),
      replaced=replaced.sum(),
  )


# The loggable metrics: means of per-step losses, and ratios of summed counts. Each
# objective's statistics have some of them (ELECTRA: gen_* and disc_*; MLM: mlm_*).
_LOSSES = ("loss", "gen_loss", "disc_loss", "mlm_loss")
_RATIOS = {
    "gen_accuracy": ("gen_correct", "gen_count"),
    "mlm_accuracy": ("mlm_correct", "mlm_count"),
    "disc_accuracy": ("disc_correct", "disc_count"),
    "disc_precision": ("true_positives", "predicted_positives"),
    "disc_recall": ("true_positives", "replaced"),
    "replaced_fraction": ("replaced", "disc_count"),
}


def summarize(totals: dict[str, float], steps: int) -> dict[str, float]:
  """Loggable metrics from summed step statistics (losses are per-step means)."""
  summary = {name: float(totals[name]) / steps for name in _LOSSES if name in totals}
  summary.update({name: float(totals[a]) / max(float(totals[b]), 1.0)
                  for name, (a, b) in _RATIOS.items() if a in totals})
  return summary
