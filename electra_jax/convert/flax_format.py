"""Our own format: what a pre-training run leaves in its workdir, and `--format=flax` exports.

  config.json      the resolved config; its `model` section describes the parameters
  params.msgpack   the parameter tree, `flax.serialization.msgpack_serialize`d: a run's
                   holds both networks (embeddings, generator, generator_head,
                   discriminator, discriminator_head), a `--format=flax` export only the
                   discriminator (embeddings, discriminator, discriminator_head)
  tokenizer.model  the SentencePiece tokenizer, or
  vocab.txt        a WordPiece vocabulary (lower-cased when data.lowercase is True)

Load an export with `electra_jax.convert.pretrained.load_discriminator(DIR)`, or
by hand: `flax.serialization.msgpack_restore(open(DIR + '/params.msgpack', 'rb').read())`
is a dict that `ElectraPretrainer.apply({'params': p}, ids, types,
method='discriminator_logits')` runs, for the model `build_pretrainer(config)`.
"""

import dataclasses
import json
import os
from typing import Sequence

import flax.serialization
import flax.traverse_util
import jax
import ml_collections
import numpy as np

from electra_jax import config as config_lib
from electra_jax.convert.hf_params import NETWORKS
from electra_jax.data import tokenizer_files
from electra_jax.errors import ConfigError, DataError
from electra_jax.fileio import atomic_write
from electra_jax.models import electra

CONFIG_FILE = "config.json"
PARAMS_FILE = "params.msgpack"


@dataclasses.dataclass(frozen=True)
class SavedModel:
  """A config, parameters that fit it, and the tokenizer whose ids they were trained on."""

  config: ml_collections.ConfigDict
  params: dict
  tokenizer: tokenizer_files.AnyTokenizer


def is_saved_model(directory: str) -> bool:
  return os.path.exists(os.path.join(directory, PARAMS_FILE))


def param_shapes(config: ml_collections.ConfigDict) -> dict:
  """The parameter tree `config` describes, as shapes (nothing is allocated)."""
  model = electra.build_pretrainer(config)
  return jax.eval_shape(lambda rng: electra.init_params(model, rng, 8, 1), jax.random.PRNGKey(0))


def read(directory: str, networks: Sequence[str]) -> SavedModel:
  """The parameters of `networks` ('discriminator', 'generator') saved in `directory`."""
  config = read_config(os.path.join(directory, CONFIG_FILE))
  params_path = os.path.join(directory, PARAMS_FILE)
  try:
    with open(params_path, "rb") as f:
      saved = flax.serialization.msgpack_restore(f.read())
  except FileNotFoundError:
    raise DataError(f"{params_path} does not exist: a run writes it when training ends") from None
  except (OSError, ValueError) as error:
    raise DataError(f"cannot read {params_path}: {error}") from None
  names = sorted({name for network in networks for name in NETWORKS[network]})
  params = {name: saved.get(name) for name in names}
  shapes = param_shapes(config)
  _check_shapes(params, {name: shapes[name] for name in names}, params_path)
  tokenizer = tokenizer_files.load_tokenizer(directory, config.data.lowercase)
  if tokenizer is None:
    raise DataError(f"{directory} has no tokenizer ({tokenizer_files.SENTENCEPIECE_FILE} or "
                    "vocab.txt); copy the one the model was trained with into it")
  return SavedModel(config, params, tokenizer)


def write(directory: str, model: SavedModel) -> None:
  """Writes config.json, params.msgpack and the tokenizer into `directory`."""
  atomic_write(os.path.join(directory, CONFIG_FILE), model.config.to_json_best_effort(indent=2))
  atomic_write(os.path.join(directory, PARAMS_FILE),
               flax.serialization.msgpack_serialize(jax.device_get(model.params)))
  tokenizer_files.save_tokenizer(model.tokenizer, directory)


def read_config(path: str) -> ml_collections.ConfigDict:
  """A saved config.json over the defaults of this version (fields it lacks keep them)."""
  try:
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
  except FileNotFoundError:
    raise DataError(f"{path} does not exist; is {os.path.dirname(path)} a workdir or an "
                    "export of electra_jax?") from None
  except (OSError, ValueError) as error:
    raise DataError(f"cannot read {path}: {error}") from None
  config = config_lib.default_config()
  for section, fields in saved.items():
    for field, value in fields.items():
      if section not in config or field not in config[section]:
        raise DataError(f"{path} has the field '{section}.{field}', which this version of "
                        "electra_jax does not know; was it written by a newer one?")
      try:
        config[section][field] = value
      except (TypeError, ValueError):
        raise DataError(f"{path}: '{section}.{field}' = {value!r} has the wrong type") from None
  try:
    config_lib.validate(config)
  except ConfigError as error:
    raise DataError(f"{path}: {error}") from None
  return config


def _check_shapes(params: dict, expected: dict, path: str) -> None:
  """Every parameter the config implies, with its shape, and no other."""
  found = {k: np.shape(v) for k, v in flax.traverse_util.flatten_dict(params).items()
           if v is not None}
  wanted = {k: v.shape for k, v in flax.traverse_util.flatten_dict(expected).items()}
  for key in sorted(set(found) | set(wanted)):
    if found.get(key) != wanted.get(key):
      name = "/".join(key)
      raise DataError(f"{path} does not fit its config.json: {name} has shape "
                      f"{found.get(key, 'none (missing)')}, the config implies "
                      f"{wanted.get(key, 'no such parameter')}")
