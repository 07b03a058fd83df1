"""Model shapes, parameter counts and the sharing of embeddings between networks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_config
from electra_jax import objective, train_step as train_step_lib
from electra_jax.models import electra


def test_small_matches_electra_small_parameter_counts():
  counts = electra.parameter_counts(load_config("small"))
  assert counts["discriminator"] == 13_549_057
  assert counts["generator"] == 647_162


@pytest.mark.parametrize("name, discriminator", [("base", 109_483_009), ("large", 335_142_913)])
def test_base_and_large_sizes(name, discriminator):
  assert electra.parameter_counts(load_config(name))["discriminator"] == discriminator


def tiny_setup(**overrides):
  config = load_config("tiny")
  config.model.vocab_size = 64
  config.data.max_seq_length = 16
  for key, value in overrides.items():
    section, field = key.split("__")
    config[section][field] = value
  model = electra.build_pretrainer(config)
  params = electra.init_params(model, jax.random.PRNGKey(0), 16, 3)
  return config, model, params


def batch(vocab=64, batch_size=4, length=16, seed=0):
  ids = np.random.default_rng(seed).integers(5, vocab, size=(batch_size, length))
  ids[:, 0], ids[:, -1], ids[0, 10:] = 2, 3, 0
  return {"input_ids": jnp.asarray(ids, jnp.int32),
          "token_type_ids": jnp.zeros((batch_size, length), jnp.int32)}


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
    _, (stats, _) = objective.electra_loss(model.apply, p, batch(), jax.random.PRNGKey(3),
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
  grads = jax.grad(lambda p: objective.electra_loss(
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
