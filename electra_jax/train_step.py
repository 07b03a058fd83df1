"""The train state and the compiled train and eval steps: pure functions of their inputs.

A step is a function of (state, batch) alone: its key is
`fold_in(state.rng, state.step)`, so replaying the same batches from a saved
state repeats a run exactly.
"""

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from electra_jax import config as config_lib
from electra_jax import objective
from electra_jax.models import electra

Batch = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue: a plain pytree."""

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array  # the run's base key; each step folds in its number


def objective_settings(config: ml_collections.ConfigDict) -> objective.ObjectiveSettings:
  o = config.objective
  return objective.ObjectiveSettings(
      mask_rate=o.mask_rate, mask_token_prob=o.mask_token_prob,
      max_predictions=config_lib.max_predictions_per_seq(config),
      gen_weight=o.gen_weight, disc_weight=o.disc_weight, temperature=o.temperature)


def create_train_state(config: ml_collections.ConfigDict, model: electra.ElectraPretrainer,
                       optimizer: optax.GradientTransformation, params: Any = None) -> TrainState:
  """Initial state from `train.seed`: parameters (unless given), optimizer moments, step 0."""
  init_key, run_key = jax.random.split(jax.random.PRNGKey(config.train.seed))
  if params is None:
    params = electra.init_params(model, init_key, config.data.max_seq_length,
                                 config_lib.max_predictions_per_seq(config))
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params), rng=run_key)


def make_train_step(model: electra.ElectraPretrainer, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule, settings: objective.ObjectiveSettings
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
  """One jitted update; the old state's buffers are donated to the new one."""

  def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
    key = jax.random.fold_in(state.rng, state.step)
    loss_fn = lambda p: objective.electra_loss(model.apply, p, batch, key, settings,
                                               deterministic=False)
    (_, (stats, _)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    stats = dict(stats, grad_norm=optax.tree.norm(grads), learning_rate=schedule(state.step))
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), stats

  return jax.jit(train_step, donate_argnums=0)


def make_eval_step(model: electra.ElectraPretrainer, settings: objective.ObjectiveSettings
                   ) -> Callable[[Any, Batch, jax.Array], tuple[dict, dict]]:
  """Loss statistics and per-token discriminator outputs, dropout off.

  The caller passes a fixed key so that every evaluation corrupts the held-out
  data the same way and evaluations are comparable across steps.
  """

  def eval_step(params: Any, batch: Batch, key: jax.Array) -> tuple[dict, dict]:
    _, (stats, disc_outputs) = objective.electra_loss(model.apply, params, batch, key, settings,
                                                      deterministic=True)
    return stats, disc_outputs

  return jax.jit(eval_step)
