"""Token tagging in CoNLL format: CoNLL-2003 named entities, CoNLL-2000 chunks, and the like.

A file has one word per line with its columns separated by whitespace (CoNLL-2003:
`word POS chunk NER`), a blank line between sentences, and `-DOCSTART-` lines
between documents (skipped). The tags are in `--config.tag_column` (default:
the last column). `data_dir` holds train.txt and dev.txt (or valid.txt, or
CoNLL-2003's original eng.train and eng.testa).

Each word is tokenized on its own; the model tags a word at its first token,
and the loss ignores the other tokens. A sentence longer than the sequence
length is cut into pieces that fit, each a row of its own, and put back
together for scoring with conlleval's rules (metrics.conll_entity_scores).
"""

import dataclasses
import os

import ml_collections
import numpy as np
from absl import logging

from electra_jax import metrics as metrics_lib
from electra_jax.data.any_tokenizer import AnyTokenizer
from electra_jax.errors import DataError
from electra_jax.finetune import tasks
from electra_jax.runtime import fileio
from electra_jax.runtime.fileio import atomic_write
from electra_jax.vocabulary import CLS_ID, SEP_ID, UNK_ID

DOCUMENT_START = "-DOCSTART-"
IGNORED = -1  # the target of tokens that are not a word's first
SPLIT_FILES = {"train": ("train.txt", "eng.train"),
               "dev": ("dev.txt", "valid.txt", "eng.testa"),
               "test": ("test.txt", "eng.testb")}
UNTAGGED = ""  # the tag of every word of a file with one column (words alone, to be tagged)


@dataclasses.dataclass(frozen=True)
class Sentence:
  words: list[str]
  tags: list[str]


def read_conll(path: str, tag_column: int) -> list[Sentence]:
  """The sentences of a CoNLL file; one DataError for a file that cannot be used.

  A file of one column holds words alone: their tags are UNTAGGED.
  """
  try:
    with fileio.open_text(path) as f:
      lines = f.read().splitlines()
  except FileNotFoundError:
    raise DataError(f"{path} does not exist") from None
  except UnicodeDecodeError as error:
    raise DataError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
  except OSError as error:
    raise DataError(f"cannot read {path}: {error.strerror or error}") from None
  sentences, words, tags, width = [], [], [], None
  for number, line in enumerate(lines + [""], start=1):
    columns = line.split()
    if not columns or columns[0] == DOCUMENT_START:
      if words:
        sentences.append(Sentence(words, tags))
        words, tags = [], []
      continue
    if width is None:
      width = len(columns)
      if not -width <= tag_column < width:
        raise DataError(f"{path} has {width} columns, so --config.tag_column={tag_column} is "
                        f"not one of them (use 0 to {width - 1}, or -1 for the last)")
    if len(columns) != width:
      raise DataError(f"{path}, line {number}: {len(columns)} columns where the file's first "
                      f"line has {width}; CoNLL files have the same columns on every line")
    words.append(columns[0])
    tags.append(columns[tag_column] if width > 1 else UNTAGGED)
  if not sentences:
    raise DataError(f"{path} has no sentences (a word per line, blank lines between sentences)")
  return sentences


def split_path(data_dir: str, split: str) -> str:
  for name in SPLIT_FILES[split]:
    path = os.path.join(data_dir, name)
    if fileio.exists(path):
      return path
  raise DataError(f"{data_dir} has no {' or '.join(SPLIT_FILES[split])}; --config.data_dir must "
                  "be the folder of the CoNLL files")


# ---------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rows:
  """Encoded sentences: model inputs, and where each word's tag is read from."""

  features: dict[str, np.ndarray]
  sentence: list[int]  # the sentence of each row
  first_token: list[list[int]]  # each row's words: the position of their first token


