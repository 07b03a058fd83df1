"""Where a pre-trained ELECTRA comes from: the entry points of fine-tuning and of pre-training.

`load_discriminator(path)` gives fine-tuning a discriminator, its model config
and its tokenizer from any of: a Hugging Face folder (e.g. a local copy of
google/electra-small-discriminator), a `--format=hf` export (its
discriminator/), a `--format=flax` export, or a pre-training workdir.

`init_from_hf(config, workdir)` starts pre-training from a Hugging Face
discriminator and generator (`train.init_from`): it checks that the config
describes the same model, writes the vocabulary into the workdir, and returns
the full parameter tree.

Parameters always use our ids, which have the special tokens at 0-4: a
vocabulary with them elsewhere is reordered, and the word-embedding rows and
the generator's output bias with it.
"""

import dataclasses
import os

import flax.traverse_util
import ml_collections
import numpy as np
from absl import logging

from electra_jax import config as config_lib
from electra_jax.convert import flax_format, hf, hf_params, hf_tokenizer
from electra_jax.data import any_tokenizer
from electra_jax.data.wordpiece import WordPieceTokenizer
from electra_jax.errors import ConfigError, DataError
from electra_jax.models import electra
from electra_jax.runtime import fileio

NETWORK_DIRS = ("discriminator", "generator")  # the sub-folders of a `--format=hf` export


@dataclasses.dataclass(frozen=True)
class Discriminator:
  """A pre-trained discriminator, ready for fine-tuning.

  `params` has ElectraPretrainer's names (embeddings, discriminator,
  discriminator_head) as numpy arrays; `model` is the config's `model` section
  that builds it; `tokenizer` gives the ids it was trained on.
  """

  model: ml_collections.ConfigDict
  params: dict
  tokenizer: any_tokenizer.AnyTokenizer


def load_discriminator(path: str, step: int | None = None) -> Discriminator:
  """The discriminator saved at `path`, whichever of the four places it is; with `step`, that
  of a pre-training workdir's checkpoint of that step."""
  if not fileio.is_dir(path):
    raise DataError(f"{path} is not a directory: give a Hugging Face ELECTRA folder, an export "
                    "of electra_jax (--format=hf or flax) or a pre-training workdir")
  if fileio.is_dir(os.path.join(path, "discriminator")):
    path = os.path.join(path, "discriminator")
  if step is not None or flax_format.is_saved_model(path):
    saved = flax_format.read(path, ["discriminator"], step)
    return Discriminator(saved.config.model, saved.params, saved.tokenizer)
  if fileio.is_url(path):
    raise DataError(f"{path} is not a run or --format=flax export of electra_jax, the models "
                    "read from a URL; copy a Hugging Face folder to local disk first")
  network = hf.read_network(path)
  model = hf.model_config(network)
  vocabulary = hf_tokenizer.read_tokenizer(path, model.vocab_size)
  config = config_lib.default_config()
  config.model = model
  params = hf_params.from_hf(network.tensors, flax_format.param_shapes(config), "discriminator",
                             network.weights_path)
  return Discriminator(model, _reorder_vocabulary(params, vocabulary.order),
                       vocabulary.tokenizer)


def init_from_hf(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """All parameters from `config.train.init_from`, which holds discriminator/ and generator/.

  The vocabulary goes into the workdir (unless the same one is already
  there), last, once everything has been read and checked.
  """
  source = config.train.init_from
  discriminator, generator = (hf.read_network(os.path.join(source, name)) for name in NETWORK_DIRS)
  model = hf.model_config(discriminator, generator)
  vocabulary = hf_tokenizer.read_tokenizer(discriminator.directory, model.vocab_size)
  _check_config(config, model, vocabulary.tokenizer, source)

  shapes = flax_format.param_shapes(config)
  params = hf_params.from_hf(discriminator.tensors, shapes, "discriminator",
                             discriminator.weights_path)
  generator_params = hf_params.from_hf(generator.tensors, shapes, "generator",
                                       generator.weights_path)
  sharing = config.electra.embedding_sharing
  shared = flax.traverse_util.flatten_dict(params["embeddings"])
  for name, value in flax.traverse_util.flatten_dict(generator_params["embeddings"]).items():
    # What the config shares must be one set: all of it, or under GDES all but the words.
    if sharing == "shared" or (sharing == "gdes" and name[0] != "word_embeddings"):
      hf_params.warn_if_different(
          value, shared[name], f"{generator.weights_path}: embeddings/{'/'.join(name)}",
          "the discriminator's")
  params.update(generator=generator_params["generator"],
                generator_head=generator_params["generator_head"],
                **electra.embeddings_from_networks(generator_params["embeddings"],
                                                   params["embeddings"], sharing))
  params = _reorder_vocabulary(params, vocabulary.order)
  _save_vocabulary(vocabulary, workdir, config.data.lowercase)
  logging.info("Initialized every parameter from %s", source)
  return params


def _check_config(config: ml_collections.ConfigDict, model: ml_collections.ConfigDict,
                  tokenizer: any_tokenizer.AnyTokenizer, source: str) -> None:
  """One error naming every config field that disagrees with the checkpoint, and its fix."""
  wanted = {f"model.{field}": model[field] for field in hf.ARCHITECTURE_FIELDS}
  imported = config_lib.default_config()
  imported.model = model
  if config_lib.generator_dims(config) != config_lib.generator_dims(imported):
    wanted.update({"model.generator_size": model.generator_size,
                   "model.generator_layers": model.generator_layers})
  if isinstance(tokenizer, WordPieceTokenizer):
    wanted["data.lowercase"] = tokenizer.lowercase
  current = {name: config[name.split(".")[0]][name.split(".")[1]] for name in wanted}
  wrong = {name: value for name, value in wanted.items() if current[name] != value}
  if wrong:
    differences = ", ".join(f"{name} is {current[name]!r} but the checkpoint has {value!r}"
                            for name, value in wrong.items())
    fix = " ".join(f"--config.{name}={value!r}" for name, value in wrong.items())
    raise ConfigError(f"the config does not describe the model in {source}: {differences}; "
                      f"set {fix}")


def _reorder_vocabulary(params: dict, order: np.ndarray) -> dict:
  """Vocabulary rows in our id order (the order `hf_tokenizer.read_tokenizer` chose)."""
  for name in ("embeddings", electra.DISCRIMINATOR_EMBEDDINGS):
    if name in params:
      params[name]["word_embeddings"]["embedding"] = (
          params[name]["word_embeddings"]["embedding"][order])
  if "generator_head" in params:
    params["generator_head"]["output_bias"] = params["generator_head"]["output_bias"][order]
  return params


def _save_vocabulary(vocabulary: hf_tokenizer.ImportedTokenizer, workdir: str,
                     lowercase: bool) -> None:
  """Puts the imported tokenizer in the workdir, unless that already has this very one."""
  existing = any_tokenizer.load_tokenizer(workdir, lowercase)
  if existing is None:
    path = any_tokenizer.save_tokenizer(vocabulary.tokenizer, workdir)
    logging.info("Wrote the tokenizer of %s to %s%s", vocabulary.path, path,
                 " (special tokens moved to ids 0-4)" if vocabulary.reordered else "")
  elif existing.sha256 != vocabulary.tokenizer.sha256:
    raise DataError(f"{any_tokenizer.tokenizer_path(workdir)} is not the tokenizer of "
                    f"{vocabulary.path}; start from a checkpoint in a new --workdir")
