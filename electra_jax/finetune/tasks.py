"""The fine-tuning tasks by name: what kind of head each needs, its metrics and its recipe.

Readers live with their formats (glue.py, conll.py, squad.py); this module is
only the table that the config, the CLI and the experiment runner look names up in.
"""

import dataclasses
from typing import Any, Callable

import numpy as np

# What the model predicts, and so its head and loss (heads.py).
CLASSIFICATION = "classification"  # one label per example, from [CLS]
REGRESSION = "regression"  # one number per example, from [CLS] (STS-B)
TAGGING = "tagging"  # one label per word (CoNLL)
SPAN = "span"  # an answer's start and end in a context (SQuAD)


@dataclasses.dataclass(frozen=True)
class Task:
  """A task's fixed facts.

  `score` is the metric that picks the best epoch and that ELECTRA's paper
  reports for the task (Spearman for STS-B, Matthews correlation for CoLA,
  accuracy for the other GLUE tasks, F1 for CoNLL and SQuAD).
  """

  name: str
  kind: str
  metrics: tuple[str, ...]
  score: str
  epochs: int  # the paper's: 3, 10 for RTE and STS-B (ELECTRA.md); 2 for SQuAD
  description: str


def _glue(name: str, kind: str, metrics: tuple[str, ...], description: str,
          epochs: int = 3) -> Task:
  score = {"stsb": "spearman", "cola": "matthews_corrcoef"}.get(name, "accuracy")
  return Task(name, kind, metrics, score, epochs, description)


TASKS: dict[str, Task] = {t.name: t for t in (
    _glue("cola", CLASSIFICATION, ("matthews_corrcoef",), "GLUE CoLA: grammatical or not"),
    _glue("sst2", CLASSIFICATION, ("accuracy",), "GLUE SST-2: sentiment of a sentence"),
    _glue("mrpc", CLASSIFICATION, ("accuracy", "f1"), "GLUE MRPC: paraphrase or not"),
    _glue("stsb", REGRESSION, ("pearson", "spearman"),
          "GLUE STS-B: similarity of two sentences, 0 to 5", epochs=10),
    _glue("qqp", CLASSIFICATION, ("accuracy", "f1"), "GLUE QQP: duplicate questions or not"),
    _glue("mnli", CLASSIFICATION, ("accuracy",),
          "GLUE MNLI: entailment, neutral or contradiction (dev matched and mismatched)"),
    _glue("qnli", CLASSIFICATION, ("accuracy",),
          "GLUE QNLI: does the sentence answer the question"),
    _glue("rte", CLASSIFICATION, ("accuracy",), "GLUE RTE: entailment or not", epochs=10),
    _glue("wnli", CLASSIFICATION, ("accuracy",), "GLUE WNLI: entailment or not (Winograd)"),
    Task("conll", TAGGING, ("f1", "precision", "recall", "accuracy"), "f1", 3,
         "token tagging in CoNLL format (CoNLL-2003 NER, CoNLL-2000 chunking): entity F1"),
    Task("squad1", SPAN, ("exact_match", "f1"), "f1", 2, "SQuAD 1.1: answer spans"),
    Task("squad2", SPAN, ("exact_match", "f1", "has_answer_exact_match", "has_answer_f1",
                          "no_answer_exact_match"), "f1", 2,
         "SQuAD 2.0: answer spans or no answer"),
)}

GLUE_TASKS = tuple(name for name, task in TASKS.items() if task.kind in (CLASSIFICATION,
                                                                        REGRESSION))


@dataclasses.dataclass(frozen=True)
class EvalSet:
  """One evaluation split, encoded, with what turns the model's outputs into metrics and files.

  `features` are the model inputs, one row per encoded example (a long SQuAD
  context or CoNLL sentence may take several). `evaluate` takes the model's
  outputs for those rows (heads.py says what they are, per task kind) and
  returns the task's metrics and a function that writes the predictions to a
  path, adding the format's extension (.tsv, .txt, .json).
  """

  name: str  # "dev", or "dev_matched" / "dev_mismatched" for MNLI
  features: dict[str, np.ndarray]
  evaluate: Callable[[Any], tuple[dict[str, float], Callable[[str], None]]]


@dataclasses.dataclass(frozen=True)
class TaskData:
  """A task's training rows (inputs and targets) and its evaluation splits."""

  train: dict[str, np.ndarray]
  evals: tuple[EvalSet, ...]
  num_outputs: int  # classes, tags, 1 for regression, 2 (start, end) for spans
  labels: tuple[str, ...] | None = None  # the class or tag names in id order, where there are
