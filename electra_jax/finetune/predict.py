"""Predictions for test sets from a fine-tuned model, as the benchmarks' servers read them.

  GLUE   OUT/<task>.tsv: CoLA.tsv, SST-2.tsv, MRPC.tsv, STS-B.tsv, QQP.tsv, QNLI.tsv,
         RTE.tsv, WNLI.tsv; MNLI-m.tsv and MNLI-mm.tsv, and AX.tsv (the diagnostic
         set, which MNLI's model predicts) where the download has it. Each is
         `index<TAB>prediction` with GLUE's label names (STS-B: the score in [0, 5]),
         from the task's test.tsv under the GLUE root; zip the files for GLUE's server.
  CoNLL  OUT/<file>.tagged.txt: `word gold predicted` per line as conlleval reads it
         (`word predicted` for a file of words alone), from test.txt or eng.testb;
         with gold tags, the entity scores are reported too.
  SQuAD  OUT/predictions.json ({question id: answer text, "" for none}) and, for 2.0,
         OUT/null_odds.json ({question id: the no-answer score minus the best span's})
         as SQuAD's official evaluation reads them, from the dev file (SQuAD's test
         set is hidden: its server runs the same code on it) or any file in its layout.

The inputs default to the files of the run's own data_dir; `input_path` names
another file (CoNLL, SQuAD) or GLUE root.
"""

import functools
import json
import os
from typing import Any, Callable

import jax
import numpy as np
from absl import logging

from electra_jax import metrics as metrics_lib
from electra_jax import target
from electra_jax.errors import DataError
from electra_jax.finetune import config as finetune_config
from electra_jax.finetune import conll, encoding, glue, squad, steps, tasks
from electra_jax.finetune import model as model_lib
from electra_jax.finetune.saved_run import FineTunedRun
from electra_jax.runtime import fileio
from electra_jax.runtime.fileio import atomic_write


Predictor = Callable[[dict[str, np.ndarray]], Any]  # features -> model.predictions per row


def predictor(run: FineTunedRun, batch_size: int) -> Predictor:
  """The run's model compiled once for this host's first device, in batches of `batch_size`."""
  devices = jax.devices()[:1]
  kind = run.task.kind
  network = model_lib.build_model(run.model, kind, run.params["head"]["kernel"].shape[-1],
                                  target.choices(devices, run.model.dtype).ops)

  @jax.jit
  def predict(params, batch):
    outputs = network.apply({"params": params}, batch["input_ids"], batch["token_type_ids"])
    return model_lib.predictions(kind, outputs, batch)

  params = jax.device_put(run.params, devices[0])
  return lambda features: steps.predict_in_batches(
      functools.partial(predict, params),
      {name: features[name] for name in ("input_ids", "token_type_ids")}, batch_size)


def model_outputs(run: FineTunedRun, features: dict[str, np.ndarray], batch_size: int):
  """What the model predicts for every row (model.predictions), in batches of `batch_size`."""
  return predictor(run, batch_size)(features)


def write_predictions(run: FineTunedRun, out: str, input_path: str | None = None,
                      batch_size: int = 32) -> list[str]:
  """Writes the task's prediction files into `out` (created if needed); returns their paths."""
  fileio.make_dirs(out)
  kind, predict = run.task.kind, predictor(run, batch_size)
  if kind in (tasks.CLASSIFICATION, tasks.REGRESSION):
    return _glue(run, predict, input_path or run.config.data_dir, out)
  if kind == tasks.TAGGING:
    return _conll(run, predict, input_path or conll.split_path(run.config.data_dir, "test"), out)
  version = 2 if run.config.task == "squad2" else 1
  dev_file = os.path.join(run.config.data_dir, squad.FILES[run.config.task][1])
  return _squad(run, predict, input_path or dev_file, version, out)


def _glue(run: FineTunedRun, predict: Predictor, data_dir: str, out: str) -> list[str]:
  if data_dir == finetune_config.TFDS:
    raise DataError("GLUE's test labels are hidden and TFDS's test splits serve no submission "
                    "file here; give the GLUE root of the download (--input)")
  task, written = run.config.task, []
  if glue.is_hf_source(data_dir):
    sets = {name: glue.read_hf(task, split, data_dir, labelled=False)
            for name, split in glue.hf_test_splits(task).items()}
  else:
    sets = {name: glue.read_test_tsv(path, task)
            for name, path in glue.test_files(task, data_dir).items()}
  for name, examples in sets.items():
    features = encoding.encode_texts(run.tokenizer, examples.first, examples.second,
                                     run.config.max_seq_length, name)
    outputs = predict(features)
    written.append(os.path.join(out, f"{name}.tsv"))
    atomic_write(written[-1], glue.submission(task, examples, outputs))
  return written


def _conll(run: FineTunedRun, predict: Predictor, path: str, out: str) -> list[str]:
  sentences = conll.read_conll(path, run.config.tag_column)
  tag_ids = {tag: i for i, tag in enumerate(run.labels)}
  rows = conll.encode(sentences, run.tokenizer, tag_ids, run.config.max_seq_length)
  predicted = conll.predicted_tags(sentences, rows, list(run.labels),
                                   predict(rows.features))
  if all(tag != conll.UNTAGGED for s in sentences for tag in s.tags):
    scores = metrics_lib.conll_entity_scores([s.tags for s in sentences], predicted)
    logging.info("%s: %s", path, ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
  written = os.path.join(out, os.path.splitext(os.path.basename(path))[0] + ".tagged.txt")
  atomic_write(written, conll.tagged_text(sentences, predicted))
  return [written]


def _squad(run: FineTunedRun, predict: Predictor, path: str, version: int,
           out: str) -> list[str]:
  questions = squad.read_squad(path, version, labelled=False)
  windows = squad.encode(questions, run.tokenizer, run.config, training=False)
  start_logits, end_logits = predict(windows.features)
  answers, null_odds = squad.predict_answers(questions, windows, start_logits, end_logits,
                                             run.config, version)
  if any(q.answers for q in questions):  # a file with answers (dev): scored as well
    gold = {q.id: [text for text, _ in q.answers] for q in questions}
    scores = metrics_lib.squad_scores(answers, gold, version)
    logging.info("%s: %s", path, ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
  written = [os.path.join(out, "predictions.json")]
  atomic_write(written[0], json.dumps(answers, indent=1))
  if version == 2:
    written.append(os.path.join(out, "null_odds.json"))
    atomic_write(written[1], json.dumps(null_odds, indent=1))
  return written
