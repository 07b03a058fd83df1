"""From a config to batches: the tokenizer, the prepared shards, and the loader over them.

`prepare` runs once per corpus (the first run prepares, later runs and
resumed ones reuse the shards); the training loop sees `prepare` and the
loader's `train_iterator` and `eval_batches` only. Host-side work stays off the hot
path: tokenization and packing happen before the first step, and batches are
read from the shards by background threads.
"""

import os
import time

import ml_collections
import numpy as np
from absl import logging

from electra_jax.data import shard_writer
from electra_jax.data import shards, sources
from electra_jax.data.any_tokenizer import (AnyTokenizer, load_tokenizer, save_tokenizer,
                                              tokenizer_path)
from electra_jax.data.sentencepiece_tokenizer import train_tokenizer
from electra_jax.data.shards import PreparedData
from electra_jax.errors import DataError
from electra_jax.runtime import fileio

DATA_SUBDIR = "data"  # the prepared data's place in the workdir when data.dir is unset
# ... and for a workdir at a URL: prepared data is read from local disk (array_record files).
LOCAL_DATA_ROOT = os.path.join("~", ".cache", "electra_jax", "prepared")


def data_directory(config: ml_collections.ConfigDict, workdir: str) -> str:
  """data.dir, else the workdir's `data/`; for a workdir at a URL, a local directory named
  after it."""
  if config.data.dir:
    return os.path.abspath(config.data.dir)
  if fileio.is_url(workdir):
    return os.path.join(os.path.expanduser(LOCAL_DATA_ROOT), workdir.replace("://", "/", 1))
  return os.path.abspath(os.path.join(workdir, DATA_SUBDIR))


def prepare(config: ml_collections.ConfigDict, workdir: str) -> PreparedData:
  """The prepared data for `config`: reused when its directory holds it, else prepared there.

  Prepared data made with another tokenizer, other inputs or other data
  settings is refused, never overwritten. The tokenizer is kept with the data
  and copied into the workdir (`tokenizer.model`, or an imported `vocab.txt`).
  Nothing is written before the source has been resolved (a missing corpus
  fails first).
  """
  directory = data_directory(config, workdir)
  settings = shard_writer.Settings.from_config(config)
  inputs = sources.resolve_inputs(config.data.source, settings.read_options)
  manifest = shards.read_json(os.path.join(directory, shards.MANIFEST_FILE))
  if manifest is None:
    tokenizer = _load_or_train_tokenizer(config, workdir, directory, inputs)
    manifest = shard_writer.build(directory, inputs, tokenizer, settings, config.data.source,
                                 config.data.num_workers)
  else:
    tokenizer = _load_tokenizer(directory, config)
    if tokenizer is None:
      raise DataError(f"{directory} holds prepared data but no tokenizer; set --config.data.dir "
                      "to a new directory to prepare the data again")
    shard_writer.check_identity(
        manifest, shard_writer.identity(config.data.source, inputs, tokenizer, settings), directory)
    logging.info("Using the data prepared in %s: %s training examples", directory,
                 f"{manifest['splits']['train']['examples']:,}")
  _keep_with_run(tokenizer, workdir, config)
  return PreparedData(directory=directory, manifest=manifest, tokenizer=tokenizer)


def _load_or_train_tokenizer(config: ml_collections.ConfigDict, workdir: str, directory: str,
                             inputs: list[sources.Input]) -> AnyTokenizer:
  """The data directory's tokenizer (an interrupted preparation), the run's, or a new one.

  A tokenizer put in the workdir before the first run (`tokenizer.model`, or
  the `vocab.txt` of an imported Hugging Face model) is used as it is;
  otherwise one is trained on the corpus. Either way it is saved in the data
  directory, with the shards made with it.
  """
  for place in (directory, workdir):
    tokenizer = _load_tokenizer(place, config)
    if tokenizer is not None:
      logging.info("Loaded the tokenizer %s (sha256 %s)", tokenizer_path(place),
                   tokenizer.sha256[:12])
      break
  else:
    start = time.perf_counter()
    documents = _tokenizer_documents(config, inputs)
    tokenizer = train_tokenizer(documents, config.model.vocab_size, config.data.lowercase,
                                config.data.tokenizer_sentences, config.train.seed)
    logging.info("Trained a tokenizer of %d pieces in %.1f s", tokenizer.vocab_size,
                 time.perf_counter() - start)
  save_tokenizer(tokenizer, directory)
  return tokenizer


def _tokenizer_documents(config: ml_collections.ConfigDict,
                         inputs: list[sources.Input]) -> list[list[str]]:
  """Documents of whole inputs, in a seeded order, until they hold `tokenizer_sentences` lines.

  A sample of inputs rather than of lines, so that a huge corpus is not read
  twice; the tokenizer then samples its lines from these.
  """
  settings = shard_writer.Settings.from_config(config)
  order = np.random.default_rng(config.train.seed).permutation(len(inputs))
  documents, num_lines, report = [], 0, sources.SkipReport()
  for index in order:
    for document in sources.read_documents(inputs[index], settings.read_options, report):
      documents.append(document)
      num_lines += len(document)
    if num_lines >= config.data.tokenizer_sentences:
      break
  if not documents:
    skipped = "; ".join(report.summary()) or "no input has text"
    corpus = f"'{config.data.source}'" if config.data.source else "the built-in corpus"
    raise DataError(f"the corpus {corpus} has no text ({skipped}); give UTF-8 text files with "
                    "one sentence or paragraph per line")
  return documents


def _load_tokenizer(directory: str, config: ml_collections.ConfigDict) -> AnyTokenizer | None:
  """The tokenizer saved in `directory` (None if none), checked against the model's vocabulary."""
  tokenizer = load_tokenizer(directory, config.data.lowercase)
  if tokenizer is not None and tokenizer.vocab_size != config.model.vocab_size:
    path = tokenizer_path(directory)
    raise DataError(f"{path} has {tokenizer.vocab_size} pieces but model.vocab_size="
                    f"{config.model.vocab_size}; set --config.model.vocab_size="
                    f"{tokenizer.vocab_size}, or use a new --workdir and --config.data.dir to "
                    "train a new tokenizer")
  return tokenizer


def _keep_with_run(tokenizer: AnyTokenizer, workdir: str,
                   config: ml_collections.ConfigDict) -> None:
  """Copies the tokenizer into the workdir (export needs it); refuses a different one there."""
  existing = load_tokenizer(workdir, config.data.lowercase)
  if existing is None:
    save_tokenizer(tokenizer, workdir)
  elif existing.sha256 != tokenizer.sha256:
    path = tokenizer_path(workdir)
    raise DataError(f"{path} is not the tokenizer the prepared data was made with; use a new "
                    "--workdir, or delete it to use the data's")
