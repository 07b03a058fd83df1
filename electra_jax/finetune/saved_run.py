"""A finished fine-tuning run read back: its config, encoder, best parameters, tokenizer, labels.

What `electra_jax.export` turns into a transformers model and what
`electra_jax.predict` runs on test sets. The run's workdir holds config.json
(with its `task`), model_config.json (the encoder's `model` section), the
tokenizer, labels.json (the class or tag names in id order) and best/params.msgpack
(the epoch with the best dev score). Runs written before labels.json existed
take GLUE's label names from the task, and CoNLL's tags again from the
training file in the run's data_dir.
"""

import dataclasses
import json
import os

import flax.serialization
import ml_collections

from electra_jax import config as config_lib
from electra_jax.convert import hf_tokenizer
from electra_jax.data import any_tokenizer
from electra_jax.runtime import fileio
from electra_jax.errors import DataError
from electra_jax.finetune import conll, glue, tasks
from electra_jax.finetune import config as finetune_config
from electra_jax.runtime.workdir import (BEST_DIR, CONFIG_FILE, LABELS_FILE, MODEL_CONFIG_FILE,
                                         PARAMS_FILE)


@dataclasses.dataclass(frozen=True)
class FineTunedRun:
  """A fine-tuned model: `params` holds embeddings, discriminator and head."""

  workdir: str
  config: ml_collections.ConfigDict  # the fine-tuning config (task, data_dir, lengths, ...)
  model: ml_collections.ConfigDict  # the encoder's `model` section
  params: dict
  tokenizer: any_tokenizer.AnyTokenizer
  labels: tuple[str, ...] | None  # class or tag names in id order; None: regression, spans

  @property
  def task(self) -> tasks.Task:
    return tasks.TASKS[self.config.task]


def is_finetuning_run(directory: str) -> bool:
  """Whether `directory` holds a fine-tuning run (its config.json names a task)."""
  try:
    return "task" in _read_json(os.path.join(directory, CONFIG_FILE))
  except DataError:
    return False


def read(workdir: str) -> FineTunedRun:
  """The fine-tuning run in `workdir`, with the parameters of its best epoch."""
  saved = _read_json(os.path.join(workdir, CONFIG_FILE))
  if saved.get("task") not in tasks.TASKS:
    raise DataError(f"{workdir}/{CONFIG_FILE} names no fine-tuning task; is {workdir} the "
                    "--workdir of electra_jax.finetune?")
  config = finetune_config.default_config(saved["task"])
  config.update(saved)
  model = config_lib.default_config().model
  model.update(_read_json(os.path.join(workdir, MODEL_CONFIG_FILE)))
  params_path = os.path.join(workdir, BEST_DIR, PARAMS_FILE)
  try:
    with fileio.open_binary(params_path) as f:
      params = flax.serialization.msgpack_restore(f.read())
  except FileNotFoundError:
    raise DataError(f"{params_path} does not exist: a fine-tuning run writes it after its first "
                    "epoch; let the run finish an epoch") from None
  except (OSError, ValueError) as error:
    raise DataError(f"cannot read {params_path}: {error}") from None
  tokenizer = any_tokenizer.load_tokenizer(workdir, hf_tokenizer.wordpiece_lowercase(workdir))
  if tokenizer is None:
    raise DataError(f"{workdir} has no tokenizer (tokenizer.model or vocab.txt), which "
                    "fine-tuning writes when it starts; copy the one of --config.init there")
  return FineTunedRun(workdir, config, model, params, tokenizer, _labels(workdir, config))


def _labels(workdir: str, config: ml_collections.ConfigDict) -> tuple[str, ...] | None:
  path = os.path.join(workdir, LABELS_FILE)
  if fileio.exists(path):
    return tuple(_read_json(path))
  if config.task in glue.FORMATS:
    return glue.FORMATS[config.task].labels
  if config.task == "conll":
    try:
      return tuple(conll.read_training_tags(config))
    except DataError as error:
      raise DataError(f"{workdir} has no {LABELS_FILE} (it predates it), and its tag names "
                      f"cannot be read again from its training data: {error}") from None
  return None


def _read_json(path: str):
  try:
    with fileio.open_text(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise DataError(f"{path} does not exist; is {os.path.dirname(path)} a fine-tuning "
                    "workdir?") from None
  except (OSError, ValueError) as error:
    raise DataError(f"cannot read {path}: {error}") from None
