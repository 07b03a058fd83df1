"""Where metrics go: metrics.jsonl and TensorBoard always, Weights & Biases when a run names a
project (its offline mode here: nothing leaves the machine)."""

import glob
import json
import sys
import types

import pytest

import finetune_helpers as helpers
from electra_jax.errors import UserError
from electra_jax.finetune import trainer
from electra_jax.runtime import workdir as workdir_files
from electra_jax.runtime.metric_writer import MetricWriter


class FakeWandb(types.ModuleType):
  """Records what the writer asks of the `wandb` module."""

  def __init__(self):
    super().__init__("wandb")
    self.calls = []

  def init(self, **settings):
    self.calls.append(("init", settings))
    return types.SimpleNamespace(log=lambda data, step: self.calls.append(("log", data, step)),
                                 finish=lambda: self.calls.append(("finish",)))


def test_a_continued_run_logs_to_the_same_wandb_run(tmp_path, monkeypatch):
  fake = FakeWandb()
  monkeypatch.setitem(sys.modules, "wandb", fake)
  writer = MetricWriter(str(tmp_path), 0, "electra", {"train": {"steps": 30}})
  writer.write(10, "train", {"loss": 2.0})
  writer.close()
  writer = MetricWriter(str(tmp_path), 10, "electra", {"train": {"steps": 30}})
  writer.write(20, "eval", {"disc_auc": 0.75})
  writer.close()
  inits = [call[1] for call in fake.calls if call[0] == "init"]
  run_id = (tmp_path / workdir_files.WANDB_RUN_ID_FILE).read_text().strip()
  assert [settings["id"] for settings in inits] == [run_id, run_id]
  assert all(s["project"] == "electra" and s["resume"] == "allow" and
             s["config"] == {"train": {"steps": 30}} for s in inits)
  assert [call[1:] for call in fake.calls if call[0] == "log"] == [
      ({"train/loss": 2.0}, 10), ({"eval/disc_auc": 0.75}, 20)]
  assert [call[0] for call in fake.calls].count("finish") == 2


def test_without_a_project_wandb_is_never_imported(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "wandb", None)  # importing it would fail
  writer = MetricWriter(str(tmp_path))
  writer.write(1, "train", {"loss": 1.0})
  writer.close()
  assert json.loads((tmp_path / workdir_files.METRICS_FILE).read_text()) == {
      "step": 1, "split": "train", "loss": 1.0}


def test_a_project_without_wandb_installed_says_what_to_install(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "wandb", None)
  with pytest.raises(UserError, match=r"wandb is not installed: pip install wandb"):
    MetricWriter(str(tmp_path), 0, "electra")


def test_fine_tuning_logs_to_wandb_offline(tmp_path, monkeypatch):
  pytest.importorskip("wandb", reason="wandb is not installed: pip install -e '.[wandb]'")
  monkeypatch.setenv("WANDB_MODE", "offline")
  monkeypatch.setenv("WANDB_SILENT", "true")
  init = helpers.export_model(tmp_path / "model", num_layers=1)
  helpers.write_sst2(tmp_path / "glue", train=32, dev=16)
  config = helpers.config("sst2", init, str(tmp_path / "glue"), epochs=1, wandb_project="electra")
  trainer.finetune(config, str(tmp_path / "run"))
  run_id = (tmp_path / "run" / workdir_files.WANDB_RUN_ID_FILE).read_text().strip()
  (log,) = glob.glob(str(tmp_path / "run" / "wandb" / "offline-run-*" / f"run-{run_id}.wandb"))
  with open(log, "rb") as f:
    records = f.read()  # W&B's own record format; the metric names are in it as text
  assert b"dev/accuracy" in records and b"train/loss" in records and b"electra" in records
