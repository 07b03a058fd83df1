"""Text sources: where documents come from, as lists of lines.

`--config.data.source` names the corpus; `resolve_inputs` turns it into
*inputs*, the units of reading work that one worker process reads from start
to end (a file, a slice of a TFDS split, the built-in corpus), and
`read_documents` reads one input. Everything downstream sees only documents,
so a new kind of source is one more case in both and nothing else changes.

Files are recognised from their content, not their names: gzip by its magic
bytes, parquet and arrow (Hugging Face datasets' files) by theirs,
WikiExtractor output by a first line `<doc ...>`, JSON lines by a first line
that is a JSON object; anything else is plain text (one sentence or paragraph
per line, a blank line between documents). A directory that
`datasets.Dataset.save_to_disk` wrote stands for its arrow files, and
`hf:NAME` for a Hugging Face dataset's (hf_datasets_source.py).

Bad input never stops a run and is never dropped silently: each skipped file,
line or document is counted in a `SkipReport` under its reason, with the
files it came from.
"""

import codecs
import collections
import dataclasses
import functools
import contextlib
import gzip
import itertools
import json
import os
from typing import BinaryIO, Iterable, Iterator

from electra_jax.data import hf_datasets_source, tfds_source
from electra_jax.data.builtin_corpus import builtin_documents
from electra_jax.errors import DataError
from electra_jax.runtime import fileio

BUILTIN = "builtin"
TFDS_PREFIX = "tfds:"

# How much of a file is searched for NUL bytes to tell binary from text, as git does.
_BINARY_PROBE_BYTES = 8192
# A longer line is no sentence or paragraph (minified data, a dump of binary
# as text) and would hold the whole of it in memory: it is skipped and counted.
MAX_LINE_BYTES = 8 << 20
_GZIP_MAGIC = b"\x1f\x8b"

# Reasons for skipping input, as the end-of-preparation report words them.
EMPTY_FILE = "empty files"
BINARY_FILE = "binary files"
UNDECODABLE_LINE = "lines that are not UTF-8"
LONG_LINE = f"lines over {MAX_LINE_BYTES >> 20} MiB"
BAD_JSON = "JSON lines that do not parse"
NO_TEXT_FIELD = "JSON lines without the text field"
OUTSIDE_DOC = "lines outside <doc> blocks"
EMPTY_DOCUMENT = "documents without text"
SHORT_DOCUMENT = "documents shorter than data.min_document_tokens"


@dataclasses.dataclass(frozen=True)
class Input:
  """One unit of reading work: read by one worker, its examples written to one shard per split.

  name: a file path, "builtin", or "tfds:DATASET SPLIT" ("tfds:c4/en train[0:50000]").
  size: its weight on the progress bar: bytes for files, records for TFDS.
  tfds_split: for TFDS inputs, the slice of the split this input reads.
  """

  name: str
  size: int
  tfds_split: str = ""


@dataclasses.dataclass(frozen=True)
class ReadOptions:
  """How inputs are read: the config's data fields that concern reading."""

  text_field: str = "text"
  tfds_split: str = "train"


@dataclasses.dataclass
class SkipReport:
  """What was skipped, by reason: how many, and from which inputs."""

  counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  inputs: dict[str, list[str]] = dataclasses.field(default_factory=dict)

  def add(self, reason: str, input_name: str, count: int = 1) -> None:
    self._add(reason, [input_name], count)

  def merge(self, other: "SkipReport") -> None:
    for reason, count in other.counts.items():
      self._add(reason, other.inputs[reason], count)

  def _add(self, reason: str, input_names: list[str], count: int) -> None:
    if count:
      self.counts[reason] += count
      names = self.inputs.setdefault(reason, [])
      names.extend(name for name in input_names if name not in names)

  def to_json(self) -> dict:
    return {reason: {"count": self.counts[reason], "inputs": self.inputs[reason]}
            for reason in sorted(self.counts)}

  @classmethod
  def from_json(cls, value: dict) -> "SkipReport":
    report = cls()
    for reason, entry in value.items():
      report.counts[reason] = entry["count"]
      report.inputs[reason] = list(entry["inputs"])
    return report

  def summary(self, max_names: int = 3) -> list[str]:
    """One line per reason, naming a few of the inputs."""
    lines = []
    for reason in sorted(self.counts):
      names = self.inputs[reason]
      shown = ", ".join(names[:max_names]) + (f" and {len(names) - max_names} more"
                                               if len(names) > max_names else "")
      lines.append(f"{self.counts[reason]:,} {reason} (in {shown})")
    return lines


