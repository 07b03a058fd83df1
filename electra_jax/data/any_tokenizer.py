"""The one place that knows which tokenizer a directory holds, and reads or writes it.

A workdir (or a `--format=flax` export) holds exactly one of:
  tokenizer.model   a SentencePiece model trained by electra_jax
  vocab.txt         a WordPiece vocabulary (imported from a Hugging Face folder)
Both put [PAD] [UNK] [CLS] [SEP] [MASK] at ids 0-4. SentencePiece carries its
own normalization; WordPiece lower-cases and strips accents when the run's
`data.lowercase` says so, as BERT's uncased tokenizer does.
"""

import os

from electra_jax.data.sentencepiece_tokenizer import Tokenizer
from electra_jax.data.wordpiece import WordPieceTokenizer
from electra_jax.errors import DataError
from electra_jax.runtime import fileio
from electra_jax.runtime.workdir import SENTENCEPIECE_FILE, WORDPIECE_FILE


AnyTokenizer = Tokenizer | WordPieceTokenizer


def tokenizer_path(directory: str) -> str | None:
  """The tokenizer file in `directory`, or None; two kinds at once is an error."""
  found = [os.path.join(directory, name) for name in (SENTENCEPIECE_FILE, WORDPIECE_FILE)
           if fileio.exists(os.path.join(directory, name))]
  if len(found) > 1:
    raise DataError(f"{directory} holds two tokenizers, {' and '.join(found)}; its ids must "
                    "come from one: delete the one the run did not use")
  return found[0] if found else None


def load_tokenizer(directory: str, lowercase: bool) -> AnyTokenizer | None:
  """The tokenizer saved in `directory`, or None when there is none.

  `lowercase` applies to a WordPiece vocabulary only (`data.lowercase` of the run).
  """
  path = tokenizer_path(directory)
  if path is None:
    return None
  if path.endswith(WORDPIECE_FILE):
    return WordPieceTokenizer.load(path, lowercase)
  return Tokenizer.load(path)


def save_tokenizer(tokenizer: AnyTokenizer, directory: str) -> str:
  """Writes the tokenizer's file into `directory`; returns its path."""
  name = WORDPIECE_FILE if isinstance(tokenizer, WordPieceTokenizer) else SENTENCEPIECE_FILE
  path = os.path.join(directory, name)
  tokenizer.save(path)
  return path
