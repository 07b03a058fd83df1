"""A compiled train step of a small config on one device, and steps of it on a toy batch."""

import jax
import numpy as np

from conftest import load_config
from electra_jax.pretraining import train_step as train_step_lib
from electra_jax.runtime import sharding


def small_config():
  config = load_config("tiny")
  config.model.vocab_size = 64
  config.data.max_seq_length = 16
  config.train.steps = 100
  config.optim.warmup_steps = 10
  return config


def compile_for_one_device(config, batch):
  """The compiled training, its initial state, and `batch` (numpy) as the step takes it."""
  config.train.batch_size = len(batch["input_ids"])
  training = train_step_lib.compile_training(config, sharding.create_mesh(config.mesh))
  return (training, training.init_state(),
          sharding.global_batch(batch, training.batch_sharding, config.train.batch_size))


def toy_batch(length=16):
  rng = np.random.default_rng(0)
  ids = rng.integers(5, 20, size=(8, length))  # a tiny vocabulary: easy to learn
  ids[:, 0], ids[:, -1] = 2, 3
  return {"input_ids": ids.astype(np.int32), "token_type_ids": np.zeros((8, length), np.int32)}


def steps_from(training, state, batch, num_steps):
  history = []
  for _ in range(num_steps):
    state, stats = training.train_step(state, batch)
    history.append(jax.device_get(stats))
  return state, history


def run_steps(config, num_steps, length=16):
  return steps_from(*compile_for_one_device(config, toy_batch(length)), num_steps)
