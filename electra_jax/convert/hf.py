"""Hugging Face ELECTRA folders: config.json, model.safetensors and the tokenizer files.

One folder holds one network, as transformers keeps them: the discriminator
(`ElectraForPreTraining`) or the generator (`ElectraForMaskedLM`). Weights are
read and written with `safetensors.numpy`, so neither direction needs torch;
a folder that has only the older `pytorch_model.bin` is read with torch when
it is installed.
"""

import dataclasses
import json
import os
from typing import Any

import ml_collections
import numpy as np

from electra_jax import config as config_lib
from electra_jax.convert import hf_params, hf_tokenizer, import_optional
from electra_jax.data.any_tokenizer import AnyTokenizer
from electra_jax.errors import DataError, UserError
from electra_jax.runtime.fileio import atomic_write
from electra_jax.vocabulary import PAD_ID

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TORCH_WEIGHTS_FILE = "pytorch_model.bin"
ARCHITECTURES = {"discriminator": "ElectraForPreTraining", "generator": "ElectraForMaskedLM"}
HIDDEN_ACT = "gelu"  # transformers' name for the exact erf GELU that our encoder uses

# Our model.* field <- transformers' ElectraConfig field, for what both networks share
# and for the discriminator's own sizes.
_SHARED_FIELDS = {
    "vocab_size": "vocab_size",
    "embedding_size": "embedding_size",
    "max_position_embeddings": "max_position_embeddings",
    "type_vocab_size": "type_vocab_size",
    "layer_norm_eps": "layer_norm_eps",
}
_SIZE_FIELDS = {
    "hidden_size": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
}
# The fields that decide the parameters' shapes and the function they compute.
ARCHITECTURE_FIELDS = (*_SHARED_FIELDS, *_SIZE_FIELDS)
_TRAINING_FIELDS = {
    "dropout_rate": "hidden_dropout_prob",
    "attention_dropout_rate": "attention_probs_dropout_prob",
    "initializer_range": "initializer_range",
}


@dataclasses.dataclass(frozen=True)
class HFNetwork:
  """What one Hugging Face folder holds."""

  directory: str
  config: dict[str, Any]  # its config.json
  tensors: dict[str, np.ndarray]
  weights_path: str  # the file the tensors came from, for errors

  def sizes(self) -> dict[str, int]:
    """This network's own sizes, under our field names."""
    return {ours: self.config[theirs] for ours, theirs in _SIZE_FIELDS.items()}


def hf_config(config: ml_collections.ConfigDict, network: str) -> dict[str, Any]:
  """transformers' config.json for one network of our model; a backbone that transformers'
  ELECTRA cannot express is refused, naming the field."""
  m = config.model
  for field, classic in config_lib.CLASSIC_BACKBONE.items():
    if m[field] != classic:
      raise UserError(f"model.{field} is {m[field]!r}, which transformers' ELECTRA cannot "
                      f"express (it has {classic!r}); such a model stays with electra_jax: "
                      "export a pre-training run with --format=flax, and predict with "
                      "electra_jax.predict from a fine-tuning run")
  sizes = (config_lib.generator_dims(config) if network == "generator" else
           {field: m[field] for field in _SIZE_FIELDS})
  return {
      "architectures": [ARCHITECTURES[network]],
      "model_type": "electra",
      **{theirs: m[ours] for ours, theirs in {**_SHARED_FIELDS, **_TRAINING_FIELDS}.items()},
      **{theirs: sizes[ours] for ours, theirs in _SIZE_FIELDS.items()},
      "hidden_act": HIDDEN_ACT,
      "position_embedding_type": "absolute",
      "pad_token_id": PAD_ID,
      "tie_word_embeddings": True,
  }


def model_config(discriminator: HFNetwork,
                 generator: HFNetwork | None = None) -> ml_collections.ConfigDict:
  """Our `model` section for the networks of these folders.

  Without a generator, the generator fields say "as large as the
  discriminator" (harmless for fine-tuning, which has no generator).
  """
  model = config_lib.default_config().model
  for ours, theirs in {**_SHARED_FIELDS, **_SIZE_FIELDS, **_TRAINING_FIELDS}.items():
    model[ours] = discriminator.config[theirs]
  model.generator_size = model.generator_layers = 1.0
  if generator is not None:
    for ours, theirs in _SHARED_FIELDS.items():
      if generator.config[theirs] != discriminator.config[theirs]:
        raise DataError(
            f"{generator.directory}/{CONFIG_FILE} has {theirs}={generator.config[theirs]} but "
            f"{discriminator.directory}/{CONFIG_FILE} has {discriminator.config[theirs]}: "
            "ELECTRA's generator and discriminator share their embeddings; use the two halves "
            "of one model")
    model.generator_size = generator.config["hidden_size"] / model.hidden_size
    model.generator_layers = generator.config["num_hidden_layers"] / model.num_layers
    config = config_lib.default_config()
    config.model = model
    if (max(model.generator_size, model.generator_layers) > 1 or
        config_lib.generator_dims(config) != generator.sizes()):
      raise DataError(f"the generator in {generator.directory} ({_describe(generator.sizes())}) "
                      "is not the discriminator's sizes scaled down by one fraction, the only "
                      "generator electra_jax builds (model.generator_size)")
  return model


