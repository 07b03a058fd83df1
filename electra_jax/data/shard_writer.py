"""Preparing a corpus once: inputs to tokenized, packed examples in shards, and a manifest.

Each input (a file, a slice of a TFDS split, the built-in corpus) is read,
tokenized and packed by one worker process into one shard per split, with a
random generator of its own: the shards, and so the order of the examples,
are the same whatever the number of workers. A finished input leaves a small
record in `inputs/NNNNN.json`, so an interrupted preparation resumes with the
inputs that have none. The manifest is written last: a directory with one
holds whole data, described by it (counts, tokens, tokenizer, settings) so
that a run with another tokenizer or other settings refuses it.
"""

import dataclasses
import hashlib
import itertools
import json
import multiprocessing
import os
import time
from typing import Iterable, Iterator

import ml_collections
import numpy as np
import tqdm
from absl import logging

from electra_jax.data import shards, sources
from electra_jax.data.any_tokenizer import AnyTokenizer
from electra_jax.data.packing import ExampleBuilder
from electra_jax.errors import DataError

FORMAT_VERSION = 1
INPUTS_DIR = "inputs"
# Documents tokenized in one call: SentencePiece encodes a list faster than its lines one by one.
_DOCUMENTS_PER_CALL = 256


@dataclasses.dataclass(frozen=True)
class Settings:
  """What the examples depend on besides the inputs and the tokenizer: the config's data fields."""

  max_seq_length: int
  single_segment_prob: float
  short_seq_prob: float
  eval_fraction: float
  min_document_tokens: int
  text_field: str
  tfds_split: str

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "Settings":
    return cls(**{field.name: config.data[field.name] for field in dataclasses.fields(cls)})

  @property
  def read_options(self) -> sources.ReadOptions:
    return sources.ReadOptions(text_field=self.text_field, tfds_split=self.tfds_split)


def identity(source: str, inputs: list[sources.Input], tokenizer: AnyTokenizer,
             settings: Settings) -> dict:
  """What identifies prepared data: shards with another identity are other data."""
  return {"format": FORMAT_VERSION, "source": source,
          "inputs": [[item.name, item.size] for item in inputs],
          "tokenizer_sha256": tokenizer.sha256, "vocab_size": tokenizer.vocab_size,
          "settings": dataclasses.asdict(settings)}


def check_identity(manifest: dict, expected: dict, directory: str) -> None:
  """Refuses prepared data whose identity differs from this run's, naming the difference."""
  differences = [f"data.{name}={manifest['settings'].get(name)!r}, but this run has {value!r}"
                 for name, value in expected["settings"].items()
                 if manifest["settings"].get(name) != value]
  if manifest.get("inputs") != expected["inputs"]:
    differences.append(
        f"{len(manifest.get('inputs', []))} inputs from data.source={manifest.get('source')!r}, "
        f"but this run's data.source={expected['source']!r} gives {len(expected['inputs'])} "
        "(or other ones, or other sizes)")
  if manifest.get("tokenizer_sha256") != expected["tokenizer_sha256"]:
    differences.append("another tokenizer")
  if manifest.get("format") != expected["format"]:
    differences.append(f"format {manifest.get('format')}, but this version reads "
                       f"{expected['format']}")
  if differences:
    raise DataError(f"the data in {directory} was prepared with {differences[0]}; set "
                    "--config.data.dir to a new directory to prepare the data again (or delete "
                    f"{directory})")


def build(directory: str, inputs: list[sources.Input], tokenizer: AnyTokenizer, settings: Settings,
          source: str, num_workers: int) -> dict:
  """Prepares every input without a record in `directory`, then writes and returns the manifest."""
  start = time.perf_counter()
  expected = identity(source, inputs, tokenizer, settings)
  key = hashlib.sha256(json.dumps(expected, sort_keys=True).encode("utf-8")).hexdigest()
  os.makedirs(os.path.join(directory, INPUTS_DIR), exist_ok=True)
  records = _finished_inputs(directory, len(inputs), key)
  todo = [(i, item) for i, item in enumerate(inputs) if i not in records]
  if records:
    logging.info("Resuming the preparation in %s: %d of %d inputs are done", directory,
                 len(records), len(inputs))
  workers = max(1, min(num_workers or _cpu_count(), len(todo)))
  worker_args = (directory, tokenizer, settings, key)
  with tqdm.tqdm(total=sum(item.size for item in inputs),
                 initial=sum(inputs[i].size for i in records), desc="Preparing",
                 unit=_progress_unit(inputs[0]), unit_scale=True,
                 mininterval=1.0, smoothing=0.1) as progress:
    for index, record in _run(todo, worker_args, workers):
      records[index] = record
      progress.update(inputs[index].size)
  manifest = dict(expected, **_totals([records[i] for i in range(len(inputs))]),
                  input_bytes=sum(item.size for item in inputs if not item.tfds_split),
                  seconds=round(time.perf_counter() - start, 1))
  _log_report(manifest, workers)
  _check_nonempty(manifest, source)
  shards.write_json(os.path.join(directory, shards.MANIFEST_FILE), manifest)
  return manifest


def _finished_inputs(directory: str, num_inputs: int, key: str) -> dict[int, dict]:
  records = {}
  for index in range(num_inputs):
    record = shards.read_json(_record_path(directory, index))
    if record is None:
      continue
    if record["identity"] != key:
      raise DataError(f"{directory} holds a preparation interrupted with other settings, another "
                      "tokenizer or other inputs; set --config.data.dir to a new directory (or "
                      f"delete {directory}) to prepare the data again")
    records[index] = record
  return records


