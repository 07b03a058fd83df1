"""Fixed-length pre-training examples, packed from tokenized documents the ELECTRA way.

Each example is `[CLS] A [SEP] B [SEP]`: consecutive lines of one document,
cut into two segments at a line boundary, so that pre-training sees the
sentence-pair shape of fine-tuning inputs. 10% of the examples are a single
segment `[CLS] A [SEP]` and after 5% of them the next target length is drawn
at random in [5, L], so that the model also sees those shapes. This follows
`ExampleBuilder` of google-research/electra, with its random draws taken from
an explicit numpy Generator, and one change: the original cuts off whatever
does not fit (the tail of the line that reaches the target, or most of a long
paragraph), here it starts the next example instead, so every token of the
corpus is in exactly one example.
"""

import dataclasses
from typing import Iterable

import numpy as np

from electra_jax.vocabulary import CLS_ID, PAD_ID, SEP_ID

_MIN_TARGET_LENGTH = 5  # the shortest random target, as in the original


@dataclasses.dataclass(frozen=True)
class Examples:
  """Packed examples, one per row, padded with PAD_ID (and token type 0).

  input_ids: int32 [N, L].
  token_type_ids: int32 [N, L]: 0 for [CLS], A and its [SEP]; 1 for B and its [SEP].
  """

  input_ids: np.ndarray
  token_type_ids: np.ndarray

  def __len__(self) -> int:
    return self.input_ids.shape[0]


def pad_examples(rows: list[np.ndarray], max_seq_length: int) -> Examples:
  """Rows of `ExampleBuilder` (int32 [2, n]: ids and token types) padded to `max_seq_length`."""
  input_ids = np.full((len(rows), max_seq_length), PAD_ID, np.int32)
  token_type_ids = np.zeros((len(rows), max_seq_length), np.int32)
  for i, row in enumerate(rows):
    input_ids[i, :row.shape[1]], token_type_ids[i, :row.shape[1]] = row
  return Examples(input_ids=input_ids, token_type_ids=token_type_ids)


def pack_documents(token_documents: Iterable[list[list[int]]], max_seq_length: int,
                   rng: np.random.Generator, single_segment_prob: float,
                   short_seq_prob: float) -> Examples:
  """Packs documents (lists of tokenized lines) into padded examples, in memory."""
  builder = ExampleBuilder(max_seq_length, rng, single_segment_prob, short_seq_prob)
  rows = [row for document in token_documents for row in builder.add_document(document)]
  return pad_examples(rows, max_seq_length)


class ExampleBuilder:
  """Turns documents into examples; holds the target length, which carries over between them."""

  def __init__(self, max_seq_length: int, rng: np.random.Generator, single_segment_prob: float,
               short_seq_prob: float):
    self._max_length = max_seq_length
    self._rng = rng
    self._single_segment_prob = single_segment_prob
    self._short_seq_prob = short_seq_prob
    self._target_length = max_seq_length

  def add_document(self, document: list[list[int]]) -> list[np.ndarray]:
    """The document's examples, unpadded: int32 [2, n] rows of ids and token types.

    Lines are gathered until they reach the target length, then become one
    example; the rest of the document becomes a shorter one, so no example
    mixes two documents.
    """
    rows, lines, length = [], [], 0
    for line in document:
      if not line:
        continue
      lines.append(line)
      length += len(line)
      while length >= self._target_length:
        lines = self._add_example(lines, rows)
        length = sum(len(line) for line in lines)
    while lines:  # the end of the document: shorter than the target, but maybe not one example
      lines = self._add_example(lines, rows)
    return rows

  def _add_example(self, lines: list[list[int]], rows: list[np.ndarray]) -> list[list[int]]:
    """Appends one example made from the start of `lines`; returns the lines left over."""
    single_segment = self._rng.random() < self._single_segment_prob
    capacity = self._target_length - (2 if single_segment else 3)  # room for [CLS] and [SEP]s
    taken, rest = _take(lines, capacity)
    if single_segment:
      first, second = [token for line in taken for token in line], []
    else:
      first, second = self._split(taken)
    rows.append(_layout(first, second))
    if self._rng.random() < self._short_seq_prob:
      self._target_length = int(
          self._rng.integers(_MIN_TARGET_LENGTH, self._max_length, endpoint=True))
    else:
      self._target_length = self._max_length
    return rest

  def _split(self, lines: list[list[int]]) -> tuple[list[int], list[int]]:
    """Cuts the lines into segments A and B at a line boundary.

    A takes lines while it stays below half the target; the line that would
    take it over goes to A half the time (so A is not always the shorter).
    Unlike the original, a line never returns to A once B has begun: that
    would put the document's text out of order. A single line longer than
    half the target is cut inside, so that long paragraphs make pairs too.
    """
    half = (self._target_length - 3) // 2
    first, second = [], []
    for line in lines:
      if not second and (not first or len(first) + len(line) < half or (
          len(first) < half and self._rng.random() < 0.5)):
        first.extend(line)
      else:
        second.extend(line)
    if not second and len(first) > half > 0:
      first, second = first[:half], first[half:]
    return first, second


def _take(lines: list[list[int]], capacity: int) -> tuple[list[list[int]], list[list[int]]]:
  """The first `capacity` tokens of `lines` (cutting a line if needed), and the rest."""
  taken, length = [], 0
  for i, line in enumerate(lines):
    if length + len(line) > capacity:
      cut = capacity - length
      head, tail = line[:cut], line[cut:]
      return taken + ([head] if head else []), [tail] + lines[i + 1:]
    taken.append(line)
    length += len(line)
  return taken, []


def _layout(first: list[int], second: list[int]) -> np.ndarray:
  """`[CLS] A [SEP] B [SEP]` (or `[CLS] A [SEP]`) and its token types, as int32 [2, n]."""
  ids = [CLS_ID, *first, SEP_ID, *second, SEP_ID] if second else [CLS_ID, *first, SEP_ID]
  types = np.zeros(len(ids), np.int32)
  types[len(first) + 2:] = 1
  return np.stack([np.asarray(ids, np.int32), types])
