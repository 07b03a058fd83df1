"""The optimizer, the schedule and the compiled train step."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from step_helpers import compile_for_one_device, run_steps, small_config, steps_from, toy_batch
from electra_jax.models import electra
from electra_jax.pretraining import optim, train_step as train_step_lib


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
  training, state, batch = compile_for_one_device(config, toy_batch())
  _, a = steps_from(training, state, batch, 3)
  _, b = steps_from(training, training.init_state(), batch, 3)  # one compilation, two runs
  assert [h["loss"] for h in a] == [h["loss"] for h in b]
  config.train.seed = 1
  _, c = run_steps(config, 3)
  assert [h["loss"] for h in a] != [h["loss"] for h in c]


def test_cpu_step_updates_the_state_in_place():
  """The donated state's arrays are updated where they lie, not copied first.

  With the non-finite guard as a `where` (GPUs' and TPUs' form), XLA's CPU code
  copied every Adam moment each step; a CPU step takes the `lax.cond` form.
  """
  training, _, _ = compile_for_one_device(small_config(), toy_batch())
  hlo = training.train_step.as_text()
  donated = {int(n) for n in re.findall(r"\(\s*(\d+), \{\}, may-alias\)", hlo)}
  entry = hlo[hlo.index("\nENTRY"):]
  sizes = {name: int(np.prod([int(d) for d in dims.split(",") if d]))
           for name, dims, number in re.findall(
               r"%([\w.\-]+) = \w+\[([\d,]*)\]\S* parameter\((\d+)\)", entry)
           if int(number) in donated}
  assert len(sizes) > 100  # the parameters and both Adam moments of every one
  copied = {name: sizes[name] for name in re.findall(r" copy\(%([\w.\-]+)\)", entry)
            if name in sizes}
  assert all(size <= 1 for size in copied.values()), copied  # scalars only: the step counter


@pytest.mark.slow  # ~24 s (its own compile of the step), for CI's 15 minutes
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



# ---------------------------------------------------------------------------
# Gradient accumulation and rematerialisation change how a step computes, not what
# ---------------------------------------------------------------------------


def step_gradients(config, num_microbatches=1, seed=0):
  """The gradient and statistics of one step's loss on a fixed batch with padding."""
  model = electra.build_pretrainer(config)
  params = electra.init_params(model, jax.random.PRNGKey(0), 16, 3)
  rng = np.random.default_rng(seed)
  ids = rng.integers(5, config.model.vocab_size, size=(8, 16))
  ids[:, 0], ids[:, -1], ids[1, 9:], ids[6, 12:] = 2, 3, 0, 0
  batch = {"input_ids": jnp.asarray(ids, jnp.int32),
           "token_type_ids": jnp.zeros((8, 16), jnp.int32)}
  settings = train_step_lib.objective_settings(config)
  return jax.jit(lambda p: train_step_lib.gradients(
      model.apply, p, batch, jax.random.PRNGKey(5), settings, num_microbatches))(params)


def assert_same_gradients(a, b, tolerance):
  (grads_a, stats_a), (grads_b, stats_b) = a, b
  for name in ("loss", "gen_loss", "disc_loss", "gen_correct", "disc_correct", "replaced"):
    assert float(stats_a[name]) == pytest.approx(float(stats_b[name]), rel=tolerance), name
  scale = max(float(jnp.abs(g).max()) for g in jax.tree_util.tree_leaves(grads_a))
  gap = max(float(jnp.abs(x - y).max())
            for x, y in zip(jax.tree_util.tree_leaves(grads_a), jax.tree_util.tree_leaves(grads_b)))
  assert gap <= tolerance * scale, (gap, scale)


def one_layer_config():
  config = small_config()
  config.model.num_layers = 1  # compiles in half the time; what is tested is per layer
  return config


def test_microbatches_give_the_gradient_of_the_whole_batch():
  """Same masking and samples, losses averaged over the whole batch: only the order of
  the sums differs (dropout off, since each microbatch draws its own masks)."""
  config = one_layer_config()
  config.model.dropout_rate = config.model.attention_dropout_rate = 0.0
  assert_same_gradients(step_gradients(config), step_gradients(config, 4), 1e-5)


@pytest.mark.slow
def test_accumulating_train_step_compiles_and_matches_one_batch():
  config = one_layer_config()
  config.model.dropout_rate = config.model.attention_dropout_rate = 0.0
  _, whole = run_steps(config, 2)
  config.train.grad_accum_steps = 2
  _, halves = run_steps(config, 2)
  for a, b in zip(whole, halves):
    assert float(b["loss"]) == pytest.approx(float(a["loss"]), rel=1e-5)
    assert float(b["grad_norm"]) == pytest.approx(float(a["grad_norm"]), rel=1e-4)


# ~25 s each (a second compile of the step): in the slow set, for CI's 15 minutes.
@pytest.mark.parametrize("remat", [pytest.param("full", marks=pytest.mark.slow),
                                   pytest.param("dots", marks=pytest.mark.slow)])
def test_remat_recomputes_the_same_loss_and_gradient(remat):
  config = one_layer_config()
  plain = step_gradients(config)
  config.model.remat = remat
  assert_same_gradients(plain, step_gradients(config), 1e-5)


@pytest.mark.slow  # ~17 s; tests/test_mlm_run.py trains the MLM objective by default
def test_mlm_train_step_lowers_the_loss():
  config = small_config()
  config.objective = "mlm"
  state, history = run_steps(config, 40)
  assert set(state.params) == {"embeddings", "discriminator", "generator_head"}
  losses = [h["mlm_loss"] for h in history]
  assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
  assert history[-1]["mlm_correct"] > history[0]["mlm_correct"]
