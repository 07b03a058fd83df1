"""BERT's WordPiece tokenizer, for the `vocab.txt` of Google's ELECTRA and BERT checkpoints.

Text is split the way BERT's basic tokenizer splits it (drop control characters,
space out CJK ideographs, split on whitespace, lower-case and strip accents when
`lowercase`, split off every punctuation character), then each word is cut into
the longest vocabulary pieces from its left ("##" marks a piece inside a word);
a word with no such cut, or over 100 characters, is [UNK]. Same interface as
the SentencePiece `Tokenizer`, and the same guarantees: the special tokens sit
at ids 0-4, and encoding text never produces [PAD], [CLS], [SEP] or [MASK] (the
string "[MASK]" is punctuation and a word, where BERT's own tokenizer would
read it as the special token).
"""

import functools
import hashlib
import io
import os
import re
import unicodedata
from typing import Sequence

import numpy as np

from electra_jax.errors import DataError
from electra_jax.runtime import fileio
from electra_jax.vocabulary import SPECIAL_PIECES, UNK_ID

CONTINUATION = "##"
_MAX_WORD_CHARS = 100
_TOKEN_CACHE_SIZE = 1 << 20  # corpora repeat their words: most lookups hit
# CJK Unified Ideographs, their extensions and compatibility blocks: BERT makes
# each one a word. Hangul, kana and the rest are written with spaces.
_CJK = re.compile("[\u4E00-\u9FFF\u3400-\u4DBF\U00020000-\U0002A6DF\U0002A700-\U0002B73F"
                  "\U0002B740-\U0002B81F\U0002B820-\U0002CEAF\uF900-\uFAFF\U0002F800-\U0002FA1F]")
# ASCII control characters other than tab, newline and carriage return: dropped.
_ASCII_CONTROL = dict.fromkeys([*range(0, 9), 11, 12, *range(14, 32), 127])


class WordPieceTokenizer:
  """Text to ids and back with a WordPiece vocabulary whose special tokens are at 0-4."""

  def __init__(self, pieces: Sequence[str], lowercase: bool, origin: str = "the vocabulary"):
    """`pieces[i]` is the piece of id i; `origin` names the vocabulary in errors."""
    for token_id, piece in SPECIAL_PIECES.items():
      if token_id >= len(pieces) or pieces[token_id] != piece:
        raise DataError(f"{origin} does not have {piece} at id {token_id}; write the vocabulary "
                        "with electra_jax (importing a Hugging Face folder reorders it)")
    self._pieces = list(pieces)
    # A piece listed twice gets its last id, as BERT's vocabulary loader does.
    self._ids = {piece: i for i, piece in enumerate(self._pieces)}
    self._lowercase = lowercase
    text = "".join(f"{piece}\n" for piece in self._pieces)
    self._sha256 = hashlib.sha256(f"lowercase={lowercase}\n{text}".encode("utf-8")).hexdigest()
    self._token_ids = functools.lru_cache(maxsize=_TOKEN_CACHE_SIZE)(self._uncached_token_ids)

  @classmethod
  def load(cls, path: str, lowercase: bool) -> "WordPieceTokenizer":
    return cls(read_vocab(path), lowercase, origin=path)

  def save(self, path: str) -> None:
    """Writes `vocab.txt` atomically (one piece per line, the line number is the id)."""
    try:
      fileio.make_dirs(os.path.dirname(fileio.absolute(path)))
      fileio.atomic_write(path, "".join(f"{piece}\n" for piece in self._pieces))
    except OSError as error:
      raise DataError(f"cannot write the vocabulary to {path}: {error.strerror or error}") from None

  @property
  def vocab_size(self) -> int:
    return len(self._pieces)

  @property
  def lowercase(self) -> bool:
    return self._lowercase

  @property
  def sha256(self) -> str:
    """Hex digest of the vocabulary and the casing: they decide every id."""
    return self._sha256

  def id_to_piece(self, token_id: int) -> str:
    return self._pieces[token_id]

  def encode(self, lines: list[str]) -> list[list[int]]:
    """Ids of each line, without special tokens."""
    return [[i for token in _split_on_whitespace(line) for i in self._token_ids(token)]
            for line in lines]

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """Pieces joined by spaces, "##" pieces glued to the one before; the special tokens but
    [UNK] decode to nothing."""
    pieces = [self._pieces[int(i)] for i in ids if int(i) == UNK_ID or int(i) not in SPECIAL_PIECES]
    return " ".join(pieces).replace(f" {CONTINUATION}", "").strip()

  def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """The ids of `text` (as `encode`) and the characters [start, end) of `text` each covers.

    Span extraction (SQuAD) maps answers to tokens and predicted tokens back to
    text with these. A word that lower-casing or accent stripping changes in
    length maps its pieces to its characters as closely as the change allows.
    """
    ids, offsets = [], []
    for positions in _word_positions(text):
      normalized, origin = self._normalized(text, positions)
      start = 0
      for part in _split_punctuation(normalized):
        part_ids = self._word_ids(part)
        if part_ids == [UNK_ID]:
          lengths = [len(part)]
        else:
          lengths = [len(self._pieces[i]) - (len(CONTINUATION) if k else 0)
                     for k, i in enumerate(part_ids)]
        for token_id, length in zip(part_ids, lengths):
          ids.append(token_id)
          offsets.append((origin[start], origin[start + length - 1] + 1))
          start += length
    return ids, offsets

  def _normalized(self, text: str, positions: list[int]) -> tuple[str, list[int]]:
    """The word at `positions` of `text` as encoding sees it, and each character's position."""
    word = "".join(text[p] for p in positions)
    if not self._lowercase:
      return word, positions
    per_char = [_strip_accents(text[p].lower()) for p in positions]
    origin = [p for p, chars in zip(positions, per_char) for _ in chars]
    whole = _strip_accents(word.lower())  # what `encode` cuts (context-dependent case rules)
    return (whole if len(whole) == len(origin) else "".join(per_char)), origin

  def _uncached_token_ids(self, token: str) -> tuple[int, ...]:
    """The ids of one whitespace-free token: cased, split at punctuation, cut into pieces."""
    if self._lowercase:
      token = _strip_accents(token.lower())
    return tuple(i for word in _split_punctuation(token) for i in self._word_ids(word))

  def _word_ids(self, word: str) -> list[int]:
    """Greedy longest-match-first pieces of one word, or [UNK] when it has no cut."""
    if len(word) > _MAX_WORD_CHARS:
      return [UNK_ID]
    ids, start = [], 0
    while start < len(word):
      for end in range(len(word), start, -1):
        piece = word[start:end] if start == 0 else CONTINUATION + word[start:end]
        if piece in self._ids:
          ids.append(self._ids[piece])
          start = end
          break
      else:
        return [UNK_ID]
    return ids


