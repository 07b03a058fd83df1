"""The optimizer, the schedule and the compiled train step."""

import jax
import numpy as np
import optax
import pytest

from conftest import load_config
from electra_jax import optim, sharding, train_step as train_step_lib
from electra_jax.models import electra


def small_config():
  config = load_config("tiny")
  config.model.vocab_size = 64
  config.data.max_seq_length = 16
  config.train.steps = 100
  config.optim.warmup_steps = 10
  return config


def test_schedule_warms_up_then_decays_to_zero():
  schedule = optim.learning_rate_schedule(small_config())
  peak = 1e-3
  assert float(schedule(0)) == 0
  assert float(schedule(5)) == pytest.approx(peak / 2)
  assert float(schedule(10)) == pytest.approx(peak)
  assert float(schedule(55)) == pytest.approx(peak / 2)
  assert float(schedule(100)) == pytest.approx(0, abs=1e-12)


def test_weight_decay_skips_layer_norm_and_biases():
  config = small_config()
  params = electra.init_params(electra.build_pretrainer(config), jax.random.PRNGKey(0), 16, 3)
  mask = optim.weight_decay_mask(params)
  assert mask["embeddings"]["word_embeddings"]["embedding"]
  assert mask["discriminator"]["layer_0"]["intermediate"]["kernel"]
  assert not mask["discriminator"]["layer_0"]["intermediate"]["bias"]
  assert not mask["discriminator"]["layer_0"]["output_layer_norm"]["scale"]
  assert not mask["embeddings"]["layer_norm"]["bias"]
  assert not mask["generator_head"]["output_bias"]


def compile_for_one_device(config, batch):
  """The compiled training, its initial state, and `batch` (numpy) as the step takes it."""
  config.train.batch_size = len(batch["input_ids"])
  training = train_step_lib.compile_training(config, sharding.create_mesh(config.mesh))
  return (training, training.init_state(),
          sharding.global_batch(batch, training.batch_sharding, config.train.batch_size))


def run_steps(config, num_steps):
  rng = np.random.default_rng(0)
  ids = rng.integers(5, 20, size=(8, 16))  # a tiny vocabulary: easy to learn
  ids[:, 0], ids[:, -1] = 2, 3
  training, state, batch = compile_for_one_device(
      config, {"input_ids": ids.astype(np.int32), "token_type_ids": np.zeros((8, 16), np.int32)})
  history = []
  for _ in range(num_steps):
    state, stats = training.train_step(state, batch)
    history.append(jax.device_get(stats))
  return state, history


def test_train_step_updates_state_and_lowers_the_loss():
  config = small_config()
  state, history = run_steps(config, 40)
  assert int(state.step) == 40
  losses = [h["loss"] for h in history]
  assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
  assert all(np.isfinite(h["grad_norm"]) for h in history)
  assert history[0]["learning_rate"] == 0 and history[10]["learning_rate"] == pytest.approx(1e-3)


def test_same_seed_same_run_and_other_seed_other_run():
  config = small_config()
  _, a = run_steps(config, 3)
  _, b = run_steps(config, 3)
  assert [h["loss"] for h in a] == [h["loss"] for h in b]
  config.train.seed = 1
  _, c = run_steps(config, 3)
  assert [h["loss"] for h in a] != [h["loss"] for h in c]


def test_gradient_clipping_at_global_norm():
  config = small_config()
  config.optim.max_grad_norm = 1e-3
  config.optim.warmup_steps = 0
  config.optim.weight_decay = 0.0
  # Adam normalises the update, so the clipping shows in its first moment.
  ids = np.full((2, 16), 7, np.int32)
  ids[:, 0], ids[:, -1] = 2, 3
  training, state, batch = compile_for_one_device(
      config, {"input_ids": ids, "token_type_ids": np.zeros((2, 16), np.int32)})
  state, stats = training.train_step(state, batch)
  adam_state = state.opt_state[1][0]
  first_moment_norm = float(optax.tree.norm(adam_state.mu))
  assert float(stats["grad_norm"]) > 1e-3
  # mu = (1 - b1) * clipped gradient after one step.
  assert first_moment_norm == pytest.approx(0.1 * 1e-3, rel=1e-3)

