"""Our own format: what a pre-training run leaves in its workdir, and `--format=flax` exports.

  config.json      the resolved config; its `model` section describes the parameters
  params.msgpack   the parameter tree, `flax.serialization.msgpack_serialize`d: a run's
                   holds both networks (embeddings, generator, generator_head,
                   discriminator, discriminator_head; an MLM run's: embeddings,
                   discriminator, generator_head), a `--format=flax` export only the
                   discriminator (embeddings, discriminator, discriminator_head if any)
  checkpoints/     a run's Orbax checkpoints (checkpointing.py): `read(..., step=N)` takes
                   the parameters of one of them instead of params.msgpack
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
from electra_jax.data import any_tokenizer
from electra_jax.errors import ConfigError, DataError
from electra_jax.models import electra
from electra_jax.pretraining import train_step
from electra_jax.runtime import checkpointing, sharding
from electra_jax.runtime import fileio
from electra_jax.runtime.workdir import (CHECKPOINTS_DIR, CONFIG_FILE, PARAMS_FILE,
                                         SENTENCEPIECE_FILE, WORDPIECE_FILE)



@dataclasses.dataclass(frozen=True)
class SavedModel:
  """A config, parameters that fit it, and the tokenizer whose ids they were trained on."""

  config: ml_collections.ConfigDict
  params: dict
  tokenizer: any_tokenizer.AnyTokenizer


def is_saved_model(directory: str) -> bool:
  return fileio.exists(os.path.join(directory, PARAMS_FILE))


def param_shapes(config: ml_collections.ConfigDict) -> dict:
  """The parameter tree `config` describes, as shapes (nothing is allocated)."""
  model = electra.build_pretrainer(config)
  return jax.eval_shape(lambda rng: electra.init_params(model, rng, 8, 1), jax.random.PRNGKey(0))


def read(directory: str, networks: Sequence[str], step: int | None = None) -> SavedModel:
  """The parameters of `networks` ('discriminator', 'generator') saved in `directory`.

  Those of params.msgpack, or with `step` those of the workdir's checkpoint of
  that step (one kept by checkpoint.keep_every, say). A network's parts that
  the config's model lacks are left out (an MLM model has no discriminator_head).
  """
  config = read_config(os.path.join(directory, CONFIG_FILE))
  if step is None:
    params_path = os.path.join(directory, PARAMS_FILE)
    saved = _read_params(params_path)
  else:
    params_path = os.path.join(directory, CHECKPOINTS_DIR, str(step))
    saved = checkpoint_params(directory, config, step)
  shapes = param_shapes(config)
  names = {name for network in networks for name in NETWORKS[network] if name in shapes}
  if "discriminator" in networks and electra.DISCRIMINATOR_EMBEDDINGS in shapes:
    names.add(electra.DISCRIMINATOR_EMBEDDINGS)
  params = {name: saved.get(name) for name in sorted(names)}
  _check_shapes(params, {name: shapes[name] for name in names}, params_path)
  config, params = _as_exported(config, params, networks)
  tokenizer = any_tokenizer.load_tokenizer(directory, config.data.lowercase)
  if tokenizer is None:
    raise DataError(f"{directory} has no tokenizer ({SENTENCEPIECE_FILE} or "
                    f"{WORDPIECE_FILE}); copy the one the model was trained with into it")
  return SavedModel(config, params, tokenizer)


def _as_exported(config: ml_collections.ConfigDict, params: dict, networks: Sequence[str]
                 ) -> tuple[ml_collections.ConfigDict, dict]:
  """The discriminator's embeddings as one plain set (a GDES residual folded in): alone, as
  `embeddings` (the config of a model whose embeddings are shared); beside the generator, as
  `discriminator_embeddings` (the config of separate embeddings). Config and tree agree."""
  sharing = config.electra.embedding_sharing
  if sharing == "shared" or "discriminator" not in networks:
    return config, params
  config = config.copy_and_resolve_references()
  if list(networks) == ["discriminator"]:
    params = electra.discriminator_alone(params, sharing)
    config.electra.embedding_sharing = "shared"
  else:
    params = {**params, electra.DISCRIMINATOR_EMBEDDINGS: electra.discriminator_embeddings(
        params, sharing)}
    config.electra.embedding_sharing = "none"
  return config, params


def _read_params(path: str) -> dict:
  try:
    with fileio.open_binary(path) as f:
      return flax.serialization.msgpack_restore(f.read())
  except FileNotFoundError:
    raise DataError(f"{path} does not exist: a run writes it when training ends") from None
  except (OSError, ValueError) as error:
    raise DataError(f"cannot read {path}: {error}") from None


def checkpoint_params(workdir: str, config: ml_collections.ConfigDict, step: int) -> dict:
  """The parameters of the checkpoint of `step` in the run `workdir`, as numpy arrays.

  Read onto this machine's devices whatever mesh the run had.
  """
  config = config.copy_and_resolve_references()  # a copy, on a mesh of this machine
  config.mesh = config_lib.default_config().mesh
  state, _ = train_step.abstract_train_state(config, sharding.create_mesh(config.mesh))
  restored = checkpointing.restore_step(os.path.join(workdir, CHECKPOINTS_DIR), step, state)
  return jax.device_get(restored.state.params)


def write(directory: str, model: SavedModel) -> None:
  """Writes config.json, params.msgpack and the tokenizer into `directory`."""
  fileio.atomic_write(os.path.join(directory, CONFIG_FILE),
                      model.config.to_json_best_effort(indent=2))
  fileio.atomic_write(os.path.join(directory, PARAMS_FILE),
                      flax.serialization.msgpack_serialize(jax.device_get(model.params)))
  any_tokenizer.save_tokenizer(model.tokenizer, directory)


def read_config(path: str) -> ml_collections.ConfigDict:
  """A saved config.json over the defaults of this version (fields it lacks keep them)."""
  try:
    with fileio.open_text(path) as f:
      saved = json.load(f)
  except FileNotFoundError:
    raise DataError(f"{path} does not exist; is {os.path.dirname(path)} a workdir or an "
                    "export of electra_jax?") from None
  except (OSError, ValueError) as error:
    raise DataError(f"cannot read {path}: {error}") from None
  config = config_lib.default_config()
  for name, value in checkpointing.flatten(config_lib.migrate(saved)).items():
    *sections, field = name.split(".")
    node = config
    try:
      for section in sections:
        node = node[section]
      known = field in node
    except (KeyError, TypeError):
      known = False
    if not known:
      raise DataError(f"{path} has the field '{name}', which this version of electra_jax "
                      "does not know; was it written by a newer one?")
    try:
      node[field] = value
    except (TypeError, ValueError):
      raise DataError(f"{path}: '{name}' = {value!r} has the wrong type") from None
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
