"""The input pipeline: prepared shards to batches, with Grain.

Global batch s (of B rows) holds the examples at positions s*B .. s*B+B-1 of
one endless stream: epoch after epoch of the training split, each epoch in
its own order (Grain's index shuffle, a bijection computed per index, so no
permutation is ever stored). A position belongs to one epoch, so every
example is seen exactly once per epoch and none is dropped; a batch may span
two epochs. So the batch of step s is a function of (prepared data, seed, B, s)
alone, and host i of N reads only rows [i*B/N, (i+1)*B/N) of it: N hosts
together see exactly the batches of one host.

The order is that of Grain's `shuffle().repeat().batch()`, but each host
batch is read as one element (its positions computed here) rather than row by
row through three dataset layers: three times the examples/s. The iterator is
Grain's: reading and decoding run in background threads ahead of the step,
and `get_state()` is a small dict (`{"next_index": step}`) that `set_state()`
restores, so a resumed run continues with the very next batch: a checkpoint
keeps it with the model.
"""

import sys
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
  source = _source(data, "train")
  order_seed = _order_seed(seed)

  def host_batch(step: int) -> Batch:
    positions = step * batch_size + process_index * rows + np.arange(rows)
    records = [_shuffled(int(offset), num_examples, order_seed + int(epoch))
               for epoch, offset in zip(*np.divmod(positions, num_examples))]
    return shards.decode_records([source[r] for r in records], data.max_seq_length)

  steps = grain.MapDataset.range(sys.maxsize).map(host_batch)
  return iter(steps.to_iter_dataset(
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
  source = _source(data, "eval")
  batches = []
  for step in range(max(1, min(num_batches, num_examples // batch_size))):
    start = step * batch_size + process_index * rows
    records = [source[r] for r in range(start, min(start + rows, num_examples))]
    batches.append(shards.decode_records(records, data.max_seq_length, num_rows=rows))
  return batches


def read_examples(data: shards.PreparedData, split: str) -> Examples:
  """A whole split in memory, in order: for tests and inspection, not for training."""
  source = _source(data, split)
  batch = shards.decode_records([source[r] for r in range(len(source))], data.max_seq_length)
  return Examples(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"])


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


def _shuffled(offset: int, num_examples: int, epoch_seed: int) -> int:
  """The example at `offset` of an epoch: Grain's index shuffle, as its `shuffle` uses it."""
  return grain.experimental.index_shuffle(offset, max_index=num_examples - 1,
                                          seed=epoch_seed % 2**32, rounds=4)


def _order_seed(seed: int) -> int:
  """The shuffle seed of epoch 0 for the run's seed; epoch e uses this + e.

  A hash, not the seed itself, so that runs with seeds s and s+1 do not see
  the same orders one epoch apart.
  """
  return zlib.crc32(f"data order {seed}".encode("utf-8"))
