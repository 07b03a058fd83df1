"""Frozen-encoder probes, each on a case with a known answer: the ridge heads on data they
fit exactly, and every probe on tasks whose answer the words alone give (so random weights,
whose features are lexical, must solve them)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import finetune_helpers as helpers
from conftest import REPO, cpu_env, make_documents, write_corpus
from electra_jax.convert import pretrained
from electra_jax.probes import features, ridge, signals

WORDS = ["the", "quick", "brown", "fox", "lazy", "dog", "good", "bad", "fun", "sad"]


def test_ridge_recovers_a_linear_map_and_picks_the_smallest_penalty_for_it():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(400, 6))
  y = x @ rng.normal(size=(6, 2)) + 3.0
  head = ridge.fit(x, y, lambda predicted, gold: -np.mean((predicted - gold)**2))
  np.testing.assert_allclose(head.predict(x), y, atol=0.05)


def test_balanced_ridge_weighs_each_class_alike():
  """A rare class (20 of 200 rows) one deviation apart from the common one: unbalanced, the
  head never predicts it; balanced, it finds most of it."""
  rng = np.random.default_rng(0)
  labels = np.r_[np.zeros(180, int), np.ones(20, int)]
  x = (labels + rng.normal(size=200))[:, None]
  rare_recall = lambda head: np.mean(head.predict(x).argmax(1)[labels == 1] == 1)
  never = lambda predicted, gold: 0.0  # every penalty scores alike: the first is kept
  assert rare_recall(ridge.fit(x, np.eye(2)[labels], never)) == 0.0
  assert rare_recall(ridge.fit(x, np.eye(2)[labels], never, balanced=True)) >= 0.7


def test_mean_pooling_averages_the_real_tokens_only():
  states = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
  ids = np.array([[2, 7, 0], [2, 7, 3]])
  np.testing.assert_allclose(features.mean_pooled(states, ids), [[1, 2], [8, 9]])


def write_stsb(root, count: int, seed: int, split: str) -> None:
  """Pairs that are the same sentence (score 5) or share no word (score 0)."""
  rng = np.random.default_rng(seed)
  rows = ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"]
  for i in range(count):
    first = " ".join(rng.choice(WORDS[:5], 4))
    same = i % 2 == 0
    second = first if same else " ".join(rng.choice(WORDS[5:], 4))
    rows.append(f"{i}\tx\tx\tx\tx\tx\tx\t{first}\t{second}\t{5.0 if same else 0.0}")
  helpers.write(os.path.join(root, "STS-B", f"{split}.tsv"), "\n".join(rows) + "\n")


@pytest.fixture(name="probe_data", scope="module")
def fixture_probe_data(tmp_path_factory):
  root = tmp_path_factory.mktemp("probes")
  helpers.write_sst2(root / "glue", train=200, dev=60)
  for split, count, seed in (("train", 200, 0), ("dev", 60, 1)):
    write_stsb(root / "glue", count, seed, split)
  helpers.write_conll(root / "conll", sentences=120)
  return root


def test_every_probe_solves_a_task_that_the_words_answer(probe_data, tmp_path):
  model = pretrained.load_discriminator(helpers.export_model(tmp_path / "model"))
  data = signals.load(str(probe_data / "glue"), str(probe_data / "conll"), max_examples=150,
                      max_seq_length=16)
  scores = signals.run(features.random_discriminator(model, seed=0),
                       signals.tokenize(data, model.tokenizer))
  assert set(scores) == {"sst2_ridge_accuracy", "conll_ridge_f1"}
  assert scores["sst2_ridge_accuracy"] > 0.9  # one sentiment word decides
  assert scores["conll_ridge_f1"] > 0.8  # "fox" and "lazy dog" are the entities


def test_the_stsb_fine_tune_learns_which_pairs_are_the_same_sentence(probe_data, tmp_path):
  model = pretrained.load_discriminator(helpers.export_model(tmp_path / "model"))
  data = signals.load(str(probe_data / "glue"), "", max_examples=200, max_seq_length=16,
                      stsb_finetune=True)
  scores = signals.run(model, signals.tokenize(data, model.tokenizer))
  # Identical pairs score 5, pairs without a shared word 0: a perfect ranking of two tied
  # halves has Spearman sqrt(3)/2 = 0.87, a random one 0.
  assert 0.6 < scores["stsb_finetune_spearman"] <= 0.87


def test_a_probe_without_its_data_is_skipped(probe_data):
  data = signals.load(str(probe_data / "glue"), "", max_examples=50, stsb_finetune=True)
  assert data.sst2 and data.conll is None and data.stsb_finetune == str(probe_data / "glue")
  nothing = signals.load("", "", stsb_finetune=True)
  assert nothing.sst2 is None and nothing.stsb_finetune == ""


def cli(*flags: str, module="electra_jax.probe") -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", module, *flags], cwd=REPO, env=cpu_env(1),
                        capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # ~25 s; the in-process probes and the pre-training run below cover the rest
def test_the_cli_prints_each_probe_beside_random_weights(probe_data, tmp_path):
  model = helpers.export_model(tmp_path / "model")
  result = cli(f"--model={model}", f"--glue_dir={probe_data / 'glue'}", "--max_seq_length=16",
               "--random_seeds=0,1", f"--json={tmp_path / 'probes.json'}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.splitlines()[0] == "probe | model | random weights (median, min-max)"
  assert [line.split(" | ")[0] for line in result.stdout.splitlines()[2:]] == [
      "sst2_ridge_accuracy"]
  saved = json.loads((tmp_path / "probes.json").read_text())
  assert set(saved["random"]) == {"0", "1"} and saved["scores"]["sst2_ridge_accuracy"] > 0.9
  nothing = cli(f"--model={model}")
  assert nothing.returncode != 0
  assert nothing.stderr.strip().splitlines()[-1].startswith("error: no probe has its data")


def test_probes_during_pretraining_are_logged_with_the_step(probe_data, tmp_path):
  corpus = write_corpus(tmp_path / "corpus.txt", make_documents(20))
  workdir = tmp_path / "run"
  result = cli("--config=configs/tiny.py", f"--workdir={workdir}",
               f"--config.data.source={corpus}", "--config.model.vocab_size=200",
               "--config.data.max_seq_length=32", "--config.optim.warmup_steps=2",
               "--config.train.steps=8", "--config.train.batch_size=8",
               "--config.train.eval_every=0", "--config.train.eval_batches=1",
               "--config.probes.every=4", f"--config.probes.glue_dir={probe_data / 'glue'}",
               f"--config.probes.conll_dir={probe_data / 'conll'}",
               "--config.probes.max_examples=100", "--config.probes.max_seq_length=16",
               module="electra_jax.train")
  assert result.returncode == 0, result.stderr[-3000:]
  lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  probed = [(m["split"], m["step"]) for m in lines if m["split"].startswith("probe")]
  assert probed == [("probe_random", 0), ("probe", 4), ("probe", 8)]
  assert "probes at step 8: sst2_ridge_accuracy" in result.stderr
  assert all(0 <= m["sst2_ridge_accuracy"] <= 1 for m in lines if m["split"] == "probe")
