"""The pre-training optimizer: AdamW with clipping, warmup and linear decay."""

import ml_collections
import optax
from flax import traverse_util

# Parameter names that weight decay applies to; LayerNorm scales and every bias
# (including the generator's output bias) are left alone, as in BERT and ELECTRA.
DECAYED_PARAMS = ("kernel", "embedding")


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warmup from 0 to the peak, then linear decay to 0 at the last step."""
  return warmup_linear_decay(config.optim.learning_rate, config.optim.warmup_steps,
                             config.train.steps)


def warmup_linear_decay(peak: float, warmup_steps: int, total_steps: int) -> optax.Schedule:
  """0 to `peak` over `warmup_steps`, then down to 0 at `total_steps`."""
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warmup_steps),
       optax.linear_schedule(peak, 0.0, max(total_steps - warmup_steps, 1))],
      boundaries=[warmup_steps])


def weight_decay_mask(params):
  """True for the parameters that weight decay applies to."""
  flat = traverse_util.flatten_dict(params)
  return traverse_util.unflatten_dict({path: path[-1] in DECAYED_PARAMS for path in flat})


def build_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  return clipped_adamw(config.optim, learning_rate_schedule(config))


def clipped_adamw(optim_config: ml_collections.ConfigDict,
                  schedule: optax.Schedule) -> optax.GradientTransformation:
  """Gradient clipping, then AdamW as an `optim` config section says (b1, b2, eps, decay)."""
  o = optim_config
  return optax.chain(
      optax.clip_by_global_norm(o.max_grad_norm),
      optax.adamw(schedule, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay,
                  mask=weight_decay_mask),
  )

