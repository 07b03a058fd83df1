"""Evaluation metrics, computed as the benchmarks' official scripts compute them.

Pre-training: the discriminator's ROC AUC over the held-out tokens.

GLUE (scikit-learn and scipy in GLUE's own evaluation): accuracy, F1 of the
positive class, Matthews correlation, Pearson and Spearman correlation.
CoNLL (the `conlleval` Perl script): entity-level precision, recall and F1,
where an entity counts as correct only when its type, start and end all match.
SQuAD (`evaluate-v1.1.py`, `evaluate-v2.0.py`): exact match and token F1 after
normalizing case, punctuation, articles and whitespace, the best over the gold
answers. Every score is a fraction in [0, 1] (the scripts print x100).
"""

import collections
import re
import string
from typing import Sequence

import numpy as np


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
  """Area under the ROC curve (the Mann-Whitney statistic, ties counted as half).

  NaN when only one class is present, since AUC is undefined then.
  """
  scores, labels = np.asarray(scores, np.float64).ravel(), np.asarray(labels).ravel() > 0
  positives, negatives = labels.sum(), (~labels).sum()
  if positives == 0 or negatives == 0:
    return float("nan")
  ranks = average_ranks(scores)
  return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def average_ranks(values: np.ndarray) -> np.ndarray:
  """The 1-based rank of each value; tied values share the mean of their ranks."""
  _, inverse, tie_counts = np.unique(np.asarray(values).ravel(), return_inverse=True,
                                     return_counts=True)
  first_rank = np.cumsum(tie_counts) - tie_counts + 1
  return (first_rank + (tie_counts - 1) / 2.0)[inverse]


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
  return float(np.mean(np.asarray(predictions) == np.asarray(labels)))


def f1_binary(predictions: np.ndarray, labels: np.ndarray) -> float:
  """F1 of class 1; 0 when there is no true positive (scikit-learn's zero_division=0)."""
  predictions, labels = np.asarray(predictions) == 1, np.asarray(labels) == 1
  true_positives = np.sum(predictions & labels)
  if true_positives == 0:
    return 0.0
  return float(2 * true_positives / (predictions.sum() + labels.sum()))


def matthews_corrcoef(predictions: np.ndarray, labels: np.ndarray) -> float:
  """Matthews correlation (CoLA's metric), for any number of classes.

  0 when it is undefined (every prediction, or every label, one class), as in
  scikit-learn.
  """
  classes, encoded = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
  labels, predictions = np.split(encoded, [len(labels)])
  confusion = np.zeros((len(classes), len(classes)), np.float64)
  np.add.at(confusion, (labels, predictions), 1)
  true_counts, predicted_counts = confusion.sum(axis=1), confusion.sum(axis=0)
  total, correct = confusion.sum(), np.trace(confusion)
  numerator = correct * total - predicted_counts @ true_counts
  denominator = np.sqrt((total**2 - predicted_counts @ predicted_counts) *
                        (total**2 - true_counts @ true_counts))
  return float(numerator / denominator) if denominator else 0.0


def pearson(x: np.ndarray, y: np.ndarray) -> float:
  """Pearson correlation; 0 when one side is constant (undefined there)."""
  x, y = (np.asarray(v, np.float64) - np.mean(v) for v in (x, y))
  denominator = np.sqrt((x @ x) * (y @ y))
  return float(x @ y / denominator) if denominator else 0.0


def spearman(x: np.ndarray, y: np.ndarray) -> float:
  """Spearman correlation: Pearson's of the ranks, ties given their mean rank (as scipy)."""
  return pearson(average_ranks(x), average_ranks(y))


# ---------------------------------------------------------------------------
# CoNLL: conlleval's chunk rules
# ---------------------------------------------------------------------------

_OUTSIDE = ("O", "")


def _split_tag(tag: str) -> tuple[str, str]:
  """"B-PER" -> ("B", "PER"), split at the first hyphen; "O" -> ("O", "")."""
  prefix, hyphen, kind = tag.partition("-")
  return (prefix, kind) if hyphen else (tag, "")


# (previous tag, tag) pairs between which conlleval ends or starts a chunk, for the IOB1,
# IOB2 and IOE schemes; a change of type does too, and "[" / "]" are one-token chunks.
_ENDS = {("B", "B"), ("B", "O"), ("I", "B"), ("I", "O"), ("E", "E"), ("E", "I"), ("E", "O")}
_STARTS = {("B", "B"), ("I", "B"), ("O", "B"), ("O", "I"), ("E", "E"), ("E", "I"), ("O", "E")}


def _chunk_ends(previous: tuple[str, str], current: tuple[str, str]) -> bool:
  """Whether a chunk ended between the previous tag and this one."""
  (prev_tag, prev_type), (tag, kind) = previous, current
  return ((prev_tag, tag) in _ENDS or (prev_tag not in ("O", ".") and prev_type != kind) or
          prev_tag in ("[", "]"))


