"""The shipped configs, installed as electra_jax.configs: `--config=tiny` (small, base, large)."""
