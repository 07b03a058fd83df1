"""ELECTRA-Small (14M discriminator): the paper's sizes and pre-training recipe."""

from electra_jax.config import default_config


def get_config():
  return default_config()  # the defaults are ELECTRA-Small's
