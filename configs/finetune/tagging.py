"""Token tagging in CoNLL format (CoNLL-2003 NER by default: tags in the last column).

  python -m electra_jax.finetune --config=configs/finetune/tagging.py \
      --config.init=runs/small --config.data_dir=/data/conll2003

For CoNLL-2000 chunking (`word POS chunk`) the last column is the chunk tag too.
128 tokens (the original code uses 256 for chunking): a sentence longer than
that is split into rows that fit, never cut.
"""

from electra_jax.finetune.config import default_config


def get_config():
  return default_config("conll")
