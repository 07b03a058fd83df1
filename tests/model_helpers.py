"""A tiny model and batch for tests of the models and of their operations' forms."""

import jax
import jax.numpy as jnp
import numpy as np

from conftest import load_config
from electra_jax.models import electra
from electra_jax.models.ops import Ops


def tiny_setup(ops: Ops = Ops(), **overrides):
  """The tiny config with a 64-token vocabulary and length 16, its model and parameters.

  `overrides` name fields as section__field=value; `ops` are the model's forms.
  """
  config = load_config("tiny")
  config.model.vocab_size = 64
  config.data.max_seq_length = 16
  for key, value in overrides.items():
    section, field = key.split("__")
    config[section][field] = value
  model = electra.build_pretrainer(config, ops)
  params = electra.init_params(model, jax.random.PRNGKey(0), 16, 3)
  return config, model, params


def batch(vocab=64, batch_size=4, length=16, seed=0):
  """Random ids, [CLS] first and [SEP] last; row 0 padded from position 10."""
  ids = np.random.default_rng(seed).integers(5, vocab, size=(batch_size, length))
  ids[:, 0], ids[:, -1], ids[0, 10:] = 2, 3, 0
  return {"input_ids": jnp.asarray(ids, jnp.int32),
          "token_type_ids": jnp.zeros((batch_size, length), jnp.int32)}