def read_network(directory: str) -> HFNetwork:
  """config.json and weights of a folder that must hold an ELECTRA network."""
  config = _read_config(directory)
  weights_path = os.path.join(directory, WEIGHTS_FILE)
  if os.path.exists(weights_path):
    safetensors_numpy = import_optional("safetensors.numpy", package="safetensors")
    try:
      tensors = safetensors_numpy.load_file(weights_path)
    except Exception as error:  # pylint: disable=broad-except  # safetensors raises its own types
      raise DataError(f"cannot read {weights_path}: {error}") from None
  elif os.path.exists(os.path.join(directory, TORCH_WEIGHTS_FILE)):
    weights_path = os.path.join(directory, TORCH_WEIGHTS_FILE)
    tensors = _read_torch_weights(weights_path)
  else:
    raise DataError(f"{directory} has no weights: neither {WEIGHTS_FILE} nor "
                    f"{TORCH_WEIGHTS_FILE}; is it a Hugging Face model folder?")
  return HFNetwork(directory, config, tensors, weights_path)


def write_network(directory: str, config: ml_collections.ConfigDict, params: dict, network: str,
                  tokenizer: AnyTokenizer) -> None:
  """A folder that transformers loads as `network`: config.json, model.safetensors, tokenizer."""
  safetensors_numpy = import_optional("safetensors.numpy", package="safetensors")
  os.makedirs(directory, exist_ok=True)
  atomic_write(os.path.join(directory, CONFIG_FILE), json.dumps(hf_config(config, network),
                                                                indent=2))
  tensors = hf_params.to_hf(params, network)
  # transformers refuses safetensors files without this format marker.
  atomic_write(os.path.join(directory, WEIGHTS_FILE),
               safetensors_numpy.save(tensors, metadata={"format": "pt"}))
  hf_tokenizer.write_tokenizer(directory, tokenizer, config.model.max_position_embeddings)


def _read_config(directory: str) -> dict[str, Any]:
  """config.json of an ELECTRA folder, with what our encoder cannot run refused by name."""
  path = os.path.join(directory, CONFIG_FILE)
  if not os.path.isdir(directory):
    raise DataError(f"{directory} is not a directory; give a Hugging Face model folder (with "
                    f"{CONFIG_FILE} and {WEIGHTS_FILE})")
  try:
    with open(path, encoding="utf-8") as f:
      config = json.load(f)
  except FileNotFoundError:
    raise DataError(f"{path} does not exist; is {directory} a Hugging Face model folder?") from None
  except (OSError, ValueError) as error:
    raise DataError(f"cannot read {path}: {error}") from None
  model_type = config.get("model_type")
  if model_type != "electra":
    architectures = ", ".join(config.get("architectures") or []) or "no architecture named"
    raise DataError(f"{path} describes a '{model_type}' model ({architectures}), not ELECTRA; "
                    "electra_jax reads ELECTRA checkpoints only")
  needed = [*_SHARED_FIELDS.values(), *_SIZE_FIELDS.values(), *_TRAINING_FIELDS.values()]
  missing = [field for field in needed if field not in config]
  if missing:
    raise DataError(f"{path} lacks {', '.join(missing)}")
  unsupported = {field: value for field, value in (("hidden_act", HIDDEN_ACT),
                                                   ("position_embedding_type", "absolute"))
                 if config.get(field, value) != value}
  if unsupported:
    setting = ", ".join(f"{field}={value!r}" for field, value in unsupported.items())
    raise DataError(f"{path} has {setting}; electra_jax's ELECTRA uses hidden_act='gelu' and "
                    "absolute position embeddings, as the original")
  return config


def _read_torch_weights(path: str) -> dict[str, np.ndarray]:
  torch = import_optional("torch")
  try:
    state = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as error:  # pylint: disable=broad-except  # pickle and zip errors alike
    raise DataError(f"cannot read {path}: {error}") from None
  return {name: (tensor.float() if tensor.is_floating_point() else tensor).numpy()
          for name, tensor in state.items()}


def _describe(sizes: dict[str, int]) -> str:
  return ", ".join(f"{field} {value}" for field, value in sizes.items())
