"""electra_jax: pre-train and fine-tune ELECTRA text encoders in JAX/Flax."""

__version__ = "0.1.0"
