"""The probes: each task's data read once, then any encoder scored on it in seconds.

  stsb_cosine_spearman   zero-shot: Spearman of the cosine of the two sentences' mean vectors
  stsb_ridge_spearman    a ridge regression on [|u - v|, u * v] trained on STS-B train
  sst2_ridge_accuracy    a ridge classifier on the mean vector, trained on SST-2 train
  conll_ridge_f1         a ridge classifier on each word's first token, conlleval's entity F1

Each task trains its head on at most `max_examples` training examples (drawn
once with the seed, the same for every encoder) and scores the whole dev set.
A task whose files are not there is skipped, with one line saying so.
"""

import dataclasses
import os

import numpy as np
from absl import logging

from electra_jax import metrics
from electra_jax.convert.pretrained import Discriminator
from electra_jax.errors import DataError
from electra_jax.finetune import conll, encoding, glue
from electra_jax.probes import features, ridge

TASKS = ("stsb", "sst2", "conll")


@dataclasses.dataclass(frozen=True)
class ProbeData:
  """The probes' texts: GLUE examples of STS-B and SST-2, CoNLL sentences (None where absent)."""

  stsb: tuple[glue.Examples, glue.Examples] | None
  sst2: tuple[glue.Examples, glue.Examples] | None
  conll: tuple[list[conll.Sentence], list[conll.Sentence]] | None
  max_seq_length: int


def _sample(count: int, limit: int, seed: int) -> np.ndarray:
  return np.sort(np.random.default_rng(seed).permutation(count)[:limit])


def _glue_splits(glue_dir: str, task: str, limit: int, seed: int):
  folder = glue.FORMATS[task].folder
  paths = [os.path.join(glue_dir, folder, f"{split}.tsv") for split in ("train", "dev")]
  if not glue_dir or not all(os.path.exists(path) for path in paths):
    logging.info("Probe %s skipped: no %s/train.tsv and dev.tsv in --glue_dir %r", task, folder,
                 glue_dir)
    return None
  train, dev = (glue.read_tsv(path, task) for path in paths)
  keep = _sample(len(train.first), limit, seed)
  train = glue.Examples([train.ids[i] for i in keep], [train.first[i] for i in keep],
                        [train.second[i] for i in keep] if train.second else None,
                        train.targets[keep])
  return train, dev


def _conll_splits(conll_dir: str, limit: int, seed: int):
  try:
    if not conll_dir:
      raise DataError("no --conll_dir")
    train, dev = (conll.read_conll(conll.split_path(conll_dir, split), -1)
                  for split in ("train", "dev"))
  except DataError:
    logging.info("Probe conll skipped: no CoNLL train and dev files in --conll_dir %r", conll_dir)
    return None
  return [train[i] for i in _sample(len(train), limit, seed)], dev


def load(glue_dir: str, conll_dir: str, max_examples: int = 2000, max_seq_length: int = 64,
         seed: int = 0) -> ProbeData:
  """The probes' data from the GLUE root and the CoNLL folder; what is absent is skipped."""
  return ProbeData(_glue_splits(glue_dir, "stsb", max_examples, seed),
                   _glue_splits(glue_dir, "sst2", max_examples, seed),
                   _conll_splits(conll_dir, max_examples, seed), max_seq_length)


def run(discriminator: Discriminator, data: ProbeData) -> dict[str, float]:
  """Every probe whose data is there, on the frozen `discriminator`."""
  encode = features.encoder(discriminator)
  tokenizer, length = discriminator.tokenizer, data.max_seq_length
  vectors = lambda texts, name: features.mean_pooled(
      encode(rows := encoding.encode_texts(tokenizer, texts, None, length, name)),
      rows["input_ids"])
  scores = {}
  if data.stsb:
    (train_u, train_v), (dev_u, dev_v) = ((vectors(split.first, "stsb"),
                                           vectors(split.second, "stsb")) for split in data.stsb)
    cosine = (dev_u * dev_v).sum(1) / np.linalg.norm(dev_u, axis=1) / np.linalg.norm(dev_v, axis=1)
    scores["stsb_cosine_spearman"] = metrics.spearman(cosine, data.stsb[1].targets)
    pair = lambda u, v: np.concatenate([np.abs(u - v), u * v], axis=1)
    head = ridge.fit(pair(train_u, train_v), data.stsb[0].targets,
                     lambda predicted, y: metrics.spearman(predicted[:, 0], y[:, 0]))
    scores["stsb_ridge_spearman"] = metrics.spearman(head.predict(pair(dev_u, dev_v))[:, 0],
                                                     data.stsb[1].targets)
  if data.sst2:
    train, dev = data.sst2
    one_hot = np.eye(2)[train.targets.astype(int)]
    head = ridge.fit(vectors(train.first, "sst2"), one_hot, _accuracy)
    scores["sst2_ridge_accuracy"] = metrics.accuracy(
        head.predict(vectors(dev.first, "sst2")).argmax(1), dev.targets)
  if data.conll:
    scores["conll_ridge_f1"] = _conll_probe(encode, tokenizer, *data.conll, length)
  return scores


def _accuracy(predicted: np.ndarray, one_hot: np.ndarray) -> float:
  return metrics.accuracy(predicted.argmax(1), one_hot.argmax(1))


def _balanced_accuracy(predicted: np.ndarray, one_hot: np.ndarray) -> float:
  """The mean over classes of each class's recall."""
  gold, guess = one_hot.argmax(1), predicted.argmax(1)
  return float(np.mean([np.mean(guess[gold == c] == c) for c in np.unique(gold)]))


def _conll_probe(encode: features.Encode, tokenizer, train: list[conll.Sentence],
                 dev: list[conll.Sentence], length: int) -> float:
  """A ridge classifier on each word's first token; conlleval's entity F1 on dev."""
  tag_names = conll.training_tags(train)
  tag_ids = {tag: i for i, tag in enumerate(tag_names)}
  train_rows, dev_rows = (conll.encode(sentences, tokenizer, tag_ids, length)
                          for sentences in (train, dev))
  inputs = lambda rows: {k: v for k, v in rows.features.items() if k != "targets"}
  states = encode(inputs(train_rows))
  tagged = train_rows.features["targets"] != conll.IGNORED
  head = ridge.fit(states[tagged], np.eye(len(tag_names))[train_rows.features["targets"][tagged]],
                   _balanced_accuracy, balanced=True)
  dev_states = encode(inputs(dev_rows))
  outputs = head.predict(dev_states.reshape(-1, dev_states.shape[-1])).argmax(1)
  predicted = conll.predicted_tags(dev, dev_rows, tag_names, outputs.reshape(dev_states.shape[:2]))
  return metrics.conll_entity_scores([s.tags for s in dev], predicted)["f1"]
