"""Masking, sampling, labels and losses of replaced token detection, and of MLM."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import load_config
from electra_jax.models import electra
from electra_jax.pretraining import objective, train_step as train_step_lib
from electra_jax.vocabulary import CLS_ID, MASK_ID, PAD_ID, SEP_ID

P = 19


def make_ids(batch=64, length=128, seed=0):
  """Rows of [CLS] text [SEP] text [SEP] with some padding, text ids in [5, 100)."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(5, 100, size=(batch, length))
  lengths = rng.integers(20, length + 1, size=batch)
  for row, n in enumerate(lengths):
    ids[row, 0], ids[row, n // 2], ids[row, n - 1] = CLS_ID, SEP_ID, SEP_ID
    ids[row, n:] = PAD_ID
  ids[0, 5] = MASK_ID  # a literal [MASK] in the input must never be picked either
  return jnp.asarray(ids, jnp.int32)


def test_masking_statistics_over_many_draws():
  ids = make_ids()
  n_real = np.asarray(objective.maskable(ids).sum(-1))
  picked, masked_tokens = 0, 0
  for i in range(50):
    m = objective.mask_tokens(jax.random.PRNGKey(i), ids, 0.15, P)
    weights = np.asarray(m.weights)
    np.testing.assert_array_equal(weights.sum(-1), np.clip(np.round(n_real * 0.15), 1, P))
    changed = np.asarray(m.input_ids != ids)
    picked += weights.sum()
    masked_tokens += changed.sum()
    # Only picked positions change, and they change to [MASK].
    assert np.all(np.asarray(m.input_ids)[changed] == MASK_ID)
    rows = np.arange(ids.shape[0])[:, None]
    np.testing.assert_array_equal(np.asarray(m.targets), np.asarray(ids)[rows, np.asarray(m.positions)])
  assert masked_tokens / picked == pytest.approx(0.85, abs=0.01)


def test_positions_are_uniform_over_maskable_tokens():
  ids = make_ids(batch=1, length=128)
  n = np.asarray(objective.maskable(ids)).sum()
  hits = np.zeros(128)
  draws = 2000
  batched = jnp.tile(ids, (draws, 1))
  m = objective.mask_tokens(jax.random.PRNGKey(1), batched, 0.15, P)
  np.add.at(hits, np.asarray(m.positions)[np.asarray(m.weights) > 0], 1)
  allowed = np.asarray(objective.maskable(ids))[0]
  expected = draws * np.round(n * 0.15) / n
  assert hits[~allowed].sum() == 0
  # Each maskable position is picked as often as the others (binomial noise, ~5 sd).
  assert np.all(np.abs(hits[allowed] - expected) < 5 * np.sqrt(expected))


def test_special_tokens_and_padding_never_picked():
  ids = make_ids()
  for i in range(20):
    m = objective.mask_tokens(jax.random.PRNGKey(i), ids, 0.5, 60)
    picked = np.asarray(m.targets)[np.asarray(m.weights) > 0]
    assert not np.isin(picked, [PAD_ID, CLS_ID, SEP_ID, MASK_ID]).any()


def test_row_without_text_picks_nothing():
  ids = jnp.asarray([[CLS_ID, SEP_ID, PAD_ID, PAD_ID]], jnp.int32)
  m = objective.mask_tokens(jax.random.PRNGKey(0), ids, 0.15, 2)
  assert float(m.weights.sum()) == 0
  np.testing.assert_array_equal(m.input_ids, ids)


def test_same_key_same_masks_and_new_step_new_masks():
  ids = make_ids()
  base = jax.random.PRNGKey(42)
  a = objective.mask_tokens(jax.random.fold_in(base, 7), ids, 0.15, P)
  b = objective.mask_tokens(jax.random.fold_in(base, 7), ids, 0.15, P)
  c = objective.mask_tokens(jax.random.fold_in(base, 8), ids, 0.15, P)
  np.testing.assert_array_equal(a.input_ids, b.input_ids)
  np.testing.assert_array_equal(a.positions, b.positions)
  assert not np.array_equal(a.positions, c.positions)


def test_labels_on_hand_built_case():
  original = jnp.asarray([[CLS_ID, 10, 11, 12, 13, SEP_ID, PAD_ID]], jnp.int32)
  masked = objective.MaskedBatch(
      input_ids=jnp.asarray([[CLS_ID, MASK_ID, 11, MASK_ID, 13, SEP_ID, PAD_ID]]),
      positions=jnp.asarray([[1, 3, 2, 0]]),
      targets=jnp.asarray([[10, 12, 11, CLS_ID]]),
      weights=jnp.asarray([[1.0, 1.0, 1.0, 0.0]]))
  # Position 1 sampled back to its original (counts as original), 3 replaced,
  # 2 replaced; the padding entry's sample is ignored.
  sampled = jnp.asarray([[10, 99, 50, 77]], jnp.int32)
  corrupted, labels = objective.replace_tokens(original, masked, sampled)
  np.testing.assert_array_equal(corrupted, [[CLS_ID, 10, 50, 99, 13, SEP_ID, PAD_ID]])
  np.testing.assert_array_equal(labels, [[0, 0, 1, 1, 0, 0, 0]])


def test_gumbel_sampling_follows_the_softmax_and_has_no_gradient():
  logits = jnp.log(jnp.asarray([0.7, 0.2, 0.1]))
  samples = objective.sample_tokens(jax.random.PRNGKey(0), jnp.tile(logits, (20000, 1)))
  freq = np.bincount(np.asarray(samples), minlength=3) / 20000
  np.testing.assert_allclose(freq, [0.7, 0.2, 0.1], atol=0.015)
  grad = jax.grad(lambda l: objective.sample_tokens(jax.random.PRNGKey(0), l)
                  .astype(jnp.float32).sum())(logits)
  np.testing.assert_array_equal(grad, 0)


def test_rtd_loss_ignores_padding():
  logits = jnp.asarray([[2.0, -1.0, 123.0]])
  labels = jnp.asarray([[1.0, 0.0, 0.0]])
  real = jnp.asarray([[1.0, 1.0, 0.0]])
  expected = (np.log1p(np.exp(-2.0)) + np.log1p(np.exp(-1.0))) / 2
  assert float(objective.rtd_loss(logits, labels, real)) == pytest.approx(expected, rel=1e-6)


def test_mlm_loss_only_at_weighted_positions():
  logits = jnp.asarray([[[0.0, 0.0], [5.0, -5.0]]])
  targets = jnp.asarray([[0, 1]])
  assert float(objective.mlm_loss(logits, targets, jnp.asarray([[1.0, 0.0]]))) == pytest.approx(np.log(2))


@pytest.mark.parametrize("vocab", [49, 57])  # a square number of entries, and a short last block
def test_two_stage_sampling_draws_from_the_softmax(vocab):
  logits = 2.0 * jax.random.normal(jax.random.PRNGKey(vocab), (vocab,))
  draws = 100_000
  samples = objective.sample_tokens(jax.random.PRNGKey(1), jnp.tile(logits, (draws, 1)),
                                    temperature=1.5)
  p = np.asarray(jax.nn.softmax(logits / 1.5))
  freq = np.bincount(np.asarray(samples), minlength=vocab) / draws
  assert freq.shape == (vocab,)  # never an id past the vocabulary
  # Every entry within 5 standard deviations of its binomial count.
  assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / draws) + 1e-6)


