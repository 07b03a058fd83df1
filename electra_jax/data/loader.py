"""The input pipeline: prepared shards to batches, with Grain.

Global batch s (of B rows) holds the examples at positions s*B .. s*B+B-1 of
one endless stream: epoch after epoch of the training split, each epoch in
its own order (Grain's index shuffle, a bijection computed per index, so no
permutation is ever stored). A position belongs to one epoch, so every
example is seen exactly once per epoch and none is dropped; a batch may span
two epochs. So the batch of step s is a function of (prepared data, seed, B, s)
alone, and host i of N reads only rows [i*B/N, (i+1)*B/N) of it: N hosts
together see exactly the batches of one host.

The iterator is Grain's: reading and decoding run in background threads
ahead of the step, and `get_state()` is a small dict (`{"next_index": step}`)
that `set_state()` restores, so a resumed run continues with the very next
batch: a checkpoint keeps it with the model.
"""

import functools
import zlib

import grain
import numpy as np

from electra_jax.data import shards
from electra_jax.data.packing import Examples
from electra_jax.errors import DataError

Batch = dict[str, np.ndarray]

# Batches read ahead of the step, and the threads reading them.
_PREFETCH_BATCHES = 8
_READ_THREADS = 4


def train_iterator(data: shards.PreparedData, batch_size: int, seed: int,
                   process_index: int = 0, process_count: int = 1) -> grain.DatasetIterator:
  """Endless shuffled batches of this host's rows: `batch_size / process_count` of each."""
  num_examples = data.num_examples("train")
  if num_examples < batch_size:
    raise DataError(f"the training split has {num_examples} examples, fewer than "
                    f"train.batch_size={batch_size}; lower --config.train.batch_size or add text")
  rows = host_rows(batch_size, process_index, process_count)
  examples = (grain.MapDataset.source(_source(data, "train"))
              .shuffle(seed=_order_seed(seed))
              .repeat()
              .map(functools.partial(shards.decode_record, max_seq_length=data.max_seq_length))
              .batch(rows))
  host_batches = examples[process_index::process_count]
  return iter(host_batches.to_iter_dataset(
      grain.ReadOptions(num_threads=_READ_THREADS, prefetch_buffer_size=_PREFETCH_BATCHES)))


def eval_batches(data: shards.PreparedData, batch_size: int, num_batches: int,
                 process_index: int = 0, process_count: int = 1) -> list[Batch]:
  """This host's rows of the first `num_batches` full global batches, in order.

  The same batches at every evaluation. An eval split smaller than one batch
  is padded with all-[PAD] rows, which the losses ignore.
  """
  num_examples = data.num_examples("eval")
  if not num_examples:
    raise DataError("the eval split has no examples; raise --config.data.eval_fraction or add "
                    "documents")
  rows = host_rows(batch_size, process_index, process_count)
  count = max(1, min(num_batches, num_examples // batch_size))
  source = _source(data, "eval")
  padding = shards.padding_example(data.max_seq_length)

  def example(position: int) -> Batch:
    if position >= num_examples:
      return padding
    return shards.decode_record(source[position], data.max_seq_length)

  examples = grain.MapDataset.range(count * batch_size).map(example).batch(rows)
  return list(examples[process_index::process_count])


def read_examples(data: shards.PreparedData, split: str) -> Examples:
  """A whole split in memory, in order: for tests and inspection, not for training."""
  source = _source(data, split)
  rows = [shards.decode_record(source[i], data.max_seq_length) for i in range(len(source))]
  return Examples(input_ids=np.stack([row["input_ids"] for row in rows]),
                  token_type_ids=np.stack([row["token_type_ids"] for row in rows]))


def host_rows(batch_size: int, process_index: int, process_count: int) -> int:
  """Rows of each global batch that one host reads."""
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is not in [0, {process_count})")
  if batch_size % process_count:
    raise DataError(f"train.batch_size={batch_size} does not divide among {process_count} hosts; "
                    f"use a multiple of {process_count}")
  return batch_size // process_count


def _source(data: shards.PreparedData, split: str) -> grain.sources.ArrayRecordDataSource:
  return grain.sources.ArrayRecordDataSource(data.shard_paths(split))


def _order_seed(seed: int) -> int:
  """Grain's shuffle seed for the run's seed; Grain seeds epoch e with this + e.

  A hash, not the seed itself, so that runs with seeds s and s+1 do not see
  the same orders one epoch apart.
  """
  return zlib.crc32(f"data order {seed}".encode("utf-8"))