def _run(todo: list[tuple[int, sources.Input]], worker_args: tuple,
         workers: int) -> Iterator[tuple[int, dict]]:
  """Prepares the inputs in worker processes (in this one when one worker is enough)."""
  if workers == 1:
    _init_worker(*worker_args)
    yield from map(_prepare_input, todo)
    return
  # spawn, not fork: the parent may run JAX's threads, which a fork would copy mid-flight.
  context = multiprocessing.get_context("spawn")
  with context.Pool(workers, initializer=_init_worker, initargs=worker_args) as pool:
    yield from pool.imap_unordered(_prepare_input, todo)


_worker_args: tuple = ()


def _init_worker(*args) -> None:
  global _worker_args  # pylint: disable=global-statement  # set once per worker process
  _worker_args = args


def _prepare_input(task: tuple[int, sources.Input]) -> tuple[int, dict]:
  """Reads, tokenizes and packs one input into its shards; returns and saves its record."""
  index, item = task
  directory, tokenizer, settings, key = _worker_args
  report = sources.SkipReport()
  counts = {split: {"documents": 0, "tokens": 0} for split in shards.SPLITS}
  builders = {split: ExampleBuilder(settings.max_seq_length, _packing_rng(index, split),
                                    settings.single_segment_prob, settings.short_seq_prob)
              for split in shards.SPLITS}
  writers = {split: shards.ShardWriter(os.path.join(directory, shards.shard_file(split, index)))
             for split in shards.SPLITS}
  try:
    documents = sources.read_documents(item, settings.read_options, report)
    for document, lines in _tokenized(documents, tokenizer):
      num_tokens = sum(len(line) for line in lines)
      if num_tokens < settings.min_document_tokens:
        report.add(sources.SHORT_DOCUMENT, item.name)
        continue
      split = "eval" if _held_out(document, settings.eval_fraction) else "train"
      counts[split]["documents"] += 1
      counts[split]["tokens"] += num_tokens
      for row in builders[split].add_document(lines):
        writers[split].write(row)
  except BaseException:
    for writer in writers.values():
      writer.abort()
    raise
  for split, writer in writers.items():
    counts[split]["examples"] = writer.num_records
    writer.commit()
  record = {"input": item.name, "identity": key, "splits": counts, "skipped": report.to_json()}
  shards.write_json(_record_path(directory, index), record)
  return index, record


def _tokenized(documents: Iterable[list[str]],
               tokenizer: AnyTokenizer) -> Iterator[tuple[list[str], list[list[int]]]]:
  """Each document with its tokenized lines, encoded a few hundred documents per call."""
  documents = iter(documents)
  while chunk := list(itertools.islice(documents, _DOCUMENTS_PER_CALL)):
    encoded = iter(tokenizer.encode([line for document in chunk for line in document]))
    for document in chunk:
      yield document, list(itertools.islice(encoded, len(document)))


def _held_out(document: list[str], eval_fraction: float) -> bool:
  """Whether a document is for evaluation: decided by a hash of its text, not by chance.

  The split is the same whatever the seed, the order of the files or the
  worker that reads them, and copies of a document land on the same side.
  """
  digest = hashlib.blake2b("\n".join(document).encode("utf-8"), digest_size=8).digest()
  return int.from_bytes(digest, "little") < eval_fraction * 2**64


def _packing_rng(input_index: int, split: str) -> np.random.Generator:
  """The packing draws of one input and split: fixed, so that the data is too."""
  return np.random.default_rng((input_index, shards.SPLITS.index(split)))


def _record_path(directory: str, index: int) -> str:
  return os.path.join(directory, INPUTS_DIR, f"{index:05d}.json")


def _totals(records: list[dict]) -> dict:
  splits = {}
  for split in shards.SPLITS:
    counts = [record["splits"][split] for record in records]
    splits[split] = {name: sum(c[name] for c in counts) for name in ("documents", "tokens",
                                                                     "examples")}
    splits[split]["shards"] = [{"file": shards.shard_file(split, index), "examples": c["examples"]}
                               for index, c in enumerate(counts) if c["examples"]]
  skipped = sources.SkipReport()
  for record in records:
    skipped.merge(sources.SkipReport.from_json(record["skipped"]))
  return {"splits": splits, "skipped": skipped.to_json()}


def _log_report(manifest: dict, workers: int) -> None:
  for split, counts in manifest["splits"].items():
    logging.info("%s split: %s documents, %s tokens -> %s examples of %d tokens", split,
                 f"{counts['documents']:,}", f"{counts['tokens']:,}", f"{counts['examples']:,}",
                 manifest["settings"]["max_seq_length"])
  logging.info("Prepared %d inputs with %d worker(s) in %.1f s", len(manifest["inputs"]), workers,
               manifest["seconds"])
  skipped = sources.SkipReport.from_json(manifest["skipped"]).summary()
  for line in skipped:
    logging.warning("Skipped %s", line)
  if not skipped:
    logging.info("Skipped nothing: every file, line and document was used")


def _check_nonempty(manifest: dict, source: str) -> None:
  skipped = sources.SkipReport.from_json(manifest["skipped"]).summary()
  why = f" (skipped: {'; '.join(skipped)})" if skipped else ""
  corpus = f"'{source}'" if source else "the built-in corpus"
  if not manifest["splits"]["train"]["examples"]:
    raise DataError(f"the corpus {corpus} yields no training examples{why}; give UTF-8 text with "
                    "one sentence or paragraph per line")
  if not manifest["splits"]["eval"]["examples"]:
    raise DataError(f"no document of the corpus {corpus} was held out for evaluation{why}; raise "
                    "--config.data.eval_fraction or add documents")


def _progress_unit(item: sources.Input) -> str:
  if item.name == sources.BUILTIN:
    return " inputs"
  return " records" if item.tfds_split else "B"


def _cpu_count() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
