r"""Mixed precision against float32: the same run of the tiny config in both, loss by loss.

  python -m benchmarks.mixed_precision --out=/tmp/precision

trains configs/tiny.py on the built-in corpus for --steps steps twice, with
model.dtype float32 and bfloat16 (float32 parameters, optimizer, LayerNorm,
softmax and losses; bfloat16 matmuls), from the same seed, data and
masking, and prints the logged training losses of both side by side and their
largest relative difference, then both runs' final held-out metrics.
benchmarks/README.md records the figures.
"""

import json
import os

from absl import flags, logging

from configs import tiny
from electra_jax import cli
from electra_jax.errors import UserError
from electra_jax.pretraining import loop

_OUT = flags.DEFINE_string("out", None, "Scratch directory: the prepared data and both runs.")
_STEPS = flags.DEFINE_integer("steps", 300, "Training steps of each run.")
_LOG_EVERY = flags.DEFINE_integer("log_every", 10, "Steps per logged (averaged) loss.")
DTYPES = ("float32", "bfloat16")
LOSSES = ("loss", "gen_loss", "disc_loss")


def train_losses(workdir: str) -> dict[int, dict[str, float]]:
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    lines = [json.loads(line) for line in f]
  return {m["step"]: m for m in lines if m["split"] == "train"}


def main(argv: list[str]) -> None:
  del argv
  if not _OUT.value:
    raise UserError("--out is required: a scratch directory for the data and the two runs")
  logging.set_verbosity(logging.WARNING)
  out = os.path.abspath(_OUT.value)
  finals = {}
  for dtype in DTYPES:
    config = tiny.get_config()
    config.model.dtype = dtype
    config.train.steps, config.train.log_every = _STEPS.value, _LOG_EVERY.value
    config.optim.warmup_steps = min(config.optim.warmup_steps, _STEPS.value // 5)
    config.train.eval_every = 0  # only at the end
    config.data.dir = os.path.join(out, "data")
    finals[dtype] = loop.train_and_evaluate(config, os.path.join(out, dtype))
  runs = {dtype: train_losses(os.path.join(out, dtype)) for dtype in DTYPES}
  print("step | " + " | ".join(f"{loss} fp32 / bf16" for loss in LOSSES))
  worst = {loss: 0.0 for loss in LOSSES}
  for step in sorted(runs["float32"]):
    a, b = runs["float32"][step], runs["bfloat16"][step]
    for loss in LOSSES:
      worst[loss] = max(worst[loss], abs(b[loss] - a[loss]) / abs(a[loss]))
    print(f"{step} | " + " | ".join(f"{a[loss]:.4f} / {b[loss]:.4f}" for loss in LOSSES))
  print("largest relative difference of a logged loss: " +
        ", ".join(f"{loss} {100 * worst[loss]:.2f}%" for loss in LOSSES))
  for dtype in DTYPES:
    print(f"held-out after {_STEPS.value} steps, {dtype}: " +
          ", ".join(f"{k} {v:.4f}" for k, v in finals[dtype].items()))
  print(f"tokens/s, last logged window: " + ", ".join(
      f"{dtype} {runs[dtype][max(runs[dtype])]['tokens_per_s']:,.0f}" for dtype in DTYPES))


if __name__ == "__main__":
  cli.run(main)