def test_a_row_samples_the_same_in_any_microbatch():
  logits = jax.random.normal(jax.random.PRNGKey(0), (8, 3, 50))
  key = jax.random.PRNGKey(2)
  sample = jax.jit(objective.sample_tokens)
  np.testing.assert_array_equal(sample(key, logits[1::2], rows=jnp.arange(1, 8, 2)),
                                sample(key, logits)[1::2])


def test_mlm_masking_is_berts_80_10_10():
  """Of the picked tokens 80% become [MASK], 10% a random text token, 10% stay."""
  vocab = 1000
  ids = jnp.asarray(np.random.default_rng(0).integers(5, vocab, size=(2000, 64)), jnp.int32)
  m = objective.mask_tokens(jax.random.PRNGKey(0), ids, 0.15, 10, 0.8, 0.1, vocab)
  picked = np.asarray(m.weights) > 0
  new = np.take_along_axis(np.asarray(m.input_ids), np.asarray(m.positions), axis=1)[picked]
  original = np.asarray(m.targets)[picked]
  masked = new == MASK_ID
  changed = ~masked & (new != original)
  assert masked.mean() == pytest.approx(0.8, abs=0.01)
  # A random draw equal to the original (1 in 995 here) looks kept.
  assert changed.mean() == pytest.approx(0.1 * (1 - 1 / 995), abs=0.01)
  assert (~masked & ~changed).mean() == pytest.approx(0.1, abs=0.01)
  assert new[changed].min() >= objective.FIRST_TEXT_ID and new[changed].max() < vocab
  # Nothing outside the picked positions changes.
  outside = np.asarray(m.input_ids) != np.asarray(ids)
  rows, cols = np.nonzero(outside)
  assert all(c in np.asarray(m.positions)[r][picked[r]] for r, c in zip(rows[:200], cols[:200]))


def test_mlm_loss_is_over_the_masked_positions_only():
  config = load_config("tiny")
  config.objective, config.model.vocab_size, config.data.max_seq_length = "mlm", 50, 16
  model = electra.build_pretrainer(config)
  assert isinstance(model, electra.MaskedLMPretrainer)
  params = electra.init_params(model, jax.random.PRNGKey(0), 16, 3)
  assert set(params) == {"embeddings", "discriminator", "generator_head"}
  assert params["generator_head"]["dense"]["kernel"].shape == (config.model.hidden_size,
                                                                config.model.embedding_size)
  settings = train_step_lib.objective_settings(config)
  assert (settings.mask_token_prob, settings.random_token_prob) == (0.8, 0.1)
  ids = np.random.default_rng(1).integers(5, 50, size=(4, 16)).astype(np.int32)
  ids[:, 0], ids[1, 10:] = 2, 0  # [CLS], and padding in row 1
  batch = {"input_ids": jnp.asarray(ids), "token_type_ids": jnp.zeros_like(ids)}
  key = jax.random.PRNGKey(5)
  loss, (stats, disc_outputs) = objective.pretraining_loss(model.apply, params, batch, key,
                                                           settings, deterministic=True)
  assert disc_outputs == {}
  # By hand: cross-entropy at the picked positions, averaged over them alone.
  masked = objective.mask_batch(key, batch, settings).masked
  logits = model.apply({"params": params}, masked.input_ids, batch["token_type_ids"],
                       masked.positions, method="mlm_logits")
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, masked.targets)
  expected = float((losses * masked.weights).sum() / masked.weights.sum())
  assert float(loss) == pytest.approx(expected, rel=1e-5)
  assert float(stats["mlm_count"]) == float(masked.weights.sum()) < (ids != 0).sum()
  summary = objective.summarize(jax.device_get(stats), 1)
  assert set(summary) == {"loss", "mlm_loss", "mlm_accuracy"}
