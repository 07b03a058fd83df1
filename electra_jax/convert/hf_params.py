"""Our parameter tree <-> the weights of a Hugging Face ELECTRA model, both ways, exactly.

A Hugging Face folder holds one network: the discriminator as
`ElectraForPreTraining`, the generator as `ElectraForMaskedLM`, each with its
own copy of the embeddings that ELECTRA shares. Names map one to one:

  embeddings/word_embeddings/embedding        electra.embeddings.word_embeddings.weight
  embeddings/layer_norm/{scale,bias}           electra.embeddings.LayerNorm.{weight,bias}
  <network>/embeddings_project/kernel          electra.embeddings_project.weight
  <network>/layer_3/attention/query/kernel     electra.encoder.layer.3.attention.self.query.weight
  discriminator_head/prediction/kernel         discriminator_predictions.dense_prediction.weight
  generator_head/output_bias                   generator_lm_head.bias

and layouts differ only by transposes and reshapes (Flax kernels are
[inputs, outputs] with attention heads as their own axes, PyTorch's Linear is
[outputs, inputs]), so a round trip is bit for bit. The generator's output
matrix is tied to the word embeddings and is not written, as transformers'
own `save_pretrained` does not.
"""

import math
import re
from typing import Mapping

import flax.traverse_util
import numpy as np
from absl import logging

from electra_jax.errors import DataError
from electra_jax.models.electra import DISCRIMINATOR_EMBEDDINGS

Path = tuple[str, ...]

# The parameter subtrees that make up each network (the embeddings are shared).
NETWORKS = {
    "discriminator": ("embeddings", "discriminator", "discriminator_head"),
    "generator": ("embeddings", "generator", "generator_head"),
}
WORD_EMBEDDINGS = "electra.embeddings.word_embeddings.weight"
TIED_OUTPUT = "generator_lm_head.weight"
# Buffers, not parameters, that older transformers versions saved with the weights.
_BUFFERS = frozenset({"electra.embeddings.position_ids", "electra.embeddings.token_type_ids"})

_LAYER_MODULES = {
    "attention/query": "attention.self.query",
    "attention/key": "attention.self.key",
    "attention/value": "attention.self.value",
    "attention/output": "attention.output.dense",
    "attention_layer_norm": "attention.output.LayerNorm",
    "intermediate": "intermediate.dense",
    "output": "output.dense",
    "output_layer_norm": "output.LayerNorm",
}
_OTHER_MODULES = {
    "embeddings/word_embeddings": "electra.embeddings.word_embeddings",
    "embeddings/position_embeddings": "electra.embeddings.position_embeddings",
    "embeddings/token_type_embeddings": "electra.embeddings.token_type_embeddings",
    "embeddings/layer_norm": "electra.embeddings.LayerNorm",
    "embeddings_project": "electra.embeddings_project",
    "discriminator_head/dense": "discriminator_predictions.dense",
    "discriminator_head/prediction": "discriminator_predictions.dense_prediction",
    "generator_head/dense": "generator_predictions.dense",
    "generator_head/layer_norm": "generator_predictions.LayerNorm",
    "generator_head": "generator_lm_head",
}
_LEAVES = {"kernel": "weight", "embedding": "weight", "scale": "weight", "bias": "bias",
           "output_bias": "bias"}


def hf_name(path: Path) -> str:
  """The transformers name of our parameter at `path`, e.g. ('discriminator', 'layer_0', ...)."""
  *module, leaf = path
  if module[0] in ("discriminator", "generator"):  # each folder holds one encoder, as `electra`
    module = module[1:]
  module_path = "/".join(module)
  layer = re.fullmatch(r"layer_(\d+)/(.+)", module_path)
  if layer:
    prefix = f"electra.encoder.layer.{layer[1]}.{_LAYER_MODULES[layer[2]]}"
  else:
    prefix = _OTHER_MODULES[module_path]
  return f"{prefix}.{_LEAVES[leaf]}"


def hf_shape(path: Path, shape: tuple[int, ...]) -> tuple[int, ...]:
  """The shape transformers stores our parameter of `shape` at `path` in."""
  if path[-1] == "kernel":
    inputs = _input_axes(path)
    return (math.prod(shape[inputs:]), math.prod(shape[:inputs]))
  if path[-1] == "bias":
    return (math.prod(shape),)
  return tuple(shape)


