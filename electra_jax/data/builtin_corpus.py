"""The built-in corpus: English prose that every CPython install carries.

`configs/tiny.py` and the tests need text that is always there and needs no
network. Python ships two kinds: the language reference topics behind `help()`
(`pydoc_data`) and the docstrings of its standard library. Together they are
about 2 MB, enough to train a small tokenizer and watch the losses fall.
"""

import ast
import itertools
import os
import re
import sysconfig
import warnings
from typing import Iterable, Iterator

from electra_jax.errors import DataError

# Third-party packages, tests and the IDLE editor: not the library's own prose.
_SKIPPED_DIRECTORIES = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__"})
_DOCUMENTED_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def builtin_documents() -> list[list[str]]:
  """Each `help()` topic, then each stdlib module's docstrings, as one document.

  Modules are read with `ast`, never imported: importing runs their code, and
  some (antigravity, this) act on import. Whatever this install lacks is
  skipped; only a corpus with nothing at all is an error.
  """
  documents = itertools.chain(_topic_documents(), _stdlib_documents())
  nonempty = [document for document in documents if document]
  if not nonempty:
    raise DataError("the built-in corpus is empty: this Python install has neither pydoc_data "
                    "nor the standard library's sources; set --config.data.source to text files")
  return nonempty


def _topic_documents() -> Iterator[list[str]]:
  try:
    from pydoc_data.topics import topics
  except ImportError:  # some distributions package the documentation separately
    return
  for name in sorted(topics):
    yield _paragraph_lines([topics[name]])


def _stdlib_documents() -> Iterator[list[str]]:
  root = sysconfig.get_paths().get("stdlib", "")
  with warnings.catch_warnings():  # e.g. SyntaxWarning from old escape sequences
    warnings.simplefilter("ignore")
    for path in _module_paths(root):
      yield _paragraph_lines(_docstrings(path))


def _module_paths(root: str) -> list[str]:
  """The stdlib's `.py` files, sorted so that the corpus has a fixed order."""
  paths = []
  for directory, subdirectories, files in os.walk(root):
    subdirectories[:] = [d for d in subdirectories if d not in _SKIPPED_DIRECTORIES]
    paths.extend(os.path.join(directory, f) for f in files if f.endswith(".py"))
  return sorted(paths)


def _docstrings(path: str) -> list[str]:
  """The module's docstrings in reading order: a class's text before its methods'."""
  try:
    with open(path, "rb") as f:
      tree = ast.parse(f.read(), filename=path)
  except (OSError, SyntaxError, ValueError):  # unreadable, or not this Python's syntax
    return []
  docstrings, pending = [], [tree]
  while pending:
    node = pending.pop()
    if isinstance(node, _DOCUMENTED_NODES) and (docstring := ast.get_docstring(node)):
      docstrings.append(docstring)
    pending.extend(reversed(list(ast.iter_child_nodes(node))))
  return docstrings


def _paragraph_lines(texts: Iterable[str]) -> list[str]:
  """One line per paragraph, without decoration lines.

  Docstrings and topics wrap prose at ~72 columns, and a wrapped line is not a
  sentence. Lines with no letter or digit are reST underlines and table rules.
  """
  lines = []
  for text in texts:
    for paragraph in _PARAGRAPH_BREAK.split(text):
      words = [line.strip() for line in paragraph.splitlines() if _has_word(line)]
      if words:
        lines.append(" ".join(words))
  return lines


def _has_word(line: str) -> bool:
  return any(character.isalnum() for character in line)
