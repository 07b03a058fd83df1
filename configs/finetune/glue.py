"""GLUE with the paper's recipe; pick the task with --config.task (default sst2).

  python -m electra_jax.finetune --config=configs/finetune/glue.py --config.task=mrpc \
      --config.init=runs/small --config.data_dir=/data/glue

128 tokens. Learning rate, layer decay and epochs follow the paper for the
model's size and the task unless set (electra_jax/finetune/config.py).
"""

from electra_jax.finetune.config import default_config


def get_config():
  return default_config("sst2")