def to_hf(params: Mapping, network: str) -> dict[str, np.ndarray]:
  """The state dict of one network (`discriminator` or `generator`), float32, contiguous.

  A tree that keeps the discriminator's embeddings apart (`discriminator_embeddings`,
  a whole set: flax_format.read folds a GDES residual in) gives the discriminator those.
  """
  if network == "discriminator" and DISCRIMINATOR_EMBEDDINGS in params:
    params = {**params, "embeddings": params[DISCRIMINATOR_EMBEDDINGS]}
  return subtrees_to_hf(params, NETWORKS[network])


def subtrees_to_hf(params: Mapping, names: tuple[str, ...]) -> dict[str, np.ndarray]:
  """The weights of the subtrees `names` of our parameter tree under transformers' names."""
  tensors = {}
  for name in names:
    for path, value in flax.traverse_util.flatten_dict(params[name]).items():
      path = (name, *path)
      value = np.asarray(value, np.float32)
      target = hf_shape(path, value.shape)
      value = value.reshape(target[::-1]).T if path[-1] == "kernel" else value.reshape(target)
      tensors[hf_name(path)] = np.ascontiguousarray(value)
  return tensors


def from_hf(tensors: Mapping[str, np.ndarray], shapes: Mapping, network: str,
            origin: str, names: tuple[str, ...] | None = None) -> dict:
  """Our parameters of one network from its state dict.

  `shapes` is the network's subtrees of our parameter tree (anything with a
  `.shape` per leaf), as the folder's config.json describes it. Every weight
  must be there with the shape that config implies, and nothing else:
  otherwise a DataError names `origin` (the weights file) and what is wrong.
  `names`: the subtrees to read, when not all of the network's (a fine-tuned
  model's encoder: embeddings and discriminator).
  """
  expected = {(name, *path): leaf.shape for name in names or NETWORKS[network]
              for path, leaf in flax.traverse_util.flatten_dict(shapes[name]).items()}
  names = {path: hf_name(path) for path in expected}
  missing = [name for name in names.values() if name not in tensors]
  if missing:
    raise DataError(f"{origin} lacks {len(missing)} weight(s) that an ELECTRA {network} of its "
                    f"config.json has: {_some(missing)}; is it a {network} folder, and "
                    "does config.json describe these weights?")
  tied = {TIED_OUTPUT} if network == "generator" else set()
  unexpected = set(tensors) - set(names.values()) - _BUFFERS - tied
  if unexpected:
    raise DataError(f"{origin} has {len(unexpected)} weight(s) that an ELECTRA {network} does "
                    f"not: {_some(sorted(unexpected))}; is it a {network} folder?")
  params = {}
  for path, shape in expected.items():
    value = np.asarray(tensors[names[path]])
    if value.shape != hf_shape(path, shape):
      raise DataError(f"{origin}: {names[path]} has shape {list(value.shape)}, but config.json "
                      f"implies {list(hf_shape(path, shape))}; the weights and config.json do not "
                      "belong together")
    value = value.astype(np.float32)
    params[path] = value.T.reshape(shape) if path[-1] == "kernel" else value.reshape(shape)
  if tied & set(tensors):
    warn_if_different(tensors[TIED_OUTPUT], tensors[WORD_EMBEDDINGS],
                      f"{origin}: {TIED_OUTPUT} (the generator's output matrix)",
                      "the word embeddings it is tied to")
  return flax.traverse_util.unflatten_dict(params)


def warn_if_different(value: np.ndarray, reference: np.ndarray, what: str, used: str) -> None:
  """ELECTRA ties what some checkpoints store twice; a copy that differs is dropped, loudly."""
  if value.shape != reference.shape or not np.array_equal(value, reference):
    gap = (f"max difference {np.max(np.abs(value - reference)):.3g}"
           if value.shape == reference.shape else f"shape {list(value.shape)}")
    logging.warning("%s differs from %s (%s); ELECTRA shares them, so %s are used", what, used,
                    gap, used)


def _input_axes(path: Path) -> int:
  """Leading axes of a kernel that are its inputs: the attention output reads all heads."""
  return 2 if path[-3:] == ("attention", "output", "kernel") else 1


def _some(names: list[str], shown: int = 3) -> str:
  more = f" and {len(names) - shown} more" if len(names) > shown else ""
  return ", ".join(names[:shown]) + more
