"""From a config to batches: read, tokenize, split, pack, then serve.

All of it runs on the host before the first step (tokenize once; the step never
waits on Python). The training loop sees `prepare`, `train_batches` and
`eval_batches` only.
"""

import dataclasses
import hashlib
import itertools
import time
import zlib
from typing import Iterator

import ml_collections
import numpy as np
from absl import logging

from electra_jax.data.packing import Examples, pack_documents
from electra_jax.data.sources import iter_documents
from electra_jax.data.tokenizer import PAD_ID, Tokenizer, train_tokenizer
from electra_jax.data.tokenizer_files import (AnyTokenizer, load_tokenizer, save_tokenizer,
                                              tokenizer_path)
from electra_jax.errors import DataError

Batch = dict[str, np.ndarray]


@dataclasses.dataclass
class PretrainingData:
  """What training needs: the tokenizer (its ids are the model's) and both splits."""

  tokenizer: Tokenizer
  train: Examples
  eval: Examples


def prepare(config: ml_collections.ConfigDict, workdir: str) -> PretrainingData:
  """Reads `config.data.source` and packs its train and eval examples.

  The tokenizer is the workdir's own when it has one (a resumed run must
  keep its ids), else trained on the corpus and saved there. Nothing is written
  before the corpus has been read.
  """
  start = time.perf_counter()
  data = config.data
  corpus = data.source or "the built-in corpus"
  documents = list(iter_documents(data.source))
  train_documents, eval_documents = split_documents(documents, data.eval_fraction, corpus)
  tokenizer = _load_or_train_tokenizer(config, workdir, documents)
  prepared = PretrainingData(
      tokenizer=tokenizer,
      train=_tokenize_and_pack("train", train_documents, tokenizer, config, corpus),
      eval=_tokenize_and_pack("eval", eval_documents, tokenizer, config, corpus))
  logging.info("Prepared %s in %.1f s", corpus, time.perf_counter() - start)
  return prepared


def split_documents(documents: list[list[str]], eval_fraction: float,
                    corpus: str) -> tuple[list[list[str]], list[list[str]]]:
  """Holds out `eval_fraction` of the documents (at least one, never all) for evaluation.

  Documents are held out by a hash of their text, not by a shuffle: the split
  is the same whatever the seed or the order of the files, and copies of a
  document (nearly always) land on the same side. Each side keeps corpus order.
  """
  if len(documents) < 2:
    raise DataError(f"{corpus} has {len(documents)} document(s), but training and evaluation "
                    "need one each; separate documents with a blank line, or add text")
  num_eval = min(max(1, round(eval_fraction * len(documents))), len(documents) - 1)
  by_hash = sorted(range(len(documents)), key=lambda i: (_text_hash(documents[i]), i))
  held_out = set(by_hash[:num_eval])
  train = [d for i, d in enumerate(documents) if i not in held_out]
  eval_ = [d for i, d in enumerate(documents) if i in held_out]
  return train, eval_


def train_batches(examples: Examples, batch_size: int, seed: int,
                  start_step: int = 0) -> Iterator[Batch]:
  """Endless shuffled batches; the batch of step s depends on (examples, batch_size, seed, s) only.

  Each epoch is a fresh permutation drawn from (seed, epoch), without its
  incomplete last batch, so a run resumed at `start_step` sees exactly the
  batches an uninterrupted one would.
  """
  steps_per_epoch = len(examples) // batch_size
  if not steps_per_epoch:
    raise DataError(f"the training split has {len(examples)} examples, fewer than "
                    f"train.batch_size={batch_size}; lower --config.train.batch_size or add text")
  return _shuffled_batches(examples, batch_size, seed, start_step, steps_per_epoch)


