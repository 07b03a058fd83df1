"""ELECTRA-Large (335M discriminator): the paper's sizes and pre-training recipe."""

from electra_jax.config import sized_config


def get_config():
  c = sized_config("large")
  c.masking.mask_rate = 0.25
  c.optim.learning_rate = 2e-4
  c.train.batch_size = 2048
  c.train.steps = 400_000
  c.data.max_seq_length = 512
  # Mixed precision: the accelerators this size is for have bfloat16 matmul units;
  # over 300 steps its losses stay within 0.6% of float32's (README, Speed).
  c.model.dtype = "bfloat16"
  return c