def encode(sentences: list[Sentence], tokenizer: AnyTokenizer, tag_ids: dict[str, int],
           max_seq_length: int) -> Rows:
  """Rows of `[CLS] tokens [SEP]`, targets at each word's first token, IGNORED elsewhere.

  Tags missing from `tag_ids` (seen only in evaluation data) get IGNORED too.
  """
  flat_words = [word for s in sentences for word in s.words]
  pieces = iter(tokenizer.encode(flat_words))
  room = max_seq_length - 2
  input_ids, targets, row_sentence, first_token = [], [], [], []

  def close(ids: list[int], labels: list[int], firsts: list[int], index: int) -> None:
    row = np.zeros(max_seq_length, np.int32)
    row[:len(ids) + 2] = [CLS_ID, *ids, SEP_ID]
    target = np.full(max_seq_length, IGNORED, np.int32)
    target[firsts] = labels
    input_ids.append(row)
    targets.append(target)
    row_sentence.append(index)
    first_token.append(firsts)

  for index, sentence in enumerate(sentences):
    ids, labels, firsts = [], [], []
    for tag in sentence.tags:
      word_ids = (next(pieces) or [UNK_ID])[:room]  # a word that encodes to nothing is unknown
      if len(ids) + len(word_ids) > room:
        close(ids, labels, firsts, index)
        ids, labels, firsts = [], [], []
      firsts.append(len(ids) + 1)  # after [CLS]
      labels.append(tag_ids.get(tag, IGNORED))
      ids += word_ids
    close(ids, labels, firsts, index)
  features = dict(input_ids=np.stack(input_ids), token_type_ids=np.zeros_like(np.stack(input_ids)),
                  targets=np.stack(targets))
  split_up = len(input_ids) - len(sentences)
  if split_up:
    logging.info("%d sentence pieces beyond max_seq_length %d were given rows of their own",
                 split_up, max_seq_length)
  return Rows(features, row_sentence, first_token)


# ---------------------------------------------------------------------------
# The task
# ---------------------------------------------------------------------------


def training_tags(train: list[Sentence]) -> list[str]:
  """The tags in id order: those of the training file, sorted."""
  tags = sorted({tag for s in train for tag in s.tags})
  if UNTAGGED in tags:
    raise DataError("the CoNLL training file has one column, words without tags; give the "
                    "file with its tag column")
  return tags


def read_training_tags(config: ml_collections.ConfigDict) -> list[str]:
  return training_tags(read_conll(split_path(config.data_dir, "train"), config.tag_column))


def load(config: ml_collections.ConfigDict, tokenizer: AnyTokenizer) -> tasks.TaskData:
  """The training rows and the dev split, encoded; the tags are those of the training file."""
  train = read_conll(split_path(config.data_dir, "train"), config.tag_column)
  dev_path = split_path(config.data_dir, "dev")
  dev = read_conll(dev_path, config.tag_column)
  tag_names = training_tags(train)
  tag_ids = {tag: i for i, tag in enumerate(tag_names)}
  unseen = sorted({tag for s in dev for tag in s.tags} - set(tag_ids))
  if unseen:
    logging.warning("%s has tags that the training file never has: %s; the model cannot "
                    "predict them", dev_path, ", ".join(unseen))
  train_rows = encode(train, tokenizer, tag_ids, config.max_seq_length)
  dev_rows = encode(dev, tokenizer, tag_ids, config.max_seq_length)
  dev_features = {k: v for k, v in dev_rows.features.items() if k != "targets"}
  evaluate = lambda outputs: _evaluate(dev, dev_rows, tag_names, outputs)
  return tasks.TaskData(train_rows.features, (tasks.EvalSet("dev", dev_features, evaluate),),
                        num_outputs=len(tag_names), labels=tuple(tag_names))


def predicted_tags(sentences: list[Sentence], rows: Rows, tag_names: list[str],
                   outputs: np.ndarray) -> list[list[str]]:
  """Each sentence's tags from the predicted tag id of every token [rows, length]."""
  predicted = [[] for _ in sentences]
  for row, (index, firsts) in enumerate(zip(rows.sentence, rows.first_token)):
    predicted[index] += [tag_names[t] for t in np.asarray(outputs[row])[firsts]]
  return predicted


def tagged_text(sentences: list[Sentence], predicted: list[list[str]]) -> str:
  """conlleval's input, `word gold predicted` per line and a blank line after each sentence;
  `word predicted` for words that came without tags."""
  blocks = ["".join(" ".join([w, *([g] if g != UNTAGGED else []), p]) + "\n"
                    for w, g, p in zip(s.words, s.tags, tags))
            for s, tags in zip(sentences, predicted)]
  return "\n".join(blocks)


def _evaluate(sentences: list[Sentence], rows: Rows, tag_names: list[str],
              outputs: np.ndarray):
  """conlleval's scores from the predicted tag id of every token [rows, length]."""
  predicted = predicted_tags(sentences, rows, tag_names, outputs)
  scores = metrics_lib.conll_entity_scores([s.tags for s in sentences], predicted)
  return scores, lambda path: atomic_write(path + ".txt", tagged_text(sentences, predicted))
