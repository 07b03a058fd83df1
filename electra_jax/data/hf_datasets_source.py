"""Hugging Face `datasets` as a corpus: parquet and arrow files, saved datasets, datasets by name.

  --config.data.source=/data/wiki/*.parquet   parquet or arrow files, known by their content
  --config.data.source=/data/wiki_saved       a directory that Dataset.save_to_disk wrote (a
                                              DatasetDict's: data.tfds_split picks the split)
  --config.data.source=hf:wikimedia/wikipedia a dataset by name (or a local folder of data
                                              files), as datasets.load_dataset finds it; with
                                              HF_DATASETS_OFFLINE=1 from the local cache only

Each record's `data.text_field` is a document (its lines, as for JSON lines).
Every form ends as arrow or parquet files, read here with pyarrow in record
batches, so a corpus larger than memory streams; each file is one input for the
preparation's worker processes. pyarrow, and `datasets` for names, are the
`datasets` extra (`pip install -e ".[datasets]"`).
"""

import importlib
import json
import os
from typing import Iterator

from electra_jax.errors import DataError
from electra_jax.runtime import fileio

PREFIX = "hf:"
PARQUET = "parquet"
ARROW_FILE = "arrow file"
ARROW_STREAM = "arrow stream"  # what Dataset.save_to_disk and the datasets cache write
_MAGIC = ((b"PAR1", PARQUET), (b"ARROW1", ARROW_FILE), (b"\xff\xff\xff\xff", ARROW_STREAM))
MAGIC_BYTES = 6  # enough of a file's start to tell these apart
_SAVED_DATASET_FILES = ("state.json", "dataset_dict.json")
_BATCH_ROWS = 1024


def columnar_kind(head: bytes) -> str | None:
  """PARQUET, ARROW_FILE or ARROW_STREAM for a file starting with `head`; None for others."""
  return next((kind for magic, kind in _MAGIC if head.startswith(magic)), None)


def is_saved_dataset(path: str) -> bool:
  return any(fileio.is_file(os.path.join(path, name)) for name in _SAVED_DATASET_FILES)


def saved_dataset_files(path: str, split: str) -> list[str]:
  """The arrow files of the dataset that `save_to_disk` wrote at `path`, in order."""
  if fileio.is_file(os.path.join(path, "dataset_dict.json")):
    splits = _read_json(os.path.join(path, "dataset_dict.json")).get("splits", [])
    if split not in splits:
      raise DataError(f"the saved dataset {path} has no split '{split}'; set "
                      f"--config.data.tfds_split to one of {', '.join(splits)}")
    path = os.path.join(path, split)
  state = _read_json(os.path.join(path, "state.json"))
  files = [os.path.join(path, entry["filename"]) for entry in state.get("_data_files", [])]
  if not files:
    raise DataError(f"the saved dataset {path} lists no data files in its state.json")
  return files


def named_dataset_files(name: str, split: str) -> list[str]:
  """The cached arrow files of the dataset `name`, as datasets.load_dataset prepares it."""
  datasets = import_datasets(f"--config.data.source={PREFIX}{name}")
  try:
    dataset = datasets.load_dataset(name, split=split)
  except Exception as error:  # pylint: disable=broad-except  # datasets raises many kinds
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    raise DataError(f"cannot load the Hugging Face dataset '{name}' (split '{split}'): "
                    f"{first_line}; check the name, --config.data.tfds_split, and the local "
                    "cache (HF_DATASETS_CACHE) when offline") from None
  return [entry["filename"] for entry in dataset.cache_files]


def read_texts(path: str, kind: str, text_field: str) -> Iterator[str]:
  """The `text_field` of each record of a parquet or arrow file, in order."""
  pyarrow = _import("pyarrow", f"reading {path}")
  try:
    if kind == PARQUET:
      parquet = importlib.import_module("pyarrow.parquet").ParquetFile(fileio.open_binary(path))
      _check_column(path, parquet.schema_arrow.names, text_field)
      batches = parquet.iter_batches(batch_size=_BATCH_ROWS, columns=[text_field])
    elif kind == ARROW_FILE:
      reader = pyarrow.ipc.open_file(fileio.open_binary(path))
      _check_column(path, reader.schema.names, text_field)
      batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
    else:
      batches = pyarrow.ipc.open_stream(
          fileio.open_binary(path) if fileio.is_url(path) else pyarrow.memory_map(path))
      _check_column(path, batches.schema.names, text_field)
    for batch in batches:
      for text in batch.column(text_field).to_pylist():
        yield "" if text is None else str(text)
  except (OSError, pyarrow.ArrowException) as error:
    raise DataError(f"cannot read {path} as {kind}: {error}") from None


def _check_column(path: str, names: list[str], text_field: str) -> None:
  if text_field not in names:
    raise DataError(f"{path} has no column '{text_field}'; set --config.data.text_field to one "
                    f"of {', '.join(names)}")


def import_datasets(user: str):
  """The `datasets` module, or a DataError telling `user`'s reader how to install it."""
  return _import("datasets", user)


def _import(module: str, user: str):
  try:
    return importlib.import_module(module)
  except ImportError:
    raise DataError(f"{user} needs the Python package '{module}': pip install -e "
                    "'.[datasets]' (datasets and pyarrow)") from None


def _read_json(path: str) -> dict:
  try:
    with fileio.open_text(path) as f:
      return json.load(f)
  except (OSError, ValueError) as error:
    raise DataError(f"cannot read {path}: {error}") from None
