"""Fine-tuning metrics on cases computed by hand, as GLUE, conlleval and SQuAD define them."""

import math

import numpy as np
import pytest

from electra_jax import metrics


def test_accuracy_and_f1_of_the_positive_class():
  predictions = np.array([1, 1, 0, 0, 1, 0])
  labels = np.array([1, 0, 0, 1, 1, 0])
  assert metrics.accuracy(predictions, labels) == pytest.approx(4 / 6)
  # tp = 2, fp = 1, fn = 1: precision 2/3, recall 2/3.
  assert metrics.f1_binary(predictions, labels) == pytest.approx(2 / 3)
  assert metrics.f1_binary(np.zeros(4), np.array([0, 1, 0, 1])) == 0.0  # no true positive


def test_matthews_correlation_binary_and_degenerate():
  predictions = np.array([1, 1, 0, 0, 1, 0])
  labels = np.array([1, 0, 0, 1, 1, 0])
  # tp 2, tn 2, fp 1, fn 1: (4 - 1) / sqrt(3 * 3 * 3 * 3) = 1/3.
  assert metrics.matthews_corrcoef(predictions, labels) == pytest.approx(1 / 3)
  assert metrics.matthews_corrcoef(labels, labels) == pytest.approx(1.0)
  assert metrics.matthews_corrcoef(1 - labels, labels) == pytest.approx(-1.0)
  assert metrics.matthews_corrcoef(np.ones(6, int), labels) == 0.0  # one class predicted


def test_matthews_correlation_with_three_classes():
  labels = np.array([0, 1, 2, 0, 1, 2])
  predictions = np.array([0, 2, 1, 0, 0, 2])
  # Gorodkin's K-class formula: c = 3 correct of s = 6; true counts (2, 2, 2),
  # predicted (3, 1, 2): (3*6 - (6+2+4)) / sqrt((36 - 14) * (36 - 12)).
  expected = (18 - 12) / math.sqrt(22 * 24)
  assert metrics.matthews_corrcoef(predictions, labels) == pytest.approx(expected)


def test_pearson_and_spearman():
  x = np.array([1.0, 2.0, 3.0, 4.0])
  y = np.array([2.0, 4.0, 5.0, 9.0])
  # Centered: x (-1.5, -.5, .5, 1.5), y (-3, -1, 0, 4): 11 / sqrt(5 * 26).
  assert metrics.pearson(x, y) == pytest.approx(11 / math.sqrt(130))
  assert metrics.spearman(x, y) == pytest.approx(1.0)  # monotone
  assert metrics.spearman(x, -y**3) == pytest.approx(-1.0)
  # Ties share their mean rank: y ranks (1, 2.5, 2.5, 4), Pearson of the ranks.
  ties = np.array([1.0, 3.0, 3.0, 7.0])
  assert metrics.spearman(x, ties) == pytest.approx(4.5 / math.sqrt(5 * 4.5))
  assert metrics.pearson(x, np.full(4, 2.0)) == 0.0  # undefined for a constant: 0


def scores(gold, predicted):
  return metrics.conll_entity_scores(gold, predicted)


def test_conll_entity_f1_counts_whole_entities():
  gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "I-ORG"]]
  # PER right; LOC predicted as ORG; the ORG cut short: 1 correct of 3 predicted, 3 gold.
  predicted = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "I-ORG", "O"]]
  result = scores(gold, predicted)
  assert result["precision"] == pytest.approx(1 / 3)
  assert result["recall"] == pytest.approx(1 / 3)
  assert result["f1"] == pytest.approx(1 / 3)
  assert result["accuracy"] == pytest.approx(5 / 7)


def test_conll_follows_conlleval_on_ill_formed_tags():
  # conlleval starts a chunk at an I- after O (IOB1 style) and at a change of type, and a
  # sentence boundary ends every chunk.
  assert scores([["I-PER", "I-PER"]], [["B-PER", "I-PER"]])["f1"] == 1.0
  assert scores([["B-PER", "I-LOC"]], [["B-PER", "B-LOC"]])["f1"] == 1.0
  two_sentences = scores([["B-PER"], ["I-PER"]], [["B-PER"], ["I-PER"]])
  assert two_sentences["precision"] == 1.0 and two_sentences["recall"] == 1.0
  # An entity predicted one token too long is wrong; so is one with the wrong type.
  assert scores([["B-PER", "O"]], [["B-PER", "I-PER"]])["f1"] == 0.0
  assert scores([["B-PER", "I-PER"]], [["B-LOC", "I-LOC"]])["f1"] == 0.0
  # Types may contain hyphens (split at the first one).
  assert scores([["B-GEO-NAME", "I-GEO-NAME"]], [["B-GEO-NAME", "I-GEO-NAME"]])["f1"] == 1.0
  nothing = scores([["O", "O"]], [["O", "O"]])
  assert (nothing["precision"], nothing["recall"], nothing["f1"]) == (0.0, 0.0, 0.0)


def test_squad_normalization_exact_match_and_f1():
  assert metrics.normalize_answer("The  Denver Broncos!") == "denver broncos"
  assert metrics.normalize_answer("an apple, a pear") == "apple pear"
  assert metrics.squad_exact_match("the Broncos.", "Broncos") == 1.0
  # "denver broncos" vs "broncos team": overlap 1, precision 1/2, recall 1/2.
  assert metrics.squad_f1("Denver Broncos", "Broncos team", version=1) == pytest.approx(0.5)
  # Repeated tokens count as often as both sides have them.
  assert metrics.squad_f1("a b b", "b b c", version=1) == pytest.approx(2 * (2 / 2) * (2 / 3) /
                                                                         ((2 / 2) + (2 / 3)))
  # An empty answer: SQuAD 2.0 scores no-answer against no-answer as right, 1.1 as 0.
  assert metrics.squad_f1("", "", version=2) == 1.0
  assert metrics.squad_f1("", "", version=1) == 0.0
  assert metrics.squad_f1("something", "", version=2) == 0.0


def test_squad_scores_take_the_best_gold_and_split_answerable_questions():
  gold = {"q1": ["Denver Broncos", "Broncos"], "q2": ["Carolina Panthers"], "q3": []}
  predictions = {"q1": "the Broncos", "q2": "Panthers", "q3": ""}
  v2 = metrics.squad_scores(predictions, gold, version=2)
  # q1 exact against "Broncos"; q2 F1 2/3 (precision 1, recall 1/2); q3 right "no answer".
  assert v2["exact_match"] == pytest.approx(2 / 3)
  assert v2["f1"] == pytest.approx((1 + 2 / 3 + 1) / 3)
  assert v2["has_answer_f1"] == pytest.approx((1 + 2 / 3) / 2)
  assert v2["no_answer_exact_match"] == 1.0
  v1 = metrics.squad_scores({"q1": "Broncos"}, {"q1": ["Broncos"], "q2": ["x"]}, version=1)
  assert v1 == {"exact_match": 0.5, "f1": 0.5}  # a question without a prediction scores 0
