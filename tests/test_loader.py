"""The loader: global batches that do not depend on the number of hosts, epochs, resuming."""

import itertools
import json

import grain
import numpy as np
import pytest

from electra_jax.data import loader, shards
from electra_jax.errors import DataError
from electra_jax.vocabulary import PAD_ID

LENGTH = 8


def numbered_data(tmp_path, num_train: int, num_eval: int = 5,
                  shard_sizes: tuple[int, ...] = (7, 1, 30)) -> shards.PreparedData:
  """Prepared data whose example i is the token 100 + i, then its length's worth of padding.

  The training examples are spread over shards of `shard_sizes` (cycled), so
  that the loader's view of the split crosses files.
  """
  splits, first = {}, {"train": 100, "eval": 100_000}
  for split, count in (("train", num_train), ("eval", num_eval)):
    sizes, left = [], count
    for size in itertools.cycle(shard_sizes):
      if not left:
        break
      sizes.append(min(size, left))
      left -= sizes[-1]
    shard_list, value = [], first[split]
    for index, size in enumerate(sizes):
      writer = shards.ShardWriter(str(tmp_path / shards.shard_file(split, index)))
      for _ in range(size):
        writer.write(np.array([[value, value], [0, 1]], np.int32))
        value += 1
      writer.commit()
      shard_list.append({"file": shards.shard_file(split, index), "examples": size})
    splits[split] = {"examples": count, "shards": shard_list}
  manifest = {"settings": {"max_seq_length": LENGTH}, "splits": splits}
  return shards.PreparedData(directory=str(tmp_path), manifest=manifest, tokenizer=None)


def example_ids(batch) -> list[int]:
  assert batch["input_ids"].shape[1] == LENGTH and batch["input_ids"].dtype == np.int32
  np.testing.assert_array_equal(batch["input_ids"][:, 2:], PAD_ID)
  np.testing.assert_array_equal(batch["token_type_ids"][:, 1], np.where(
      batch["input_ids"][:, 0] == PAD_ID, 0, 1))
  return batch["input_ids"][:, 0].tolist()


def global_batches(data, batch_size: int, seed: int, steps: int, hosts: int) -> list[list[int]]:
  """The global batches of `steps` steps, put together from the rows of each simulated host."""
  iterators = [loader.train_iterator(data, batch_size, seed, process_index=i, process_count=hosts)
               for i in range(hosts)]
  return [sum((example_ids(next(it)) for it in iterators), []) for _ in range(steps)]


def test_global_batches_are_the_same_for_1_2_and_4_hosts(tmp_path):
  data = numbered_data(tmp_path, 50)
  one_host = global_batches(data, 8, seed=3, steps=20, hosts=1)
  assert global_batches(data, 8, seed=3, steps=20, hosts=2) == one_host
  assert global_batches(data, 8, seed=3, steps=20, hosts=4) == one_host
  assert global_batches(data, 8, seed=4, steps=20, hosts=1) != one_host  # the seed matters


def test_every_example_once_per_epoch_in_a_new_order_each_epoch(tmp_path):
  data = numbered_data(tmp_path, 50)
  stream = sum(global_batches(data, 10, seed=0, steps=15, hosts=1), [])  # 3 epochs
  epochs = [stream[50 * e:50 * (e + 1)] for e in range(3)]
  for epoch in epochs:
    assert sorted(epoch) == list(range(100, 150))
  assert epochs[0] != epochs[1] != epochs[2] and epochs[0] != sorted(epochs[0])


def test_a_batch_may_span_two_epochs_without_dropping_an_example(tmp_path):
  data = numbered_data(tmp_path, 10)
  stream = sum(global_batches(data, 4, seed=0, steps=5, hosts=1), [])  # 20 rows: 2 epochs
  assert sorted(stream[:10]) == sorted(stream[10:]) == list(range(100, 110))


@pytest.mark.parametrize("hosts", [1, 2])
def test_stop_restore_the_state_and_continue_matches_an_uninterrupted_run(tmp_path, hosts):
  data = numbered_data(tmp_path, 50)
  uninterrupted = global_batches(data, 8, seed=1, steps=16, hosts=hosts)
  iterators = [loader.train_iterator(data, 8, 1, process_index=i, process_count=hosts)
               for i in range(hosts)]
  first = [sum((example_ids(next(it)) for it in iterators), []) for _ in range(7)]
  states = [json.loads(json.dumps(it.get_state())) for it in iterators]  # as a checkpoint keeps it
  assert all(len(json.dumps(state)) < 100 for state in states)
  del iterators  # the run stops; a new process starts from the saved states
  resumed = [loader.train_iterator(data, 8, 1, process_index=i, process_count=hosts)
             for i in range(hosts)]
  for it, state in zip(resumed, states):
    it.set_state(state)
  rest = [sum((example_ids(next(it)) for it in resumed), []) for _ in range(9)]
  assert first + rest == uninterrupted


def test_too_few_examples_or_an_uneven_batch_is_a_clear_error(tmp_path):
  data = numbered_data(tmp_path, 3)
  with pytest.raises(DataError, match=r"has 3 examples, fewer than train.batch_size=4; lower "
                     r"--config.train.batch_size"):
    loader.train_iterator(data, 4, 0)
  with pytest.raises(DataError, match=r"train.batch_size=3 does not divide among 2 hosts"):
    loader.train_iterator(data, 3, 0, process_index=0, process_count=2)


def test_eval_batches_are_the_first_full_batches_in_order_split_across_hosts(tmp_path):
  data = numbered_data(tmp_path, 10, num_eval=10)
  batches = loader.eval_batches(data, 4, 5)
  assert [example_ids(b) for b in batches] == [[100_000 + i for i in range(4)],
                                               [100_004 + i for i in range(4)]]
  assert len(loader.eval_batches(data, 4, 1)) == 1
  halves = [loader.eval_batches(data, 4, 5, process_index=i, process_count=2) for i in range(2)]
  assert [example_ids(a) + example_ids(b) for a, b in zip(*halves)] == [
      example_ids(b) for b in batches]


def test_an_eval_split_smaller_than_a_batch_is_padded(tmp_path):
  data = numbered_data(tmp_path, 10, num_eval=2)
  (batch,) = loader.eval_batches(data, 4, 5)
  assert example_ids(batch) == [100_000, 100_001, PAD_ID, PAD_ID]
  assert np.all(batch["input_ids"][2:] == PAD_ID) and np.all(batch["token_type_ids"][2:] == 0)


def test_read_examples_reads_a_split_in_order(tmp_path):
  data = numbered_data(tmp_path, 40)
  examples = loader.read_examples(data, "train")
  assert examples.input_ids[:, 0].tolist() == list(range(100, 140))
  assert examples.input_ids.shape == examples.token_type_ids.shape == (40, LENGTH)


def test_the_order_is_that_of_grains_shuffle_repeat_batch(tmp_path):
  data = numbered_data(tmp_path, 50)
  source = grain.sources.ArrayRecordDataSource(data.shard_paths("train"))
  reference = (grain.MapDataset.source(source)
               .shuffle(seed=loader._order_seed(7))  # pylint: disable=protected-access
               .repeat()
               .map(lambda record: int(np.frombuffer(record, np.int32)[0]))
               .batch(8))
  expected = [reference[step].tolist() for step in range(15)]
  assert global_batches(data, 8, seed=7, steps=15, hosts=1) == expected