def resolve_inputs(source: str, options: ReadOptions) -> list[Input]:
  """The inputs of `source`, in a fixed order: the order of the prepared examples.

  `source` is "" or "builtin" for the built-in corpus, `tfds:NAME` for a TFDS
  dataset, `hf:NAME` for a Hugging Face dataset, else a comma-separated list of
  paths or globs (saved Hugging Face datasets among them). Paths are resolved
  now, so that a typo fails before any work.
  """
  if source in ("", BUILTIN):
    return [Input(BUILTIN, 1)]
  if source.startswith(hf_datasets_source.PREFIX):
    files = hf_datasets_source.named_dataset_files(source[len(hf_datasets_source.PREFIX):],
                                                   options.tfds_split)
    return [Input(path, fileio.size(path)) for path in files]
  if source.startswith(TFDS_PREFIX):
    dataset = source[len(TFDS_PREFIX):]
    return [Input(f"{source} {split}", size, split)
            for split, size in tfds_source.split_slices(dataset, options.tfds_split)]
  return [Input(path, fileio.size(path)) for path in _resolve_paths(source, options)]


def read_documents(item: Input, options: ReadOptions, report: SkipReport) -> Iterator[list[str]]:
  """The documents of one input, each a list of non-empty, stripped lines."""
  if item.name == BUILTIN:
    return iter(_builtin_documents())
  if item.tfds_split:
    dataset = item.name[len(TFDS_PREFIX):].split(" ")[0]
    texts = tfds_source.read_texts(dataset, item.tfds_split, options.text_field)
    return _text_documents(texts, item.name, report)
  return _file_documents(item.name, options, report)


@functools.cache
def _builtin_documents() -> list[list[str]]:
  return builtin_documents()  # read once per process: the tokenizer and the packing both use it


def _resolve_paths(source: str, options: ReadOptions) -> list[str]:
  """The files `source` names, in order, each once."""
  paths = []
  for pattern in (p.strip() for p in source.split(",")):
    if not pattern:
      continue
    if fileio.is_file(pattern):  # a literal name may contain glob characters such as [
      paths.append(pattern)
      continue
    if fileio.is_dir(pattern) and hf_datasets_source.is_saved_dataset(pattern):
      paths.extend(hf_datasets_source.saved_dataset_files(pattern, options.tfds_split))
      continue
    matches = fileio.glob_files(pattern)
    if not matches:
      fix = (f"it is a directory; name its files, e.g. '{os.path.join(pattern, '*')}'"
             if fileio.is_dir(pattern) else "check the path in --config.data.source")
      raise DataError(f"no file matches '{pattern}': {fix}")
    paths.extend(matches)
  if not paths:
    raise DataError(f"--config.data.source='{source}' names no files; give paths or globs of "
                    "text files, 'tfds:NAME', 'hf:NAME', or leave it empty for the built-in "
                    "corpus")
  return list(dict.fromkeys(paths))


def _file_documents(path: str, options: ReadOptions, report: SkipReport) -> Iterator[list[str]]:
  try:
    with fileio.open_binary(path) as f:
      columnar = hf_datasets_source.columnar_kind(f.read(hf_datasets_source.MAGIC_BYTES))
    if columnar:
      yield from _text_documents(
          hf_datasets_source.read_texts(path, columnar, options.text_field), path, report)
      return
    with _open(path) as f:
      if b"\0" in f.peek(_BINARY_PROBE_BYTES)[:_BINARY_PROBE_BYTES]:  # not text, or UTF-16
        report.add(BINARY_FILE, path)
        return
      lines = _decoded_lines(f, path, report)
      first = next((line for line in lines if line), None)
      if first is None:
        report.add(EMPTY_FILE, path)
        return
      lines = itertools.chain([first], lines)
      if _opens_doc(first):
        yield from _wikiextractor_documents(lines, path, report)
      elif _json_object(first) is not None:
        yield from _json_documents(lines, path, options.text_field, report)
      else:
        yield from _plain_documents(lines)
  except (OSError, EOFError, gzip.BadGzipFile) as error:
    detail = getattr(error, "strerror", None) or error
    raise DataError(f"cannot read {path}: {detail}; check that it exists, is readable and, "
                    "if gzip, is complete") from None


