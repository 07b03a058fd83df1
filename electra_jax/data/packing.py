"""Fixed-length pre-training examples, packed from tokenized documents the ELECTRA way.

Each example is `[CLS] A [SEP] B [SEP]`: consecutive lines of one document,
cut into two segments at a line boundary, so that pre-training sees the
sentence-pair shape of fine-tuning inputs. Some examples are a single segment
`[CLS] A [SEP]` or shorter than the maximum, so that the model also sees those
shapes. This follows `ExampleBuilder` of google-research/electra, with its
random draws taken from an explicit numpy Generator.
"""

import dataclasses
import sys
from typing import Iterable

import numpy as np

from electra_jax.data.tokenizer import CLS_ID, PAD_ID, SEP_ID

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


def pack_documents(token_documents: Iterable[list[list[int]]], max_seq_length: int,
                   rng: np.random.Generator, single_segment_prob: float,
                   short_seq_prob: float) -> Examples:
  """Packs documents (lists of tokenized lines) into examples of `max_seq_length` tokens.

  Lines are gathered until they reach the target length, then become one
  example; the rest of a document becomes a shorter one, so no example mixes
  two documents.
  """
  builder = _ExampleBuilder(max_seq_length, rng, single_segment_prob, short_seq_prob)
  for document in token_documents:
    builder.add_document(document)
  return builder.examples()


class _ExampleBuilder:
  """Holds the target length, which carries over from one example to the next."""

  def __init__(self, max_seq_length: int, rng: np.random.Generator, single_segment_prob: float,
               short_seq_prob: float):
    self._max_length = max_seq_length
    self._rng = rng
    self._single_segment_prob = single_segment_prob
    self._short_seq_prob = short_seq_prob
    self._target_length = max_seq_length
    self._segments: list[tuple[list[int], list[int]]] = []

  def add_document(self, document: list[list[int]]) -> None:
    lines, length = [], 0
    for line in document:
      if not line:
        continue
      lines.append(line)
      length += len(line)
      if length >= self._target_length:
        self._add_example(lines)
        lines, length = [], 0
    if lines:
      self._add_example(lines)

  def _add_example(self, lines: list[list[int]]) -> None:
    first, second = self._split(lines)
    first = first[:self._max_length - 2]  # room for [CLS] and [SEP]
    second = second[:max(0, self._max_length - len(first) - 3)]
    self._segments.append((first, second))
    if self._rng.random() < self._short_seq_prob:
      self._target_length = int(
          self._rng.integers(_MIN_TARGET_LENGTH, self._max_length, endpoint=True))
    else:
      self._target_length = self._max_length

  def _split(self, lines: list[list[int]]) -> tuple[list[int], list[int]]:
    """Cuts the lines into segments A and B at a line boundary.

    A takes lines while it stays below half the target; the line that would
    take it over goes to A half the time (so A is not always the shorter).
    Unlike the original, a line never returns to A once B has begun: that
    would put the document's text out of order.
    """
    if self._rng.random() < self._single_segment_prob:
      first_target = sys.maxsize
    else:
      first_target = (self._target_length - 3) // 2  # 3: [CLS] and two [SEP]
    first, second = [], []
    for line in lines:
      if not second and (not first or len(first) + len(line) < first_target or (
          len(first) < first_target and self._rng.random() < 0.5)):
        first.extend(line)
      else:
        second.extend(line)
    return first, second

  def examples(self) -> Examples:
    shape = (len(self._segments), self._max_length)
    input_ids = np.full(shape, PAD_ID, np.int32)
    token_type_ids = np.zeros(shape, np.int32)
    for row, (first, second) in enumerate(self._segments):
      ids = [CLS_ID, *first, SEP_ID, *second, SEP_ID] if second else [CLS_ID, *first, SEP_ID]
      input_ids[row, :len(ids)] = ids
      token_type_ids[row, len(first) + 2:len(ids)] = 1
    return Examples(input_ids=input_ids, token_type_ids=token_type_ids)
