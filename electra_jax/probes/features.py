"""What a frozen encoder gives a probe: its last hidden states, and sentence vectors from them."""

import functools
import json
from typing import Callable

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from electra_jax.convert.pretrained import Discriminator
from electra_jax.finetune import model as finetune_model
from electra_jax.finetune import steps, tasks
from electra_jax.vocabulary import PAD_ID

BATCH_SIZE = 64
Encode = Callable[[dict[str, np.ndarray]], np.ndarray]


def encoder(discriminator: Discriminator) -> Encode:
  """rows (`input_ids`, `token_type_ids`) -> last hidden states [rows, length, hidden], float32.

  The fine-tuning model's encoder without a head, run BATCH_SIZE rows at a time.
  """
  _, states = _encoder_of_model(discriminator)
  params = {name: discriminator.params[name] for name in finetune_model.PRETRAINED}
  return lambda rows: np.asarray(steps.predict_in_batches(
      lambda batch: states(params, batch), rows, BATCH_SIZE), np.float32)


def random_discriminator(discriminator: Discriminator, seed: int) -> Discriminator:
  """The same architecture and tokenizer with freshly initialized weights: the baseline."""
  model, _ = _encoder_of_model(discriminator)
  fresh = jax.device_get(nn.unbox(finetune_model.init_partitioned_params(
      model, jax.random.PRNGKey(seed), 8)))
  return Discriminator(discriminator.model, {name: fresh[name] for name in
                                             finetune_model.PRETRAINED},
                       discriminator.tokenizer)


def _encoder_of_model(discriminator: Discriminator) -> tuple[finetune_model.FineTuningModel,
                                                             Callable]:
  return _encoder_of(discriminator.model.to_json_best_effort(sort_keys=True))


@functools.lru_cache(maxsize=4)
def _encoder_of(model_json: str) -> tuple[finetune_model.FineTuningModel, Callable]:
  """The encoder of a model config (as JSON, to be a cache key) and its jitted apply: built
  and compiled once for all the probes of a run and its random baseline."""
  model = finetune_model.build_model(ml_collections.ConfigDict(json.loads(model_json)),
                                     tasks.TAGGING, 1)
  return model, jax.jit(lambda p, batch: model.apply(
      {"params": p}, batch["input_ids"], batch["token_type_ids"], encoder_only=True))


def mean_pooled(states: np.ndarray, input_ids: np.ndarray) -> np.ndarray:
  """The mean of each row's states over its real tokens ([CLS] and [SEP] included)."""
  real = (input_ids != PAD_ID)[..., None]
  return (states * real).sum(1) / real.sum(1)
