"""TFDS datasets as a corpus: `--config.data.source=tfds:wikipedia/20230601.en`.

TensorFlow Datasets is an optional extra (`pip install 'electra_jax[tfds]'`):
its dataset builders import TensorFlow, which nothing else here needs. A split
is read in slices of a fixed number of records, the inputs that the worker
processes share, so the prepared examples do not depend on their number. The
dataset is looked up where TFDS looks (`TFDS_DATA_DIR`, else ~/tensorflow_datasets,
else Google's public copies) and downloaded and prepared on first use, as
`tfds.load` does.
"""

import importlib
from typing import Iterator

from absl import logging

from electra_jax.errors import DataError

# Records per input: a few minutes of work for one core, so that every core
# gets many and the progress bar moves.
RECORDS_PER_INPUT = 50_000


def import_tfds(user: str = "tfds: sources"):
  """The tensorflow_datasets module, or a DataError telling `user`'s reader how to install it."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    # TFDS imports without TensorFlow, but its dataset builders do not.
    importlib.import_module("tensorflow")
  except ImportError as error:
    raise DataError(f"{user} need TensorFlow Datasets and TensorFlow ({error.name} is not "
                    "installed); pip install 'electra_jax[tfds]'") from None
  return tfds


def open_builder(tfds, dataset: str):
  """TFDS's builder of `dataset`, or a DataError naming it."""
  try:
    return tfds.builder(dataset, try_gcs=True)
  except Exception as error:  # pylint: disable=broad-except  # TFDS raises many kinds
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    raise DataError(f"cannot open the TFDS dataset '{dataset}': {first_line}; check the name "
                    "(e.g. tfds:wikipedia/20230601.en, tfds:c4/en) and TFDS_DATA_DIR") from None


def split_slices(dataset: str, split: str) -> list[tuple[str, int]]:
  """Slices of `split` of at most RECORDS_PER_INPUT records each, with their sizes."""
  tfds = import_tfds()
  builder = open_builder(tfds, dataset)
  logging.info("Opening the TFDS dataset %s (downloaded and prepared on first use)", dataset)
  builder.download_and_prepare()
  try:
    num_records = builder.info.splits[split].num_examples
  except (KeyError, ValueError) as error:
    splits = ", ".join(builder.info.splits)
    raise DataError(f"the TFDS dataset '{dataset}' has no split '{split}' ({error}); set "
                    f"--config.data.tfds_split to one of {splits}") from None
  if not num_records:
    raise DataError(f"the split '{split}' of the TFDS dataset '{dataset}' is empty")
  return [(f"{split}[{start}:{min(start + RECORDS_PER_INPUT, num_records)}]",
           min(RECORDS_PER_INPUT, num_records - start))
          for start in range(0, num_records, RECORDS_PER_INPUT)]


def read_texts(dataset: str, split: str, text_field: str) -> Iterator[str]:
  """The `text_field` of each record of `split`, in order."""
  tfds = import_tfds()
  builder = open_builder(tfds, dataset)
  if text_field not in builder.info.features:
    raise DataError(f"the TFDS dataset '{dataset}' has no feature '{text_field}'; set "
                    f"--config.data.text_field to one of {', '.join(builder.info.features)}")
  records = builder.as_dataset(split=split, shuffle_files=False)
  for record in tfds.as_numpy(records):
    text = record[text_field]
    yield text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)
