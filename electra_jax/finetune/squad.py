"""Span extraction in SQuAD 1.1 and 2.0 JSON: find the answer to a question in a context.

`data_dir` holds train-v1.1.json and dev-v1.1.json (2.0: train-v2.0.json and
dev-v2.0.json), in the official layout: data -> paragraphs -> context and qas
(id, question, answers with text and answer_start, and for 2.0 is_impossible).

A row is `[CLS] question [SEP] window of the context [SEP]`. A context longer
than the row is read in overlapping windows `doc_stride` tokens apart; each
token's prediction is taken from the window where it has the most context on
both sides (BERT's rule). The model scores every token as the answer's start
and as its end; the answer is the best-scoring valid span, mapped back to the
context's characters through the tokenizer's offsets. For 2.0, `[CLS]` stands
for "no answer": its start + end score against the best span's decides
(`null_score_threshold`). Training rows whose window does not hold the whole
answer, and unanswerable questions, point at [CLS].
"""

import dataclasses
import json
import os

import ml_collections
import numpy as np
from absl import logging

from electra_jax import metrics as metrics_lib
from electra_jax.data.any_tokenizer import AnyTokenizer
from electra_jax.errors import ConfigError, DataError
from electra_jax.finetune import encoding, tasks
from electra_jax.runtime import fileio
from electra_jax.runtime.fileio import atomic_write

FILES = {"squad1": ("train-v1.1.json", "dev-v1.1.json"),
         "squad2": ("train-v2.0.json", "dev-v2.0.json")}


@dataclasses.dataclass(frozen=True)
class Question:
  id: str
  question: str
  context: str
  answers: list[tuple[str, int]]  # (text, character where it starts); empty: no answer


def read_squad(path: str, version: int, labelled: bool = True) -> list[Question]:
  """The questions of a SQuAD file; one DataError for a file that cannot be used.

  Without `labelled` (a file to predict), the questions need no answers.
  """
  try:
    with fileio.open_text(path) as f:
      document = json.load(f)
  except FileNotFoundError:
    raise DataError(f"{path} does not exist; --config.data_dir must be the folder of the SQuAD "
                    "files") from None
  except (OSError, UnicodeDecodeError, ValueError) as error:
    raise DataError(f"cannot read {path} as JSON: {error}") from None
  questions = []
  try:
    for article in document["data"]:
      for paragraph in article["paragraphs"]:
        context = paragraph["context"]
        for qa in paragraph["qas"]:
          answers = [(a["text"], int(a["answer_start"]))
                     for a in (qa["answers"] if labelled else qa.get("answers", []))]
          if labelled and version == 1 and (qa.get("is_impossible") or not answers):
            raise DataError(f"{path}: question {qa['id']} has no answer, which SQuAD 1.1 does "
                            "not allow; for SQuAD 2.0 data use --config.task=squad2")
          questions.append(Question(str(qa["id"]), qa["question"], context,
                                    [] if qa.get("is_impossible") else answers))
  except (KeyError, TypeError) as error:
    raise DataError(f"{path} is not in SQuAD's layout (data -> paragraphs -> context and qas "
                    f"with id, question, answers): missing or wrong {error}") from None
  if not questions:
    raise DataError(f"{path} has no questions")
  return questions


# ---------------------------------------------------------------------------
# Windows over long contexts
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Windows:
  """Encoded rows and, for each, what its positions mean in the context."""

  features: dict[str, np.ndarray]
  question: list[int]  # the question of each row
  # Per row: the context characters [start, end) of each position ((-1, -1) outside the
  # context), and whether the position takes its prediction from this row.
  offsets: list[np.ndarray]
  max_context: list[np.ndarray]


def _window_starts(length: int, room: int, stride: int) -> list[tuple[int, int]]:
  """(start, length) of each window over `length` context tokens; the last reaches the end."""
  windows, start = [], 0
  while True:
    windows.append((start, min(length - start, room)))
    if start + room >= length:
      return windows
    start += min(room, stride)


def _answer_tokens(offsets: list[tuple[int, int]], start_char: int,
                   end_char: int) -> tuple[int, int] | None:
  """The first and last context tokens overlapping characters [start_char, end_char)."""
  covering = [i for i, (start, end) in enumerate(offsets) if start < end_char and end > start_char]
  return (covering[0], covering[-1]) if covering else None


