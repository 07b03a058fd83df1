"""What a frozen encoder gives a probe: its last hidden states, and sentence vectors from them."""

from typing import Callable

import flax.linen as nn
import jax
import numpy as np

from electra_jax.convert.pretrained import Discriminator
from electra_jax.finetune import model as finetune_model
from electra_jax.finetune import steps, tasks
from electra_jax.vocabulary import PAD_ID

BATCH_SIZE = 64
Encode = Callable[[dict[str, np.ndarray]], np.ndarray]


def encoder(discriminator: Discriminator) -> Encode:
  """rows (`input_ids`, `token_type_ids`) -> last hidden states [rows, length, hidden], float32.

  The fine-tuning model's encoder without a head, compiled once for BATCH_SIZE rows.
  """
  model = finetune_model.build_model(discriminator.model, tasks.TAGGING, 1)
  params = {name: discriminator.params[name] for name in finetune_model.PRETRAINED}
  states = jax.jit(lambda p, batch: model.apply(
      {"params": p}, batch["input_ids"], batch["token_type_ids"], encoder_only=True))
  return lambda rows: np.asarray(steps.predict_in_batches(
      lambda batch: states(params, batch), rows, BATCH_SIZE), np.float32)


def random_discriminator(discriminator: Discriminator, seed: int) -> Discriminator:
  """The same architecture and tokenizer with freshly initialized weights: the baseline."""
  model = finetune_model.build_model(discriminator.model, tasks.TAGGING, 1)
  fresh = jax.device_get(nn.unbox(finetune_model.init_partitioned_params(
      model, jax.random.PRNGKey(seed), 8)))
  return Discriminator(discriminator.model, {name: fresh[name] for name in
                                             finetune_model.PRETRAINED},
                       discriminator.tokenizer)


def mean_pooled(states: np.ndarray, input_ids: np.ndarray) -> np.ndarray:
  """The mean of each row's states over its real tokens ([CLS] and [SEP] included)."""
  real = (input_ids != PAD_ID)[..., None]
  return (states * real).sum(1) / real.sum(1)
