"""Fine-tuning's state and its train and predict steps, compiled ahead of time for a mesh.

The pattern is pre-training's (train_step.py): the state is a `TrainState`
(params, optimizer state, step, base key), created directly in its shardings,
donated from each step to the next; a step's dropout key is
`fold_in(state.rng, state.step)`, so a step is a function of (state, batch).
"""

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding

from electra_jax.finetune import model as model_lib
from electra_jax.pretraining.train_step import TrainState
from electra_jax.runtime import sharding

Batch = dict[str, jax.Array]


def create_state(model: model_lib.FineTuningModel, optimizer: optax.GradientTransformation,
                 seed: int, seq_length: int) -> TrainState:
  """Random parameters (boxed with their axis names), zero moments, step 0, from `seed`."""
  init_key, run_key = jax.random.split(jax.random.PRNGKey(seed))
  params = model_lib.init_partitioned_params(model, init_key, seq_length)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params), rng=run_key)


def make_train_step(model: model_lib.FineTuningModel, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule) -> Callable[[TrainState, Batch],
                                                          tuple[TrainState, dict]]:
  def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
    key = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params):
      outputs = model.apply({"params": params}, batch["input_ids"], batch["token_type_ids"],
                            deterministic=False, rngs={"dropout": key})
      return model_lib.loss(model.kind, outputs, batch)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    stats = dict(loss=loss, grad_norm=optax.tree.norm(grads), learning_rate=schedule(state.step))
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state), stats

  return train_step


def make_predict_step(model: model_lib.FineTuningModel) -> Callable[[Any, Batch], Any]:
  def predict_step(params: Any, batch: Batch) -> Any:
    outputs = model.apply({"params": params}, batch["input_ids"], batch["token_type_ids"])
    return model_lib.predictions(model.kind, outputs, batch)

  return predict_step


@dataclasses.dataclass(frozen=True)
class CompiledFineTuning:
  """A model's initial state, train step and predict step, compiled for one mesh."""

  init_state: Callable[[], TrainState]
  train_step: Callable[[TrainState, Batch], tuple[TrainState, dict]]
  predict_step: Callable[[Any, Batch], Any]
  abstract_state: TrainState  # shapes, dtypes and shardings
  train_sharding: NamedSharding
  predict_sharding: NamedSharding


def compile_finetuning(model: model_lib.FineTuningModel, optimizer: optax.GradientTransformation,
                       schedule: optax.Schedule, mesh: Mesh, rules: sharding.AxisRules,
                       seed: int, train_rows: dict[str, np.ndarray], batch_size: int,
                       predict_batch_size: int) -> CompiledFineTuning:
  """Compiles both steps from shapes alone; `train_rows` give the batch's names and shapes."""
  seq_length = train_rows["input_ids"].shape[1]
  init = functools.partial(create_state, model, optimizer, seed, seq_length)
  state, state_shardings = sharding.abstract_sharded(init, mesh, rules)
  train_sharding = sharding.batch_sharding(mesh, batch_size)
  predict_sharding = sharding.batch_sharding(mesh, predict_batch_size)
  replicated = sharding.replicated(mesh)
  param_shardings = jax.tree.map(lambda x: x.sharding, state.params)
  train_step = jax.jit(make_train_step(model, optimizer, schedule),
                       in_shardings=(state_shardings, train_sharding),
                       out_shardings=(state_shardings, replicated), donate_argnums=0)
  predict_step = jax.jit(make_predict_step(model), in_shardings=(param_shardings, predict_sharding),
                         out_shardings=replicated)
  abstract = lambda rows, size, where: {
      name: jax.ShapeDtypeStruct((size, *x.shape[1:]), x.dtype, sharding=where)
      for name, x in rows.items()}
  inputs = {name: train_rows[name] for name in ("input_ids", "token_type_ids")}
  with sharding.activate(mesh, rules):  # tracing applies the model's activation constraints
    train_step = train_step.lower(state, abstract(train_rows, batch_size, train_sharding)).compile()
    predict_step = predict_step.lower(
        state.params, abstract(inputs, predict_batch_size, predict_sharding)).compile()
  return CompiledFineTuning(
      init_state=sharding.sharded_initializer(init, state_shardings), train_step=train_step,
      predict_step=predict_step, abstract_state=state, train_sharding=train_sharding,
      predict_sharding=predict_sharding)


def predict_in_batches(predict: Callable[[dict[str, np.ndarray]], Any],
                       features: dict[str, np.ndarray], batch_size: int) -> Any:
  """`predict` on every row of `features` in batches of `batch_size` (the last one padded, so
  one compiled program serves all), its outputs as numpy arrays, one row per feature row."""
  count = len(features["input_ids"])
  outputs = []
  for start in range(0, count, batch_size):
    batch = {k: v[start:start + batch_size] for k, v in features.items()}
    padding = batch_size - len(batch["input_ids"])
    batch = {k: np.pad(v, [(0, padding)] + [(0, 0)] * (v.ndim - 1)) for k, v in batch.items()}
    outputs.append(jax.device_get(predict(batch)))
  return jax.tree.map(lambda *xs: np.concatenate(xs)[:count], *outputs)
