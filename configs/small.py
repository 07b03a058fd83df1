"""ELECTRA-Small (14M discriminator): the paper's sizes and pre-training recipe."""

from electra_jax.config import sized_config


def get_config():
  return sized_config("small")  # the schema's defaults are Small's recipe
