"""The pre-training optimizer: AdamW with clipping, warmup and linear decay."""

import ml_collections
import optax
from flax import traverse_util

# Parameter names that weight decay applies to; LayerNorm scales and every bias
# (including the generator's output bias) are left alone, as in BERT and ELECTRA.
DECAYED_PARAMS = ("kernel", "embedding")


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warmup from 0 to the peak, then linear decay to 0 at the last step."""
  peak, warmup, steps = config.optim.learning_rate, config.optim.warmup_steps, config.train.steps
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warmup),
       optax.linear_schedule(peak, 0.0, max(steps - warmup, 1))],
      boundaries=[warmup])


def weight_decay_mask(params):
  """True for the parameters that weight decay applies to."""
  flat = traverse_util.flatten_dict(params)
  return traverse_util.unflatten_dict({path: path[-1] in DECAYED_PARAMS for path in flat})


def build_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  o = config.optim
  return optax.chain(
      optax.clip_by_global_norm(o.max_grad_norm),
      optax.adamw(learning_rate_schedule(config), b1=o.b1, b2=o.b2, eps=o.eps,
                  weight_decay=o.weight_decay, mask=weight_decay_mask),
  )