@contextlib.contextmanager
def _open(path: str) -> Iterator[BinaryIO]:
  """The file's bytes, decompressed when it is gzip (known by its magic bytes)."""
  with fileio.open_binary(path) as raw:
    if raw.peek(len(_GZIP_MAGIC))[:len(_GZIP_MAGIC)] != _GZIP_MAGIC:
      yield raw
      return
    with gzip.GzipFile(fileobj=raw, mode="rb") as decompressed:
      yield decompressed


def _decoded_lines(f: BinaryIO, path: str, report: SkipReport) -> Iterator[str]:
  """The file's lines, stripped ("" for a blank one); bad lines are counted, not yielded.

  A few bad bytes cost their line, not the file: real corpora often have some.
  """
  if f.peek(len(codecs.BOM_UTF8)).startswith(codecs.BOM_UTF8):
    f.read(len(codecs.BOM_UTF8))
  while raw_line := f.readline(MAX_LINE_BYTES + 1):
    if len(raw_line) > MAX_LINE_BYTES:
      while raw_line and not raw_line.endswith(b"\n"):  # skip the rest of it
        raw_line = f.readline(MAX_LINE_BYTES)
      report.add(LONG_LINE, path)
      continue
    try:
      yield raw_line.decode("utf-8").strip()
    except UnicodeDecodeError:
      report.add(UNDECODABLE_LINE, path)


def _plain_documents(lines: Iterable[str]) -> Iterator[list[str]]:
  document = []
  for line in lines:
    if line:
      document.append(line)
    elif document:
      yield document
      document = []
  if document:
    yield document


def _wikiextractor_documents(lines: Iterable[str], path: str,
                             report: SkipReport) -> Iterator[list[str]]:
  """`<doc ...>` blocks: a title line, then the article's paragraphs, then `</doc>`.

  The title is left out: it repeats the `title=` attribute and is no sentence.
  Redirects and stubs have a title and nothing else; they are counted.
  """
  document, title_seen, inside = [], False, False
  for line in lines:
    if _opens_doc(line):
      document, title_seen, inside = [], False, True
    elif line == "</doc>":
      if document:
        yield document
      else:
        report.add(EMPTY_DOCUMENT, path)
      inside = False
    elif not line:
      continue
    elif not inside:
      report.add(OUTSIDE_DOC, path)
    elif not title_seen:
      title_seen = True
    else:
      document.append(line)
  if inside:  # a file cut off inside its last block
    if document:
      yield document
    else:
      report.add(EMPTY_DOCUMENT, path)


def _opens_doc(line: str) -> bool:
  return line.startswith("<doc ") or line == "<doc>"


def _json_documents(lines: Iterable[str], path: str, text_field: str,
                    report: SkipReport) -> Iterator[list[str]]:
  """One document per JSON object: the lines of its `text_field` string."""
  for line in lines:
    if not line:
      continue
    record = _json_object(line)
    if record is None:
      report.add(BAD_JSON, path)
    elif not isinstance(record.get(text_field), str):
      report.add(NO_TEXT_FIELD, path)
    else:
      yield from _text_documents([record[text_field]], path, report)


def _text_documents(texts: Iterable[str], name: str, report: SkipReport) -> Iterator[list[str]]:
  """One document per text: its non-empty lines."""
  for text in texts:
    document = [line for line in (raw.strip() for raw in text.splitlines()) if line]
    if document:
      yield document
    else:
      report.add(EMPTY_DOCUMENT, name)


def _json_object(line: str) -> dict | None:
  if not line.startswith("{"):
    return None
  try:
    value = json.loads(line)
  except ValueError:
    return None
  return value if isinstance(value, dict) else None
