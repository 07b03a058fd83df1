"""Token ids into the model's fixed-length inputs: `[CLS] A [SEP]` or `[CLS] A [SEP] B [SEP]`.

Segment A and its [CLS] and [SEP] have token type 0, segment B and its [SEP]
type 1, as in pre-training; the rest is [PAD] (id 0, type 0).
"""

from typing import Sequence

import numpy as np
from absl import logging

from electra_jax.data.any_tokenizer import AnyTokenizer
from electra_jax.vocabulary import CLS_ID, SEP_ID


def pack(first: Sequence[int], second: Sequence[int] | None, max_seq_length: int
         ) -> tuple[np.ndarray, np.ndarray]:
  """One example's input ids and token types; the segments must already fit."""
  ids = [CLS_ID, *first, SEP_ID]
  types = [0] * len(ids)
  if second is not None:
    ids += [*second, SEP_ID]
    types += [1] * (len(second) + 1)
  if len(ids) > max_seq_length:
    raise ValueError(f"{len(ids)} tokens do not fit max_seq_length {max_seq_length}")
  input_ids = np.zeros(max_seq_length, np.int32)
  token_types = np.zeros(max_seq_length, np.int32)
  input_ids[:len(ids)], token_types[:len(ids)] = ids, types
  return input_ids, token_types


def truncate_pair(first: list[int], second: list[int] | None, budget: int
                  ) -> tuple[list[int], list[int] | None, bool]:
  """Cuts tokens off the end of the longer segment until both fit `budget` together.

  BERT's and ELECTRA's rule: the shorter segment keeps its tokens, which carry
  more of its meaning. Returns the segments and whether anything was cut.
  """
  if second is None:
    return first[:budget], None, len(first) > budget
  cut = len(first) + len(second) > budget
  while len(first) + len(second) > budget:
    if len(first) > len(second):
      first = first[:-1]
    else:
      second = second[:-1]
  return first, second, cut


def encode_texts(tokenizer: AnyTokenizer, first: Sequence[str], second: Sequence[str] | None,
                 max_seq_length: int, name: str) -> dict[str, np.ndarray]:
  """Single texts or pairs as `input_ids` and `token_type_ids` [examples, max_seq_length].

  Pairs longer than the length are truncated (truncate_pair); how many is
  logged, naming the split (`name`).
  """
  first_ids = tokenizer.encode(list(first))
  second_ids = tokenizer.encode(list(second)) if second is not None else [None] * len(first_ids)
  budget = max_seq_length - (2 if second is None else 3)
  input_ids = np.zeros((len(first_ids), max_seq_length), np.int32)
  token_types = np.zeros_like(input_ids)
  truncated = 0
  for row, (a, b) in enumerate(zip(first_ids, second_ids)):
    a, b, cut = truncate_pair(a, b, budget)
    truncated += cut
    input_ids[row], token_types[row] = pack(a, b, max_seq_length)
  if truncated:
    logging.info("%s: %d of %d examples are longer than max_seq_length %d and were truncated",
                 name, truncated, len(first_ids), max_seq_length)
  return dict(input_ids=input_ids, token_type_ids=token_types)
