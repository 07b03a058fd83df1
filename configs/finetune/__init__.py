"""The shipped fine-tuning configs, installed as electra_jax.configs.finetune (`--config=glue`)."""