def _chunk_starts(previous: tuple[str, str], current: tuple[str, str]) -> bool:
  """Whether a chunk started between the previous tag and this one."""
  (prev_tag, prev_type), (tag, kind) = previous, current
  return ((prev_tag, tag) in _STARTS or (tag not in ("O", ".") and prev_type != kind) or
          tag in ("[", "]"))


def conll_entity_scores(gold: Sequence[Sequence[str]],
                        predicted: Sequence[Sequence[str]]) -> dict[str, float]:
  """conlleval's overall precision, recall, F1 and tag accuracy over sentences of tags.

  A chunk is correct when gold and prediction start it at the same token with
  the same type and end it at the same token; a sentence boundary ends every
  chunk. Precision is 0 without predicted chunks, recall 0 without gold ones.
  """
  correct_chunks = gold_chunks = predicted_chunks = correct_tags = tokens = 0
  in_correct = False
  last_gold = last_predicted = _OUTSIDE
  for gold_tags, predicted_tags in zip(gold, predicted, strict=True):
    if len(gold_tags) != len(predicted_tags):
      raise ValueError(f"a sentence of {len(gold_tags)} gold tags has {len(predicted_tags)} "
                       "predicted ones")
    # Each sentence is followed by a boundary, where both sides are outside any chunk.
    stream = [(_split_tag(g), _split_tag(p), True) for g, p in zip(gold_tags, predicted_tags)]
    for g, p, is_token in stream + [(_OUTSIDE, _OUTSIDE, False)]:
      if in_correct:
        gold_end, predicted_end = _chunk_ends(last_gold, g), _chunk_ends(last_predicted, p)
        if gold_end and predicted_end and last_gold[1] == last_predicted[1]:
          in_correct = False
          correct_chunks += 1
        elif gold_end != predicted_end or g[1] != p[1]:
          in_correct = False
      gold_start, predicted_start = _chunk_starts(last_gold, g), _chunk_starts(last_predicted, p)
      if gold_start and predicted_start and g[1] == p[1]:
        in_correct = True
      gold_chunks += gold_start
      predicted_chunks += predicted_start
      if is_token:
        correct_tags += g == p
        tokens += 1
      last_gold, last_predicted = g, p
  correct_chunks += in_correct
  precision = correct_chunks / predicted_chunks if predicted_chunks else 0.0
  recall = correct_chunks / gold_chunks if gold_chunks else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return dict(precision=precision, recall=recall, f1=f1,
              accuracy=correct_tags / tokens if tokens else 0.0)


# ---------------------------------------------------------------------------
# SQuAD
# ---------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
  """Lower case, drop ASCII punctuation and the articles a/an/the, collapse whitespace."""
  text = "".join(char for char in text.lower() if char not in _PUNCTUATION)
  return " ".join(_ARTICLES.sub(" ", text).split())


def squad_exact_match(prediction: str, gold: str) -> float:
  return float(normalize_answer(prediction) == normalize_answer(gold))


def squad_f1(prediction: str, gold: str, version: int) -> float:
  """Token F1 of the normalized answers.

  SQuAD 2.0 scores an empty answer against an empty one as 1 (a correct "no
  answer"); 1.1's script has no such case and scores it 0.
  """
  predicted_tokens = normalize_answer(prediction).split()
  gold_tokens = normalize_answer(gold).split()
  if version == 2 and (not predicted_tokens or not gold_tokens):
    return float(predicted_tokens == gold_tokens)
  common = collections.Counter(predicted_tokens) & collections.Counter(gold_tokens)
  overlap = sum(common.values())
  if overlap == 0:
    return 0.0
  precision, recall = overlap / len(predicted_tokens), overlap / len(gold_tokens)
  return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: dict[str, str], gold_answers: dict[str, list[str]],
                 version: int) -> dict[str, float]:
  """Exact match and F1 over every question of `gold_answers` (question id -> answer texts).

  A question without a prediction scores 0. For 2.0, answers that normalize
  to nothing are dropped and a question with none is unanswerable (gold ""),
  and the scores over answerable and unanswerable questions come too.
  """
  exact, f1 = {}, {}
  answerable = {}
  for question_id, answers in gold_answers.items():
    if version == 2:
      answers = [a for a in answers if normalize_answer(a)] or [""]
    answerable[question_id] = answers != [""]
    if question_id not in predictions:
      exact[question_id] = f1[question_id] = 0.0
      continue
    prediction = predictions[question_id]
    exact[question_id] = max(squad_exact_match(prediction, a) for a in answers)
    f1[question_id] = max(squad_f1(prediction, a, version) for a in answers)
  mean = lambda scores, ids: float(np.mean([scores[i] for i in ids])) if ids else 0.0
  every = list(gold_answers)
  result = dict(exact_match=mean(exact, every), f1=mean(f1, every))
  if version == 2:
    has_answer = [i for i in every if answerable[i]]
    no_answer = [i for i in every if not answerable[i]]
    result.update(has_answer_exact_match=mean(exact, has_answer),
                  has_answer_f1=mean(f1, has_answer), no_answer_exact_match=mean(exact, no_answer))
  return result