def read_vocab(path: str) -> list[str]:
  """The pieces of a BERT `vocab.txt`, in id order (one per line; only the newline is stripped)."""
  try:
    with io.TextIOWrapper(fileio.open_binary(path), encoding="utf-8") as f:
      return [line.rstrip("\n") for line in f]
  except OSError as error:
    raise DataError(f"cannot read the vocabulary {path}: {error.strerror or error}") from None
  except UnicodeDecodeError:
    raise DataError(f"{path} is not a UTF-8 vocabulary file (one WordPiece per line)") from None


def _split_on_whitespace(line: str) -> list[str]:
  """`line` without NUL, U+FFFD and control characters, CJK ideographs spaced out, split."""
  if line.isascii():
    return line.translate(_ASCII_CONTROL).split()
  return _CJK.sub(r" \g<0> ", "".join(map(_cleaned_char, line))).split()


def _word_positions(text: str) -> list[list[int]]:
  """The positions in `text` of each word's characters, split as `_split_on_whitespace` splits."""
  words, current = [], []
  for position, char in enumerate(text):
    cleaned = _cleaned_char(char)
    if not cleaned:  # dropped
      continue
    if cleaned.isspace() or _CJK.match(char):
      if current:
        words.append(current)
      current = []
      if not cleaned.isspace():  # an ideograph is a word of its own
        words.append([position])
    else:
      current.append(position)
  if current:
    words.append(current)
  return words


@functools.cache
def _cleaned_char(char: str) -> str:
  if char in "\t\n\r" or unicodedata.category(char) == "Zs":
    return " "
  if char in "\0\ufffd" or unicodedata.category(char).startswith("C"):
    return ""
  return char


def _strip_accents(word: str) -> str:
  return "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")


def _is_punctuation(char: str) -> bool:
  """Unicode punctuation, and every ASCII character that is neither a letter, a digit nor space."""
  code = ord(char)
  return (33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126 or
          unicodedata.category(char).startswith("P"))


def _split_punctuation(word: str) -> list[str]:
  """`word` cut around each punctuation character, which becomes a word of its own."""
  parts, current = [], []
  for char in word:
    if _is_punctuation(char):
      if current:
        parts.append("".join(current))
        current = []
      parts.append(char)
    else:
      current.append(char)
  if current:
    parts.append("".join(current))
  return parts
