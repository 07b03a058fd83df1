"""Model shapes, parameter counts and the sharing of embeddings between networks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_config
from model_helpers import batch, tiny_setup
from step_helpers import run_steps, small_config
from electra_jax.models import electra
from electra_jax.models.dropout import keep_mask
from electra_jax.pretraining import objective, train_step as train_step_lib


def test_small_matches_electra_small_parameter_counts():
  counts = electra.parameter_counts(load_config("small"))
  assert counts["discriminator"] == 13_549_057
  assert counts["generator"] == 647_162


@pytest.mark.parametrize("name, discriminator", [("base", 109_483_009), ("large", 335_142_913)])
def test_base_and_large_sizes(name, discriminator):
  assert electra.parameter_counts(load_config(name))["discriminator"] == discriminator


def test_one_set_of_embeddings_serves_both_networks():
  _, model, params = tiny_setup()
  assert set(params) == {"embeddings", "generator", "generator_head", "discriminator",
                         "discriminator_head"}
  assert set(params["embeddings"]) == {"word_embeddings", "position_embeddings",
                                       "token_type_embeddings", "layer_norm"}
  # The generator's output layer is tied: it has a bias but no vocabulary matrix.
  assert set(params["generator_head"]) == {"dense", "layer_norm", "output_bias"}
  # Changing a shared word embedding changes both networks' outputs.
  b = batch()
  positions = jnp.asarray([[1, 2, 3]] * 4)
  gen = lambda p: model.apply({"params": p}, b["input_ids"], b["token_type_ids"], positions,
                              method="generator_logits")
  disc = lambda p: model.apply({"params": p}, b["input_ids"], b["token_type_ids"],
                               method="discriminator_logits")
  bumped = jax.tree_util.tree_map(lambda x: x, params)
  bumped["embeddings"]["word_embeddings"]["embedding"] = (
      params["embeddings"]["word_embeddings"]["embedding"] * 2)
  assert not np.allclose(gen(params), gen(bumped))
  assert not np.allclose(disc(params), disc(bumped))


def test_projection_only_when_embedding_size_differs():
  _, _, params = tiny_setup()  # embedding 128, generator hidden 64, discriminator 128
  assert "embeddings_project" in params["generator"]
  assert "embeddings_project" not in params["discriminator"]


def test_generator_logits_only_at_requested_positions():
  _, model, params = tiny_setup()
  b = batch()
  logits = model.apply({"params": params}, b["input_ids"], b["token_type_ids"],
                       jnp.asarray([[1, 2, 3]] * 4), method="generator_logits")
  assert logits.shape == (4, 3, 64)


def test_padding_does_not_change_real_token_outputs():
  _, model, params = tiny_setup()
  b = batch()  # row 0 is padded from position 10
  disc = lambda ids, types: model.apply({"params": params}, ids, types,
                                        method="discriminator_logits")
  padded = disc(b["input_ids"][:1], b["token_type_ids"][:1])[0, :10]
  unpadded = disc(b["input_ids"][:1, :10], b["token_type_ids"][:1, :10])[0]
  np.testing.assert_allclose(padded, unpadded, atol=1e-5)


def test_discriminator_loss_sends_no_gradient_into_the_generator():
  config, model, params = tiny_setup()
  settings = train_step_lib.objective_settings(config)

  def disc_loss(p):
    _, (stats, _) = objective.pretraining_loss(model.apply, p, batch(), jax.random.PRNGKey(3),
                                           settings, deterministic=False)
    return stats["disc_loss"]

  grads = jax.grad(disc_loss)(params)
  for name in ("generator", "generator_head"):
    for leaf in jax.tree_util.tree_leaves(grads[name]):
      np.testing.assert_array_equal(leaf, 0)
  # ...while the shared embeddings and the discriminator do learn from it.
  assert np.abs(grads["embeddings"]["word_embeddings"]["embedding"]).sum() > 0
  assert np.abs(jax.tree_util.tree_leaves(grads["discriminator"])[0]).sum() > 0


def test_generator_loss_trains_shared_embeddings_but_not_the_discriminator():
  config, model, params = tiny_setup()
  settings = train_step_lib.objective_settings(config)
  grads = jax.grad(lambda p: objective.pretraining_loss(
      model.apply, p, batch(), jax.random.PRNGKey(3), settings, False)[1][0]["gen_loss"])(params)
  for leaf in jax.tree_util.tree_leaves(grads["discriminator"]):
    np.testing.assert_array_equal(leaf, 0)
  assert np.abs(grads["embeddings"]["word_embeddings"]["embedding"]).sum() > 0


def test_bfloat16_compute_keeps_float32_params_and_close_logits():
  _, model32, params = tiny_setup()
  _, model16, params16 = tiny_setup(model__dtype="bfloat16")
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(params16))
  b = batch()
  run = lambda m: m.apply({"params": params}, b["input_ids"], b["token_type_ids"],
                          method="discriminator_logits")
  np.testing.assert_allclose(run(model16), run(model32), atol=0.05)


@pytest.mark.slow  # ~18 s; cuDNN's kernel is the GPU's, and the einsum form runs by default
def test_dot_product_attention_equals_the_written_out_attention():
  """jax.nn.dot_product_attention (cuDNN's kernel on GPU) computes the same function,
  padding masks included, in both directions."""
  config, model, params = tiny_setup(model__attention_dropout_rate=0.0)
  _, fused, _ = tiny_setup(model__attention_dropout_rate=0.0, model__attention="dot_product")
  b = batch()  # row 0 is padded from position 10
  settings = train_step_lib.objective_settings(config)

  def loss(m, p):
    return objective.pretraining_loss(m.apply, p, b, jax.random.PRNGKey(1), settings, True)[0]

  (fused_loss, fused_grads), (plain_loss, plain_grads) = (
      jax.jit(jax.value_and_grad(lambda p, m=m: loss(m, p)))(params) for m in (fused, model))
  np.testing.assert_allclose(fused_loss, plain_loss, rtol=1e-6)
  for ours, theirs in zip(jax.tree_util.tree_leaves(fused_grads),
                          jax.tree_util.tree_leaves(plain_grads)):
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_dropout_masks_are_uniform_independent_and_follow_the_key():
  shape = (16, 4, 128, 128)
  mask = np.asarray(keep_mask(jax.random.PRNGKey(0), shape, 0.1))
  n = mask.size
  assert abs(mask.mean() - 0.9) < 5 * np.sqrt(0.09 / n)
  # Every slice along every axis keeps about 90%: no stripes.
  for axis in range(4):
    fractions = mask.mean(axis=tuple(a for a in range(4) if a != axis))
    slice_size = n // shape[axis]
    assert np.all(np.abs(fractions - 0.9) < 6 * np.sqrt(0.09 / slice_size)), axis
  # Neighbours along each axis, and the masks of two keys, are uncorrelated.
  centred = mask - mask.mean()
  for axis in range(4):
    a, b = np.moveaxis(centred, axis, 0)[1:], np.moveaxis(centred, axis, 0)[:-1]
    assert abs((a * b).mean() / centred.var()) < 0.01, axis
  other = np.asarray(keep_mask(jax.random.PRNGKey(1), shape, 0.1))
  assert abs(((other - other.mean()) * centred).mean() / centred.var()) < 0.01
  np.testing.assert_array_equal(mask, keep_mask(jax.random.PRNGKey(0), shape, 0.1))


@pytest.mark.slow  # two compilations (~30 s); test_bfloat16_compute_* runs by default
def test_bfloat16_trains_close_to_float32():
  """Mixed precision: float32 parameters and gradients, bfloat16 matmuls; a few steps
  stay near float32's losses (benchmarks/README.md has the 300-step curves)."""
  histories = {}
  for dtype in ("float32", "bfloat16"):
    config = small_config()
    config.model.num_layers = 1
    config.model.dtype = dtype
    state, histories[dtype] = run_steps(config, 3)
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(state.params))
  for a, b in zip(histories["float32"], histories["bfloat16"]):
    assert np.isfinite(b["loss"]) and np.isfinite(b["grad_norm"])
    assert b["loss"] == pytest.approx(a["loss"], rel=0.02)


@pytest.mark.slow  # ~27 s; the other lengths' steps run by default
def test_length_512_trains():
  """The longest position table: every position embedding is used, the step compiles and
  learns (the paper's base and large configs train at 512)."""
  config = small_config()
  config.model.num_layers = 1
  config.data.max_seq_length = 512
  config.train.steps = 6
  config.optim.warmup_steps = 2
  state, history = run_steps(config, 6, length=512)
  assert int(state.step) == 6 and all(np.isfinite(h["loss"]) for h in history)
  assert history[-1]["loss"] < history[0]["loss"]
