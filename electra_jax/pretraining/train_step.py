"""The train state and the compiled train and eval steps: pure functions of their inputs.

A step is a function of (state, batch) alone: its key is
`fold_in(state.rng, state.step)`, so replaying the same batches from a saved
state repeats a run exactly. Both steps are compiled once, ahead of time, for
a device mesh (`compile_training`, `compile_eval_step`): the state stays in its
shardings (sharding.py) and its buffers are donated to the next state.
"""

import functools
import time
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh, NamedSharding

from electra_jax import config as config_lib
from electra_jax import target
from electra_jax.models import electra
from electra_jax.performance import program_cost
from electra_jax.pretraining import objective, optim
from electra_jax.runtime import sharding

Batch = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue: a plain pytree."""

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array  # the run's base key; each step folds in its number


def objective_settings(config: ml_collections.ConfigDict) -> objective.ObjectiveSettings:
  mask_token_prob, random_token_prob = config_lib.masking_probs(config)
  e = config.electra
  return objective.ObjectiveSettings(
      objective=config.objective, mask_rate=config.masking.mask_rate,
      mask_token_prob=mask_token_prob, random_token_prob=random_token_prob,
      vocab_size=config.model.vocab_size,
      max_predictions=config_lib.max_predictions_per_seq(config),
      gen_weight=e.gen_weight, disc_weight=e.disc_weight, temperature=e.temperature)


def create_train_state(config: ml_collections.ConfigDict, model: electra.Pretrainer,
                       optimizer: optax.GradientTransformation) -> TrainState:
  """Initial state from `train.seed`: parameters, optimizer moments, step 0.

  Parameters and moments come boxed with their logical axis names, for
  sharding.sharded_initializer, which creates each in its shards and unboxes it.
  """
  init_key, run_key = jax.random.split(jax.random.PRNGKey(config.train.seed))
  params = electra.init_partitioned_params(model, init_key, config.data.max_seq_length,
                                           config_lib.max_predictions_per_seq(config))
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params), rng=run_key)


def gradients(apply_fn: Callable, params: Any, batch: Batch, key: jax.Array,
              settings: objective.ObjectiveSettings, num_microbatches: int = 1
              ) -> tuple[Any, dict]:
  """The gradient of the batch's loss and its statistics, in `num_microbatches` pieces.

  The batch is masked as a whole, then split into microbatches whose gradients
  are summed in a `lax.scan`: the same gradient as the batch in one piece (up
  to float rounding and dropout's draws), with the activations of one
  microbatch. Microbatch j takes rows j, j + n, j + 2n, ... (n microbatches), so
  each device keeps its own rows of every microbatch.
  """
  inputs = objective.mask_batch(key, batch, settings)
  denominators = objective.loss_denominators(inputs)

  def microbatch_gradients(microbatch: objective.MaskedInput, index: int | jax.Array):
    loss_fn = lambda p: objective.microbatch_loss(apply_fn, p, microbatch, denominators, key,
                                                  settings, deterministic=False,
                                                  microbatch=index)
    (_, (stats, _)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return grads, stats

  if num_microbatches == 1:
    return microbatch_gradients(inputs, 0)
  split = jax.tree.map(
      lambda x: x.reshape(-1, num_microbatches, *x.shape[1:]).swapaxes(0, 1), inputs)

  def accumulate(totals, indexed_microbatch):
    update = microbatch_gradients(indexed_microbatch[1], indexed_microbatch[0])
    return jax.tree.map(jnp.add, totals, update), None

  stat_shapes = jax.eval_shape(microbatch_gradients, jax.tree.map(lambda x: x[0], split), 0)[1]
  zeros = (jax.tree.map(jnp.zeros_like, params),
           jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), stat_shapes))
  totals, _ = jax.lax.scan(accumulate, zeros, (jnp.arange(num_microbatches), split))
  return totals


def make_train_step(model: electra.Pretrainer, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule, settings: objective.ObjectiveSettings,
                    state_shardings: Any, batch_sharding: NamedSharding,
                    update_if: target.UpdateIf, grad_accum_steps: int = 1
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
  """One jitted update; the old state's buffers are donated to the new one.

  The state keeps `state_shardings`; the statistics come back replicated, so
  that every process can read them. `update_if` is the target's form of the
  update on a finite step (target.py).
  """

  def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
    key = jax.random.fold_in(state.rng, state.step)
    grads, stats = gradients(model.apply, state.params, batch, key, settings, grad_accum_steps)
    stats = dict(stats, grad_norm=optax.tree.norm(grads), learning_rate=schedule(state.step))

    def update(params, opt_state):
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state

    # A NaN or Inf loss or gradient leaves parameters and moments as they were; the
    # loop reads it from the statistics and acts as `train.on_nonfinite` says.
    finite = jnp.isfinite(stats["loss"]) & jnp.isfinite(stats["grad_norm"])
    params, opt_state = update_if(finite, update, state.params, state.opt_state)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), stats

  replicated = sharding.replicated(batch_sharding.mesh)
  return jax.jit(train_step, in_shardings=(state_shardings, batch_sharding),
                 out_shardings=(state_shardings, replicated), donate_argnums=0)


def make_eval_step(model: electra.Pretrainer, settings: objective.ObjectiveSettings,
                   param_shardings: Any, batch_sharding: NamedSharding
                   ) -> Callable[[Any, Batch, jax.Array], tuple[dict, dict]]:
  """Loss statistics and (ELECTRA) per-token discriminator outputs, dropout off.

  The caller passes a fixed key so that every evaluation corrupts the held-out
  data the same way and evaluations are comparable across steps.
  """

  def eval_step(params: Any, batch: Batch, key: jax.Array) -> tuple[dict, dict]:
    _, (stats, disc_outputs) = objective.pretraining_loss(model.apply, params, batch, key, settings,
                                                      deterministic=True)
    return stats, disc_outputs

  replicated = sharding.replicated(batch_sharding.mesh)
  return jax.jit(eval_step, in_shardings=(param_shardings, batch_sharding, replicated),
                 out_shardings=replicated)


class CompiledTraining(NamedTuple):
  """A config's initial state and train step for one mesh, compiled ahead of time."""

  init_state: Callable[[], TrainState]  # creates the initial state in its shardings
  train_step: Callable[[TrainState, Batch], tuple[TrainState, dict]]
  abstract_state: TrainState  # shapes, dtypes and shardings of the state
  batch_sharding: NamedSharding
  cost: dict[str, float]  # FLOPs and bytes per device of one step (program_cost.compiled_cost)
  compile_seconds: float


def compile_training(config: ml_collections.ConfigDict, mesh: Mesh,
                     model: nn.Module | None = None) -> CompiledTraining:
  """Compiles the train step for `mesh` from shapes alone.

  Nothing is allocated until `init_state()` is called, so a model too big for
  this machine still compiles and reports what it would need (`train.dry_run`).
  `model` defaults to the config's, with the forms of its operations chosen for
  the mesh's devices (target.py); the compile CLI passes a reference model.
  """
  start = time.perf_counter()
  choices = target.choices(mesh.devices.flat, config.model.dtype)
  model = model or electra.build_pretrainer(config, choices.ops)
  optimizer = optim.build_optimizer(config)
  rules = sharding.axis_rules(config.mesh)
  init = functools.partial(create_train_state, config, model, optimizer)
  state, state_shardings = abstract_train_state(config, mesh, init)
  batch_sharding = sharding.batch_sharding(mesh, config.train.batch_size,
                                           config.train.grad_accum_steps)
  train_step = make_train_step(model, optimizer, optim.learning_rate_schedule(config),
                               objective_settings(config), state_shardings, batch_sharding,
                               choices.update_if, config.train.grad_accum_steps)
  with sharding.activate(mesh, rules):  # tracing applies the model's activation constraints
    train_step = train_step.lower(state, _abstract_batch(config, batch_sharding)).compile()
  return CompiledTraining(
      init_state=sharding.sharded_initializer(init, state_shardings), train_step=train_step,
      abstract_state=state, batch_sharding=batch_sharding,
      cost=program_cost.compiled_cost(train_step, mesh.size),
      compile_seconds=time.perf_counter() - start)


def abstract_train_state(config: ml_collections.ConfigDict, mesh: Mesh,
                         init: Callable[[], TrainState] | None = None
                         ) -> tuple[TrainState, Any]:
  """The state as shapes, dtypes and shardings on `mesh` (nothing allocated), and the shardings.

  `init` creates the state (default: the config's model and optimizer, fresh).
  """
  init = init or functools.partial(create_train_state, config, electra.build_pretrainer(config),
                                   optim.build_optimizer(config))
  return sharding.abstract_sharded(init, mesh, sharding.axis_rules(config.mesh))


def compile_eval_step(config: ml_collections.ConfigDict, mesh: Mesh, abstract_params: Any,
                      model: nn.Module | None = None
                      ) -> Callable[[Any, Batch, jax.Array], tuple[dict, dict]]:
  """Compiles the eval step for parameters laid out as `abstract_params` say."""
  model = model or electra.build_pretrainer(
      config, target.choices(mesh.devices.flat, config.model.dtype).ops)
  rules = sharding.axis_rules(config.mesh)
  batch_sharding = sharding.batch_sharding(mesh, config.train.batch_size)
  param_shardings = jax.tree.map(lambda x: x.sharding, abstract_params)
  key = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=sharding.replicated(mesh))
  with sharding.activate(mesh, rules):
    eval_step = make_eval_step(model, objective_settings(config), param_shardings, batch_sharding)
    return eval_step.lower(abstract_params, _abstract_batch(config, batch_sharding), key).compile()


def _abstract_batch(config: ml_collections.ConfigDict,
                    batch_sharding: NamedSharding) -> dict[str, jax.ShapeDtypeStruct]:
  shape = (config.train.batch_size, config.data.max_seq_length)
  return {name: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=batch_sharding)
          for name in ("input_ids", "token_type_ids")}