def encode(questions: list[Question], tokenizer: AnyTokenizer, config: ml_collections.ConfigDict,
           training: bool) -> Windows:
  """The rows of every question; with `training`, its answer's token positions as targets."""
  length = config.max_seq_length
  if length - config.max_query_length - 3 < 1:
    raise ConfigError(f"config field 'max_query_length' = {config.max_query_length} leaves no "
                      f"room for the context in 'max_seq_length' = {length}; lower it below "
                      f"{length - 3}")
  question_ids = [ids[:config.max_query_length]
                  for ids in tokenizer.encode([q.question for q in questions])]
  contexts = {}  # questions share their paragraph's context: encode each once
  rows, starts, ends, row_question, row_offsets, row_max_context = [], [], [], [], [], []
  unfound = 0
  for index, (question, q_ids) in enumerate(zip(questions, question_ids)):
    if question.context not in contexts:
      contexts[question.context] = tokenizer.encode_with_offsets(question.context)
    ctx_ids, ctx_offsets = contexts[question.context]
    answer = None
    if training and question.answers:
      text, start_char = question.answers[0]
      answer = _answer_tokens(ctx_offsets, start_char, start_char + len(text))
      if answer is None or question.context[start_char:start_char + len(text)] != text:
        unfound += 1
        continue
    windows = _window_starts(len(ctx_ids), length - len(q_ids) - 3, config.doc_stride)
    first = len(q_ids) + 2  # where the context starts in a row
    for start, size in windows:
      input_ids, types = encoding.pack(q_ids, ctx_ids[start:start + size], length)
      offsets = np.full((length, 2), -1, np.int64)
      offsets[first:first + size] = ctx_offsets[start:start + size]
      max_context = np.zeros(length, bool)
      for position in range(size):
        max_context[first + position] = _is_max_context(windows, start, start + position)
      target = (0, 0)
      if answer is not None and start <= answer[0] and answer[1] < start + size:
        target = (answer[0] - start + first, answer[1] - start + first)
      rows.append((input_ids, types))
      starts.append(target[0])
      ends.append(target[1])
      row_question.append(index)
      row_offsets.append(offsets)
      row_max_context.append(max_context)
  if unfound:
    logging.warning("Skipped %d training question(s) whose answer text is not at its "
                    "answer_start in the context", unfound)
  if not rows:
    raise DataError("no SQuAD question could be encoded (every answer was misplaced)")
  features = dict(input_ids=np.stack([r[0] for r in rows]),
                  token_type_ids=np.stack([r[1] for r in rows]))
  if training:
    features.update(start_positions=np.asarray(starts, np.int32),
                    end_positions=np.asarray(ends, np.int32))
  return Windows(features, row_question, row_offsets, row_max_context)


def _is_max_context(windows: list[tuple[int, int]], start: int, token: int) -> bool:
  """Whether the window at `start` gives `token` the most context of all windows holding it."""
  score = lambda s, n: min(token - s, s + n - 1 - token) + 0.01 * n
  best = max((score(s, n), s) for s, n in windows if s <= token < s + n)
  return best[1] == start


# ---------------------------------------------------------------------------
# Answers from the model's scores
# ---------------------------------------------------------------------------


def predict_answers(questions: list[Question], windows: Windows, start_logits: np.ndarray,
                    end_logits: np.ndarray, config: ml_collections.ConfigDict,
                    version: int) -> tuple[dict[str, str], dict[str, float]]:
  """Each question's answer text ("" for no answer) from its rows' start and end scores, and
  its null odds: the "no answer" score minus the best span's, which SQuAD 2.0's official
  evaluation reads (--na-prob-file) to find the best threshold."""
  best = {}  # question index -> (score, start char, end char)
  null = {}  # question index -> the lowest "no answer" score of its rows
  for row, index in enumerate(windows.question):
    starts, ends = start_logits[row], end_logits[row]
    offsets, max_context = windows.offsets[row], windows.max_context[row]
    null[index] = min(null.get(index, np.inf), starts[0] + ends[0])
    top_starts = np.argsort(starts)[::-1][:config.n_best_size]
    top_ends = np.argsort(ends)[::-1][:config.n_best_size]
    for s in top_starts:
      if offsets[s, 0] < 0 or not max_context[s]:
        continue
      for e in top_ends:
        if offsets[e, 0] < 0 or e < s or e - s + 1 > config.max_answer_length:
          continue
        score = starts[s] + ends[e]
        if score > best.get(index, (-np.inf,))[0]:
          best[index] = (score, offsets[s, 0], offsets[e, 1])
  answers, null_odds = {}, {}
  for index, question in enumerate(questions):
    score, start, end = best.get(index, (-np.inf, 0, 0))
    null_odds[question.id] = float(min(null.get(index, np.inf) - score, np.finfo(np.float32).max))
    no_answer = version == 2 and null_odds[question.id] > config.null_score_threshold
    answers[question.id] = "" if no_answer or score == -np.inf else question.context[start:end]
  return answers, null_odds


def load(config: ml_collections.ConfigDict, tokenizer: AnyTokenizer) -> tasks.TaskData:
  version = 2 if config.task == "squad2" else 1
  train_file, dev_file = (os.path.join(config.data_dir, name) for name in FILES[config.task])
  train = encode(read_squad(train_file, version), tokenizer, config, training=True)
  dev_questions = read_squad(dev_file, version)
  dev = encode(dev_questions, tokenizer, config, training=False)
  gold = {q.id: [text for text, _ in q.answers] for q in dev_questions}

  def evaluate(outputs):
    start_logits, end_logits = (np.asarray(x) for x in outputs)
    answers, _ = predict_answers(dev_questions, dev, start_logits, end_logits, config, version)
    write = lambda path: atomic_write(path + ".json", json.dumps(answers, indent=1))
    return metrics_lib.squad_scores(answers, gold, version), write

  return tasks.TaskData(train.features, (tasks.EvalSet("dev", dev.features, evaluate),),
                        num_outputs=2)
