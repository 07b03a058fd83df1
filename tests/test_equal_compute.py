"""The equal-compute experiment: steps from the FLOPs budget, the result table, and end to end."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, load_config, write_word_corpus
from electra_jax.experiments import electra_vs_mlm
from electra_jax.performance import flops

DATA = REPO.parent / "shared" / "data"


def test_both_objectives_get_the_same_flops_and_every_fraction_a_kept_step():
  base = load_config("tiny")
  budget = 3e13
  plans = {o: electra_vs_mlm.plan(electra_vs_mlm.objective_config(base, o, 1.0), budget,
                                 [0.25, 0.5, 1.0]) for o in electra_vs_mlm.OBJECTIVES}
  electra, mlm = plans["electra"], plans["mlm"]
  assert electra.flops_per_step == flops.step_flops(base)["total"]
  assert mlm.flops_per_step < electra.flops_per_step  # no generator: MLM takes more steps
  assert mlm.steps > electra.steps
  for p in plans.values():
    assert p.steps % 4 == 0 and p.steps * p.flops_per_step == pytest.approx(budget, rel=0.05)
    assert p.fraction_steps == {0.25: p.steps // 4, 0.5: p.steps // 2, 1.0: p.steps}
    assert all(step % p.checkpoint_every == 0 for step in p.fraction_steps.values())
    config = electra_vs_mlm.objective_config(base, p.objective, 1.0, p.steps, p.checkpoint_every)
    assert config.train.steps == p.steps and config.checkpoint.keep_every == p.checkpoint_every
    assert config.electra.temperature == 1.0 and config.objective == p.objective
  assert base.objective == "electra" and base.electra.temperature == 2.0  # untouched
  third = electra_vs_mlm.plan(base, budget, [1 / 3, 1.0])
  assert third.steps % 3 == 0 and third.fraction_steps[1 / 3] * 3 == third.steps


def fake_summary(task_scores):
  """downstream.summarize's shape, from {label: scores}."""
  return {"sst2": {label: dict(score_name="accuracy", seeds=len(s), median=float(np.median(s)),
                               min=min(s), max=max(s), scores=s, median_train_seconds=1.0)
                   for label, s in task_scores.items()}}


def test_results_are_tabulated_per_model_and_flops_point_and_plotted(tmp_path):
  base = load_config("tiny")
  plans = {o: electra_vs_mlm.plan(electra_vs_mlm.objective_config(base, o, 1.0), 1e13, [0.5, 1.0])
           for o in electra_vs_mlm.OBJECTIVES}
  summary = fake_summary({"electra-0.5": [0.7, 0.8, 0.75], "electra-1": [0.8, 0.82, 0.9],
                          "mlm-0.5": [0.6, 0.65, 0.7], "mlm-1": [0.7, 0.7, 0.71],
                          "random": [0.5, 0.55, 0.6]})
  rows = electra_vs_mlm.tabulate(plans, summary)
  assert [(r["model"], r["fraction"]) for r in rows] == [
      ("electra", 0.5), ("electra", 1.0), ("mlm", 0.5), ("mlm", 1.0), ("random", 0.0)]
  electra_full = rows[1]
  assert electra_full["median"] == 0.82 and (electra_full["min"], electra_full["max"]) == (0.8, 0.9)
  assert electra_full["flops"] == plans["electra"].steps * plans["electra"].flops_per_step
  table = electra_vs_mlm.markdown(rows, plans, 1e13)
  assert "| sst2 | accuracy | electra | 1 |" in table and "0.8200 | 0.8000 - 0.9000 |" in table
  assert f"electra {plans['electra'].steps} steps" in table
  pytest.importorskip("matplotlib", reason="the plot needs pip install 'electra_jax[experiments]'")
  assert electra_vs_mlm.plot(rows, str(tmp_path / "plot.png"))
  assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_flags_are_one_line_errors(tmp_path):
  result = subprocess.run([sys.executable, "-m", "electra_jax.experiments.equal_compute",
                           f"--out={tmp_path}", "--budget_flops=1e12", "--budget_minutes=1"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert "exactly one of --budget_flops and --budget_minutes" in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "SST-2").is_dir(), reason=f"needs the fine-tuning data in {DATA}")
def test_end_to_end_at_a_minuscule_budget(tmp_path):
  """Seconds of pre-training on a small corpus, then one seed of tiny fine-tuning runs."""
  corpus = write_word_corpus(tmp_path / "corpus.txt", num_words=600, num_documents=200)
  out = tmp_path / "out"
  command = [sys.executable, "-m", "electra_jax.experiments.equal_compute",
             f"--out={out}", "--budget_flops=2e11", "--fractions=0.5,1", "--tasks=sst2,stsb",
             "--seeds=0", f"--glue_dir={DATA}", f"--config.data.source={corpus}",
             "--config.model.vocab_size=300", "--config.data.max_seq_length=32",
             "--config.train.batch_size=8", "--config.data.tokenizer_sentences=2000",
             "--set=max_seq_length=32", "--set=train.max_examples=64", "--set=train.epochs=1"]
  result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads((out / "results.json").read_text())
  plans = results["settings"]["plans"]
  for objective in ("electra", "mlm"):
    p = plans[objective]
    assert p["steps"] * p["flops_per_step"] == pytest.approx(2e11, rel=0.3)
    assert sorted(os.listdir(out / "pretrain" / objective / "checkpoints")) == sorted(
        str(s) for s in p["fraction_steps"].values())
  models = [(r["task"], r["model"], r["fraction"]) for r in results["rows"]]
  assert len(models) == 2 * 5 and ("stsb", "random", 0.0) in models
  assert "| sst2 | accuracy | mlm | 0.5 |" in (out / "results.md").read_text()
  # Run again: everything is read back, nothing trained again.
  again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert again.returncode == 0 and "is trained already" in again.stderr
  assert "done before" in again.stderr
