"""Text sources: where documents come from, as lists of lines.

Everything downstream (tokenizer training, packing) sees only documents, so a
new kind of source is one more case in `iter_documents` and a reader for its
files, and nothing else changes.
"""

import codecs
import glob
import os
from typing import Iterator

from absl import logging

from electra_jax.data.builtin_corpus import builtin_documents
from electra_jax.errors import DataError

# How much of a file is searched for NUL bytes to tell binary from text, as git does.
_BINARY_PROBE_BYTES = 8192


def iter_documents(source: str) -> Iterator[list[str]]:
  """The documents of `source`, each a list of non-empty, stripped lines.

  `source` is "" for the built-in corpus, else a comma-separated list of paths
  or globs of plain text files: one sentence or paragraph per line, a blank line
  between documents. Paths are resolved now, so a typo fails before any work;
  the files are read as the documents are consumed.
  """
  if not source:
    return iter(builtin_documents())
  return _text_file_documents(_resolve_paths(source), source)


def _resolve_paths(source: str) -> list[str]:
  """The files `source` names, in order, each once."""
  paths = []
  for pattern in (p.strip() for p in source.split(",")):
    if not pattern:
      continue
    if os.path.isfile(pattern):  # a literal name may contain glob characters such as [
      paths.append(pattern)
      continue
    matches = sorted(p for p in glob.glob(os.path.expanduser(pattern), recursive=True)
                     if not os.path.isdir(p))
    if not matches:
      fix = (f"it is a directory; name its files, e.g. '{os.path.join(pattern, '*.txt')}'"
             if os.path.isdir(pattern) else "check the path in --config.data.source")
      raise DataError(f"no file matches '{pattern}': {fix}")
    paths.extend(matches)
  if not paths:
    raise DataError(f"--config.data.source='{source}' names no files; give paths or globs of "
                    "text files, or leave it empty for the built-in corpus")
  return list(dict.fromkeys(paths))


def _text_file_documents(paths: list[str], source: str) -> Iterator[list[str]]:
  has_text = False
  for path in paths:
    for document in _read_text_file(path):
      has_text = True
      yield document
  if not has_text:
    raise DataError(f"the corpus '{source}' has no text: its files are empty, binary or not "
                    "UTF-8; give UTF-8 text files with one sentence per line")


def _read_text_file(path: str) -> Iterator[list[str]]:
  """Documents of one text file, decoded line by line.

  A few bad bytes cost their line, not the file: real corpora often have some.
  A file with NUL bytes is not text (or is UTF-16) and is skipped whole.
  """
  undecodable = 0
  try:
    with open(path, "rb") as f:
      head = f.read(_BINARY_PROBE_BYTES)
      if b"\0" in head:
        logging.warning("Skipping %s: it looks binary (it has NUL bytes); if it is UTF-16 text, "
                        "convert it to UTF-8", path)
        return
      f.seek(len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0)
      document = []
      for raw_line in f:
        try:
          line = raw_line.decode("utf-8").strip()
        except UnicodeDecodeError:
          undecodable += 1
          continue
        if line:
          document.append(line)
        elif document:
          yield document
          document = []
      if document:
        yield document
  except OSError as error:
    raise DataError(f"cannot read {path}: {error.strerror or error}; check that it exists and "
                    "is readable") from None
  if undecodable:
    logging.warning("Skipped %d line(s) of %s that are not valid UTF-8", undecodable, path)
