"""Prepared examples on disk: ArrayRecord shards, and the manifest that describes them.

Why ArrayRecord: it reads any record by its index, so the loader shuffles
the whole corpus without reading it all or keeping an index of its own, and
each host reads only its rows; Grain (the JAX ecosystem's loader) reads it
natively, in parallel threads; it is one file per shard with no server.
TFRecord reads only in order, and numpy memory maps would need a fixed row
size (padding on disk) and our own parallel reading.

One record is one example without its padding: int32 little-endian, the ids
row then the token-type row (`ExampleBuilder`'s [2, n] array). The loader
pads it back to the manifest's `max_seq_length`.
"""

import dataclasses
import json
import os

import numpy as np
from array_record.python import array_record_module

from electra_jax.data.any_tokenizer import AnyTokenizer
from electra_jax.errors import DataError
from electra_jax.runtime.fileio import atomic_write
from electra_jax.vocabulary import PAD_ID

MANIFEST_FILE = "manifest.json"
SPLITS = ("train", "eval")
# group_size 1: every record can be read alone (random access); zstd keeps token ids small.
_WRITER_OPTIONS = "group_size:1,zstd:3"
_RECORD_DTYPE = np.dtype("<i4")


@dataclasses.dataclass(frozen=True)
class PreparedData:
  """Prepared examples: their directory, its manifest, and the tokenizer they were made with."""

  directory: str
  manifest: dict
  tokenizer: AnyTokenizer

  @property
  def max_seq_length(self) -> int:
    return self.manifest["settings"]["max_seq_length"]

  def num_examples(self, split: str) -> int:
    return self.manifest["splits"][split]["examples"]

  def shard_paths(self, split: str) -> list[str]:
    """The split's shards in input order: the order of its examples."""
    return [os.path.join(self.directory, shard["file"])
            for shard in self.manifest["splits"][split]["shards"]]


def shard_file(split: str, input_index: int) -> str:
  return f"{split}-{input_index:05d}.array_record"


def encode_record(row: np.ndarray) -> bytes:
  return row.astype(_RECORD_DTYPE).tobytes()


def decode_records(records: list[bytes], max_seq_length: int,
                   num_rows: int | None = None) -> dict[str, np.ndarray]:
  """Examples padded to `max_seq_length`: input_ids and token_type_ids, int32 [num_rows, L].

  Rows past the records (when `num_rows` is larger) are all [PAD]: they fill
  eval batches, and the losses ignore them.
  """
  shape = (len(records) if num_rows is None else num_rows, max_seq_length)
  input_ids, token_type_ids = np.full(shape, PAD_ID, np.int32), np.zeros(shape, np.int32)
  for row, record in enumerate(records):
    ids, types = np.frombuffer(record, _RECORD_DTYPE).reshape(2, -1)
    input_ids[row, :len(ids)], token_type_ids[row, :len(ids)] = ids, types
  return {"input_ids": input_ids, "token_type_ids": token_type_ids}


class ShardWriter:
  """Writes one shard under a temporary name; `commit` gives it its name, so a shard is whole.

  A shard that gets no record is not written.
  """

  def __init__(self, path: str):
    self._path = path
    self._tmp_path = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    self._writer = array_record_module.ArrayRecordWriter(self._tmp_path, _WRITER_OPTIONS)
    self.num_records = 0

  def write(self, row: np.ndarray) -> None:
    self._writer.write(encode_record(row))
    self.num_records += 1

  def commit(self) -> None:
    self._writer.close()
    if self.num_records:
      os.replace(self._tmp_path, self._path)
    else:
      os.remove(self._tmp_path)

  def abort(self) -> None:
    self._writer.close()
    os.remove(self._tmp_path)


def read_json(path: str) -> dict | None:
  """The JSON object in `path`, or None when there is none."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as error:
    raise DataError(f"cannot read {path}: {error}; delete it to prepare the data again") from None


def write_json(path: str, value: dict) -> None:
  atomic_write(path, json.dumps(value, indent=2, sort_keys=True) + "\n")
