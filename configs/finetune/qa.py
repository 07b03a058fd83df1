"""SQuAD span extraction with the paper's setting: 512 tokens, windows 128 tokens apart.

  python -m electra_jax.finetune --config=configs/finetune/qa.py --config.task=squad2 \
      --config.init=runs/small --config.data_dir=/data/squad

Default task squad1 (SQuAD 1.1); squad2 adds unanswerable questions.
"""

from electra_jax.finetune.config import default_config


def get_config():
  return default_config("squad1")
