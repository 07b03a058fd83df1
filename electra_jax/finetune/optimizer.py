"""Fine-tuning's optimizer: pre-training's AdamW, with a learning rate per layer.

Layer-wise learning-rate decay (ELECTRA.md): with L layers, the head and the
top layer L learn at the full rate, layer i at rate * decay^(L - i), and the
embeddings (with the embedding projection) at rate * decay^L, the smallest.
The original code gives the top layer decay^2 and the embeddings decay^(L+2)
(its head sits at depth L + 2); that off-by-one is not copied. Each factor
scales the whole AdamW update of its parameters, weight decay included, as a
learning rate would.
"""

import re

import jax
import ml_collections
import optax
from flax import traverse_util

from electra_jax.pretraining import optim


def layer_depth(path: tuple[str, ...], num_layers: int) -> int:
  """0 for the embeddings, i + 1 for the discriminator's layer_i (and a pre-LayerNorm
  encoder's final LayerNorm, on the last layer's output: num_layers), num_layers + 1 for the
  head."""
  if path[0] == "embeddings" or path[:2] == ("discriminator", "embeddings_project"):
    return 0
  if path[:2] == ("discriminator", "final_layer_norm"):
    return num_layers
  if path[0] == "discriminator":
    layer = re.fullmatch(r"layer_(\d+)", path[1])
    if layer is None:
      raise ValueError(f"no depth for parameter {'/'.join(path)}")
    return int(layer[1]) + 1
  return num_layers + 1


def layer_scales(params, num_layers: int, decay: float):
  """Each parameter's share of the learning rate: decay^(num_layers - depth), 1 at the top."""
  flat = traverse_util.flatten_dict(params)
  return traverse_util.unflatten_dict({
      path: decay**max(num_layers - layer_depth(path, num_layers), 0) for path in flat})


def scale_by_tree(scales) -> optax.GradientTransformation:
  """Multiplies each update by its entry of `scales` (a tree shaped like the parameters)."""
  return optax.stateless(lambda updates, params=None: jax.tree.map(
      lambda update, scale: update * scale, updates, scales))


def build_optimizer(config: ml_collections.ConfigDict, params_shapes, num_layers: int,
                    total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Clipping, AdamW with warmup and linear decay, then the per-layer scale; and the schedule.

  `config` is a fine-tuning config whose learning rate and decay are resolved.
  """
  o = config.optim
  schedule = optim.warmup_linear_decay(o.learning_rate, round(o.warmup_fraction * total_steps),
                                       total_steps)
  scales = layer_scales(params_shapes, num_layers, o.layer_decay)
  return optax.chain(optim.clipped_adamw(o, schedule), scale_by_tree(scales)), schedule
