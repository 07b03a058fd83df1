"""The pre-training CLI end to end: what it writes, that it learns, and bad input."""

import json
import os
import subprocess
import sys

import flax.serialization
import numpy as np
import pytest

from conftest import REPO, load_config
from electra_jax.data import dataset
from electra_jax.data import loader
from electra_jax.pretraining import loop
from electra_jax.vocabulary import CLS_ID, MASK_ID, PAD_ID, SEP_ID


def run_train(workdir, *overrides, timeout=300):
  return subprocess.run(
      [sys.executable, "-m", "electra_jax.train", "--config=configs/tiny.py",
       f"--workdir={workdir}", *overrides],
      cwd=REPO, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result, *fragments):
  assert result.returncode == 1, result.stderr
  assert "Traceback" not in result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1, result.stderr
  for fragment in fragments:
    assert fragment in errors[0]


def test_cli_writes_config_metrics_tensorboard_tokenizer_and_params(tmp_path):
  result = run_train(tmp_path, "--config.train.steps=4", "--config.train.log_every=2",
                     "--config.optim.warmup_steps=2", "--config.model.vocab_size=2000")
  assert result.returncode == 0, result.stderr
  assert "Parameters: discriminator" in result.stderr
  assert "ETA" in result.stderr and "tok/s" in result.stderr
  config = json.loads((tmp_path / "config.json").read_text())
  assert config["train"]["steps"] == 4 and config["model"]["vocab_size"] == 2000
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [(l["split"], l["step"]) for l in lines] == [("train", 2), ("train", 4), ("eval", 4)]
  assert all(np.isfinite(l["loss"]) for l in lines)
  assert {"gen_accuracy", "disc_precision", "disc_recall", "replaced_fraction", "learning_rate",
          "grad_norm", "tokens_per_s"} <= set(lines[0])
  assert "disc_auc" in lines[-1]
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tensorboard"))
  assert (tmp_path / "tokenizer.model").stat().st_size > 0
  params = flax.serialization.msgpack_restore((tmp_path / "params.msgpack").read_bytes())
  assert params["embeddings"]["word_embeddings"]["embedding"].shape == (2000, 128)


def most_frequent_token_accuracy(examples) -> float:
  """What always predicting the most frequent maskable token scores at masked positions."""
  ids = examples.input_ids[~np.isin(examples.input_ids, [PAD_ID, CLS_ID, SEP_ID, MASK_ID])]
  return np.bincount(ids).max() / ids.size


@pytest.mark.slow  # 400 steps: ~1.5 min; test_train_step covers learning in the default run
def test_tiny_model_learns(tmp_path):
  """Held-out generator accuracy and discriminator AUC climb well above chance.

  The tiny config at length 64 (half the cost per step) for 400 steps. Seen on
  this code: generator accuracy 0.102 against 0.063 for always guessing the most
  frequent token, discriminator AUC 0.81.
  """
  config = load_config("tiny")
  config.data.max_seq_length = 64
  config.train.steps = 400
  config.optim.warmup_steps = 40
  config.train.eval_every = 0
  metrics = loop.train_and_evaluate(config, str(tmp_path))
  data = dataset.prepare(config, str(tmp_path))  # reuses the prepared data
  baseline = most_frequent_token_accuracy(loader.read_examples(data, "eval"))
  assert metrics["gen_accuracy"] > 1.5 * baseline, (metrics, baseline)
  assert metrics["disc_auc"] > 0.65, metrics


def test_missing_corpus_is_reported_and_the_workdir_untouched(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "notes.txt").write_text("keep me")
  result = run_train(workdir, f"--config.data.source={tmp_path}/nothing/*.txt")
  assert_one_line_error(result, "nothing/*.txt")
  assert sorted(os.listdir(workdir)) == ["notes.txt"]
  assert (workdir / "notes.txt").read_text() == "keep me"


def test_empty_and_undecodable_corpora_are_reported(tmp_path):
  (tmp_path / "empty.txt").write_text("\n\n")
  assert_one_line_error(run_train(tmp_path / "a", f"--config.data.source={tmp_path}/empty.txt"),
                        "empty.txt")
  (tmp_path / "latin1.txt").write_bytes("caf\xe9 cr\xe8me\n".encode("latin-1") * 50)
  result = run_train(tmp_path / "b", f"--config.data.source={tmp_path}/latin1.txt")
  assert_one_line_error(result, "latin1.txt")
  assert "UTF-8" in result.stderr or "undecodable" in result.stderr


def test_corpus_too_small_for_the_vocabulary(tmp_path):
  corpus = tmp_path / "small.txt"
  corpus.write_text("".join(f"line {i} of a small corpus.\n\n" for i in range(50)))
  result = run_train(tmp_path / "run", f"--config.data.source={corpus}")
  assert_one_line_error(result, "too small", "model.vocab_size=8000")


def test_unwritable_workdir_is_reported(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("a file, not a directory")
  assert_one_line_error(run_train(blocker / "run"), "cannot write to workdir", str(blocker))
  assert blocker.read_text() == "a file, not a directory"