def eval_batches(examples: Examples, batch_size: int, num_batches: int) -> list[Batch]:
  """The first `num_batches` full batches in order, the same at every evaluation.

  An eval split smaller than one batch is padded with all-[PAD] rows, which
  the losses ignore.
  """
  if not len(examples):
    raise DataError("the eval split has no examples; add text to the corpus")
  if len(examples) < batch_size:
    missing = ((0, batch_size - len(examples)), (0, 0))
    return [{"input_ids": np.pad(examples.input_ids, missing, constant_values=PAD_ID),
             "token_type_ids": np.pad(examples.token_type_ids, missing)}]
  count = min(num_batches, len(examples) // batch_size)
  return [_batch(examples, np.arange(i * batch_size, (i + 1) * batch_size)) for i in range(count)]


def _shuffled_batches(examples: Examples, batch_size: int, seed: int, start_step: int,
                      steps_per_epoch: int) -> Iterator[Batch]:
  order_epoch, order = -1, np.empty(0, np.int64)
  for step in itertools.count(start_step):
    epoch, index = divmod(step, steps_per_epoch)
    if epoch != order_epoch:
      order_epoch, order = epoch, np.random.default_rng((seed, epoch)).permutation(len(examples))
    yield _batch(examples, order[index * batch_size:(index + 1) * batch_size])


def _batch(examples: Examples, rows: np.ndarray) -> Batch:
  return {"input_ids": examples.input_ids[rows], "token_type_ids": examples.token_type_ids[rows]}


def _load_or_train_tokenizer(config: ml_collections.ConfigDict, workdir: str,
                             documents: list[list[str]]) -> AnyTokenizer:
  vocab_size = config.model.vocab_size
  tokenizer = load_tokenizer(workdir, config.data.lowercase)
  if tokenizer is not None:
    path = tokenizer_path(workdir)
    if tokenizer.vocab_size != vocab_size:
      raise DataError(f"{path} has {tokenizer.vocab_size} pieces but model.vocab_size="
                      f"{vocab_size}; set --config.model.vocab_size={tokenizer.vocab_size}, "
                      "or use a new --workdir to train a new tokenizer")
    logging.info("Loaded the tokenizer %s (sha256 %s)", path, tokenizer.sha256[:12])
    return tokenizer
  start = time.perf_counter()
  tokenizer = train_tokenizer(documents, vocab_size, config.data.lowercase,
                              config.data.tokenizer_sentences, config.train.seed)
  path = save_tokenizer(tokenizer, workdir)
  logging.info("Trained a tokenizer of %d pieces in %.1f s; saved it to %s", vocab_size,
               time.perf_counter() - start, path)
  return tokenizer


def _tokenize_and_pack(split: str, documents: list[list[str]], tokenizer: Tokenizer,
                       config: ml_collections.ConfigDict, corpus: str) -> Examples:
  data = config.data
  examples = pack_documents(
      _tokenize(tokenizer, documents), data.max_seq_length,
      _rng(config.train.seed, f"pack {split}"), data.single_segment_prob, data.short_seq_prob)
  if not len(examples):
    raise DataError(f"the {split} split of {corpus} yields no examples: its text encodes to "
                    "no tokens; add text")
  logging.info("%s split: %d documents -> %d examples of %d tokens (%d without padding)", split,
               len(documents), len(examples), data.max_seq_length,
               np.count_nonzero(examples.input_ids != PAD_ID))
  return examples


def _tokenize(tokenizer: Tokenizer, documents: list[list[str]]) -> list[list[list[int]]]:
  """Encodes every line in one batch call, then regroups the lines by document."""
  encoded = iter(tokenizer.encode([line for document in documents for line in document]))
  return [list(itertools.islice(encoded, len(document))) for document in documents]


def _text_hash(document: list[str]) -> bytes:
  return hashlib.blake2b("\n".join(document).encode("utf-8"), digest_size=8).digest()


def _rng(seed: int, purpose: str) -> np.random.Generator:
  """A generator for one use of the run's seed, independent of the others."""
  return np.random.default_rng((seed, zlib.crc32(purpose.encode("utf-8"))))
