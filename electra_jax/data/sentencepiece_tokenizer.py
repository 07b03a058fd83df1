"""A SentencePiece tokenizer with ELECTRA's special tokens at fixed ids.

The model and the objective refer to [PAD], [CLS], [SEP] and [MASK] by id, so
every tokenizer puts them at 0-4, and loading checks it. [CLS], [SEP] and
[MASK] are SentencePiece control symbols: they have ids, but encoding text
never produces them, so a corpus that contains the string "[MASK]" cannot forge
a mask or a segment boundary.
"""

import hashlib
import io
import os
import re
from typing import Iterable, Sequence

import numpy as np
import sentencepiece as spm

from electra_jax.errors import DataError
from electra_jax.runtime import fileio
from electra_jax.vocabulary import (CLS_PIECE, MASK_PIECE, PAD_ID, PAD_PIECE, SEP_PIECE,
                                    SPECIAL_PIECES, UNK_ID, UNK_PIECE)


# Unigram training sums over threads, so its result depends on their number:
# fixed here, it does not depend on the machine's cores.
_TRAINING_THREADS = 16
# SentencePiece drops longer lines from training; paragraph-per-line corpora have some.
_MAX_LINE_BYTES = 1 << 16
_QUIET = 2  # SentencePiece's minloglevel: errors only


class Tokenizer:
  """Text to ids and back; a thin wrapper that owns the serialized model."""

  def __init__(self, model_proto: bytes, origin: str = "the tokenizer model"):
    """Parses `model_proto`; `origin` names it in errors (a path, usually)."""
    try:
      self._processor = spm.SentencePieceProcessor(model_proto=model_proto)
    except RuntimeError:
      raise DataError(f"{origin} is not a SentencePiece model; replace it with a tokenizer "
                      "trained by electra_jax, or delete it to train a new one") from None
    _check_special_pieces(self._processor, origin)
    self._model_proto = model_proto
    self._sha256 = hashlib.sha256(model_proto).hexdigest()

  @classmethod
  def from_bytes(cls, model_proto: bytes) -> "Tokenizer":
    return cls(model_proto)

  def __reduce__(self):  # worker processes receive the tokenizer pickled
    return Tokenizer, (self._model_proto,)

  @classmethod
  def load(cls, path: str) -> "Tokenizer":
    try:
      with fileio.open_binary(path) as f:
        return cls(f.read(), origin=path)
    except OSError as error:
      raise DataError(f"cannot read the tokenizer {path}: {error.strerror or error}") from None

  def save(self, path: str) -> None:
    """Writes the model atomically: an existing file is replaced whole or not at all."""
    try:
      fileio.make_dirs(os.path.dirname(fileio.absolute(path)))
      fileio.atomic_write(path, self._model_proto)
    except OSError as error:
      raise DataError(f"cannot write the tokenizer to {path}: {error.strerror or error}; "
                      "check that --workdir is writable and has space") from None

  @property
  def vocab_size(self) -> int:
    return self._processor.get_piece_size()

  @property
  def model_proto(self) -> bytes:
    """The serialized SentencePiece model (what `save` writes)."""
    return self._model_proto

  @property
  def sha256(self) -> str:
    """Hex digest of the model: data tokenized with another tokenizer is refused by it."""
    return self._sha256

  def id_to_piece(self, token_id: int) -> str:
    return self._processor.id_to_piece(token_id)

  def encode(self, lines: list[str]) -> list[list[int]]:
    """Ids of each line, without special tokens; one call encodes on all cores."""
    return self._processor.encode(lines, out_type=int)

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """Text of `ids`; special tokens decode to nothing."""
    return self._processor.decode([int(i) for i in ids])

  def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """The ids of `text` (as `encode`) and the characters [start, end) of `text` each covers.

    Span extraction (SQuAD) maps answers to tokens and predicted tokens back to
    text with these. A piece's leading whitespace ("▁") is not part of its span.
    """
    encoded = self._processor.encode(text, out_type="proto")
    char_at_byte = np.zeros(len(text.encode("utf-8")) + 1, np.int64)
    position = 0
    for index, char in enumerate(text):
      width = len(char.encode("utf-8"))
      char_at_byte[position:position + width] = index
      position += width
    char_at_byte[position] = len(text)
    ids, offsets = [], []
    for piece in encoded.pieces:
      start, end = int(char_at_byte[piece.begin]), int(char_at_byte[piece.end])
      while start < end and text[start].isspace():
        start += 1
      ids.append(piece.id)
      offsets.append((start, end))
    return ids, offsets


def train_tokenizer(documents: Iterable[list[str]], vocab_size: int, lowercase: bool,
                    max_sentences: int, seed: int) -> Tokenizer:
  """Trains a unigram SentencePiece model in memory, deterministically.

  At most `max_sentences` lines are used, a sample drawn with `seed` when the
  corpus has more. `lowercase` folds case in the model's normalizer, so that
  encoding folds it too.
  """
  lines = _sample_lines(documents, max_sentences, seed)
  if not lines:
    raise DataError("there is no text to train the tokenizer on; check --config.data.source")
  model = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="unigram",
        vocab_size=vocab_size,
        pad_id=PAD_ID, pad_piece=PAD_PIECE,
        unk_id=UNK_ID, unk_piece=UNK_PIECE,
        bos_id=-1, eos_id=-1,
        control_symbols=[CLS_PIECE, SEP_PIECE, MASK_PIECE],
        normalization_rule_name="nmt_nfkc_cf" if lowercase else "nmt_nfkc",
        max_sentence_length=_MAX_LINE_BYTES,
        num_threads=_TRAINING_THREADS,
        minloglevel=_QUIET,
    )
  except RuntimeError as error:
    user_error = _vocab_size_error(str(error), vocab_size)
    if user_error is None:
      raise
    raise user_error from None
  return Tokenizer.from_bytes(model.getvalue())


def _check_special_pieces(processor: spm.SentencePieceProcessor, origin: str) -> None:
  """Refuses a model without the special pieces at their ids, or whose text can encode to them."""
  for token_id, piece in SPECIAL_PIECES.items():
    found = processor.id_to_piece(token_id) if token_id < processor.get_piece_size() else None
    if found != piece or (token_id != UNK_ID and not processor.is_control(token_id)):
      raise DataError(f"{origin} does not have {piece} at id {token_id} as a control symbol "
                      "(one that text never encodes to); use a tokenizer trained by electra_jax")


def _sample_lines(documents: Iterable[list[str]], max_sentences: int, seed: int) -> list[str]:
  """All lines, or `max_sentences` of them in corpus order, drawn with `seed`."""
  lines = [line for document in documents for line in document]
  if len(lines) <= max_sentences:
    return lines
  kept = np.random.default_rng(seed).choice(len(lines), size=max_sentences, replace=False)
  return [lines[i] for i in np.sort(kept)]


def _vocab_size_error(message: str, vocab_size: int) -> DataError | None:
  """SentencePiece's complaints about the vocabulary size, said for a user."""
  if "Vocabulary size too high" in message:
    most = re.search(r"<= (\d+)", message)
    limit = f": SentencePiece can build at most {most[1]} pieces from it" if most else ""
    return DataError(f"the corpus is too small for model.vocab_size={vocab_size}{limit}; "
                     "lower --config.model.vocab_size or add text")
  if "smaller than required_chars" in message:
    least = re.search(r"vs (\d+)", message)
    need = f": its characters alone need {least[1]} pieces" if least else ""
    return DataError(f"model.vocab_size={vocab_size} is too small for the corpus{need}; "
                     "raise --config.model.vocab_size")
  return None
