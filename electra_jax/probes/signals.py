"""The probes: each task's data read and tokenized once, then any encoder scored on it in seconds.

  sst2_ridge_accuracy    a ridge classifier on the mean vector, trained on SST-2 train
  conll_ridge_f1         a ridge classifier on each word's first token, conlleval's entity F1
  stsb_finetune_spearman (with `stsb_finetune`) the fixed-recipe STS-B fine-tune of
                         docs/results.md: the whole encoder trained on STS-B's sample
                         for the task's epochs, Spearman on dev; tens of seconds, not seconds

Each task trains its head on at most `max_examples` training examples (drawn
once with the seed, the same for every encoder) and scores the whole dev set.
A task whose files are not there is skipped, with one line saying so.

These are the signals that separate a pre-trained encoder from random weights
beyond the seeds' spread (docs/probes.md); STS-B's frozen probes (the cosine of
mean vectors, a ridge on [|u - v|, u * v]) did not, and were dropped for the
fine-tune.
"""

import dataclasses
import os
import tempfile

import numpy as np
from absl import logging

from electra_jax import metrics
from electra_jax.convert.pretrained import Discriminator
from electra_jax.data.any_tokenizer import AnyTokenizer
from electra_jax.errors import DataError
from electra_jax.finetune import config as finetune_config
from electra_jax.finetune import conll, encoding, glue, trainer
from electra_jax.probes import features, ridge

@dataclasses.dataclass(frozen=True)
class ProbeData:
  """The probes' texts: GLUE examples of SST-2, CoNLL sentences (None where absent)."""

  sst2: tuple[glue.Examples, glue.Examples] | None
  conll: tuple[list[conll.Sentence], list[conll.Sentence]] | None
  max_seq_length: int
  stsb_finetune: str = ""  # the GLUE root, where the STS-B fine-tune is wanted
  max_examples: int = 2000
  seed: int = 0


def _sample(count: int, limit: int, seed: int) -> np.ndarray:
  return np.sort(np.random.default_rng(seed).permutation(count)[:limit])


def _glue_paths(glue_dir: str, task: str) -> list[str] | None:
  """The task's train.tsv and dev.tsv in the GLUE root (None, said in one line, if absent)."""
  folder = glue.FORMATS[task].folder
  paths = [os.path.join(glue_dir, folder, f"{split}.tsv") for split in ("train", "dev")]
  if not glue_dir or not all(os.path.exists(path) for path in paths):
    logging.info("Probe %s skipped: no %s/train.tsv and dev.tsv in --glue_dir %r", task, folder,
                 glue_dir)
    return None
  return paths


def _glue_splits(glue_dir: str, task: str, limit: int, seed: int):
  paths = _glue_paths(glue_dir, task)
  if paths is None:
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
         seed: int = 0, stsb_finetune: bool = False) -> ProbeData:
  """The probes' data from the GLUE root and the CoNLL folder; what is absent is skipped."""
  # The fine-tune reads STS-B itself, through the fine-tuning trainer.
  stsb = stsb_finetune and _glue_paths(glue_dir, "stsb") is not None
  return ProbeData(_glue_splits(glue_dir, "sst2", max_examples, seed),
                   _conll_splits(conll_dir, max_examples, seed), max_seq_length,
                   glue_dir if stsb else "", max_examples, seed)


@dataclasses.dataclass(frozen=True)
class ProbeRows:
  """The probe data as one tokenizer's rows: a run probes its steps and its random baseline
  with the same tokenizer, so it tokenizes once."""

  data: ProbeData
  sst2: tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None  # train, dev rows
  conll: tuple[list[str], conll.Rows, conll.Rows] | None  # tag names, train, dev rows


def tokenize(data: ProbeData, tokenizer: AnyTokenizer) -> ProbeRows:
  """`data`'s SST-2 sentences and CoNLL sentences as `tokenizer`'s rows."""
  length = data.max_seq_length
  sst2 = conll_rows = None
  if data.sst2:
    sst2 = tuple(encoding.encode_texts(tokenizer, split.first, None, length, "sst2")
                 for split in data.sst2)
  if data.conll:
    tag_names = conll.training_tags(data.conll[0])
    tag_ids = {tag: i for i, tag in enumerate(tag_names)}
    conll_rows = (tag_names, *(conll.encode(sentences, tokenizer, tag_ids, length)
                               for sentences in data.conll))
  return ProbeRows(data, sst2, conll_rows)


def run(discriminator: Discriminator, rows: ProbeRows) -> dict[str, float]:
  """Every probe whose data is there: the ridge heads on the frozen `discriminator`, and the
  STS-B fine-tune of a copy of it. `rows` come from the discriminator's tokenizer."""
  encode = features.encoder(discriminator)
  data, scores = rows.data, {}
  if rows.sst2:
    vectors = [features.mean_pooled(encode(split), split["input_ids"]) for split in rows.sst2]
    train, dev = data.sst2
    head = ridge.fit(vectors[0], np.eye(2)[train.targets.astype(int)], _accuracy)
    scores["sst2_ridge_accuracy"] = metrics.accuracy(head.predict(vectors[1]).argmax(1),
                                                     dev.targets)
  if rows.conll:
    scores["conll_ridge_f1"] = _conll_probe(encode, data.conll[1], *rows.conll)
  if data.stsb_finetune:
    scores["stsb_finetune_spearman"] = _stsb_finetune(discriminator, data)
  return scores


def _stsb_finetune(discriminator: Discriminator, data: ProbeData) -> float:
  """docs/results.md's recipe: STS-B's training sample, the task's epochs, Spearman on dev."""
  config = finetune_config.default_config("stsb")
  config.update(init="(the encoder probed)", data_dir=data.stsb_finetune,
                max_seq_length=data.max_seq_length)
  config.train.update(max_examples=data.max_examples, seed=data.seed)
  finetune_config.validate(config)
  with tempfile.TemporaryDirectory(prefix="electra_jax_stsb_probe_") as workdir:
    return trainer.finetune(config, workdir, discriminator=discriminator)["score"]


def _accuracy(predicted: np.ndarray, one_hot: np.ndarray) -> float:
  return metrics.accuracy(predicted.argmax(1), one_hot.argmax(1))


def _balanced_accuracy(predicted: np.ndarray, one_hot: np.ndarray) -> float:
  """The mean over classes of each class's recall."""
  gold, guess = one_hot.argmax(1), predicted.argmax(1)
  return float(np.mean([np.mean(guess[gold == c] == c) for c in np.unique(gold)]))


def _conll_probe(encode: features.Encode, dev: list[conll.Sentence], tag_names: list[str],
                 train_rows: conll.Rows, dev_rows: conll.Rows) -> float:
  """A ridge classifier on each word's first token; conlleval's entity F1 on dev."""
  inputs = lambda rows: {k: v for k, v in rows.features.items() if k != "targets"}
  states = encode(inputs(train_rows))
  tagged = train_rows.features["targets"] != conll.IGNORED
  head = ridge.fit(states[tagged], np.eye(len(tag_names))[train_rows.features["targets"][tagged]],
                   _balanced_accuracy, balanced=True)
  dev_states = encode(inputs(dev_rows))
  outputs = head.predict(dev_states.reshape(-1, dev_states.shape[-1])).argmax(1)
  predicted = conll.predicted_tags(dev, dev_rows, tag_names, outputs.reshape(dev_states.shape[:2]))
  return metrics.conll_entity_scores([s.tags for s in dev], predicted)["f1"]
