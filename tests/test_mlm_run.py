"""An MLM pre-training run end to end, its kept checkpoints exported, and old saved configs."""

import json
import shutil

import flax.serialization
import flax.traverse_util
import numpy as np
import pytest
from absl import logging

from conftest import load_config, write_word_corpus
from electra_jax.convert import flax_format, pretrained
from electra_jax.convert.run_export import export_run
from electra_jax.errors import UserError
from electra_jax.pretraining import loop


@pytest.fixture(name="mlm_run", scope="module")
def fixture_mlm_run(tmp_path_factory):
  """Six MLM steps on a small synthetic corpus; checkpoints of steps 2 and 4 kept for good."""
  tmp = tmp_path_factory.mktemp("mlm")
  corpus = write_word_corpus(tmp / "corpus.txt", num_words=400, num_documents=150)
  config = load_config("tiny")
  config.objective = "mlm"
  config.model.vocab_size = 120
  config.data.source, config.data.max_seq_length = str(corpus), 32
  config.data.tokenizer_sentences = 1000
  config.train.steps, config.train.batch_size, config.train.log_every = 6, 8, 2
  config.train.eval_every, config.train.eval_batches = 0, 2
  config.optim.warmup_steps = 2
  config.checkpoint.every_steps, config.checkpoint.keep, config.checkpoint.keep_every = 2, 1, 2
  config.checkpoint.asynchronous = False
  workdir = tmp / "run"
  logged = []
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(logging, "info", lambda message, *args: logged.append(
        str(message) % args if args else str(message)))
    metrics = loop.train_and_evaluate(config, str(workdir))
  return config, workdir, metrics, logged


def test_mlm_run_logs_and_saves_the_encoder_and_mlm_head(mlm_run):
  _, workdir, metrics, logged = mlm_run
  assert set(metrics) == {"loss", "mlm_loss", "mlm_accuracy"}  # no discriminator, no AUC
  assert any("mlm loss" in line and "mlm acc" in line for line in logged)
  assert any("mlm_head" in line and "model FLOPs per step" in line for line in logged)
  saved = json.loads((workdir / "config.json").read_text())
  assert saved["objective"] == "mlm"
  assert saved["masking"]["mask_token_prob"] == 0.8  # recorded as used
  assert saved["masking"]["random_token_prob"] == 0.1
  params = flax.serialization.msgpack_restore((workdir / "params.msgpack").read_bytes())
  assert set(params) == {"embeddings", "discriminator", "generator_head"}


def test_a_kept_checkpoint_exports_its_own_parameters_for_fine_tuning(mlm_run, tmp_path):
  _, workdir, _, _ = mlm_run
  assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [2, 4, 6]
  final = flax.serialization.msgpack_restore((workdir / "params.msgpack").read_bytes())
  exported = {}
  for step in (2, 4):
    export_run(str(workdir), "flax", str(tmp_path / f"step{step}"), step=step)
    exported[step] = pretrained.load_discriminator(str(tmp_path / f"step{step}"))
    assert set(exported[step].params) == {"embeddings", "discriminator"}
  flat = lambda tree: flax.traverse_util.flatten_dict(tree["discriminator"])
  key = ("layer_0", "intermediate", "kernel")
  # Each step's parameters, not the final ones: training moved them in between.
  values = [flat(exported[2].params)[key], flat(exported[4].params)[key], flat(final)[key]]
  assert not np.array_equal(values[0], values[1]) and not np.array_equal(values[1], values[2])
  # Exporting the last step gives exactly the final parameters.
  export_run(str(workdir), "flax", str(tmp_path / "step6"), step=6)
  last = pretrained.load_discriminator(str(tmp_path / "step6")).params
  np.testing.assert_array_equal(flat(last)[key], flat(final)[key])
  with pytest.raises(UserError, match="no checkpoint of step 3; it has 2, 4, 6"):
    export_run(str(workdir), "flax", str(tmp_path / "step3"), step=3)
  with pytest.raises(UserError, match="MLM run.*--format=flax"):
    export_run(str(workdir), "hf", str(tmp_path / "hf"))


def old_layout(saved: dict) -> dict:
  """A config as electra_jax wrote it before `objective` was a string."""
  old = {name: value for name, value in saved.items()
         if name not in ("objective", "masking", "electra")}
  masking = {k: v for k, v in saved["masking"].items() if k != "random_token_prob"}
  old["objective"] = {**masking, **saved["electra"]}
  return old


def test_configs_saved_in_the_old_layout_load_and_continue(mlm_run, tmp_path):
  """An ELECTRA workdir from before the MLM objective: export, fine-tuning init, continuing."""
  config, workdir, _, _ = mlm_run
  config = config.copy_and_resolve_references()
  config.objective = "electra"
  electra_saved = json.loads(config.to_json_best_effort())
  electra_saved["masking"].update(mask_token_prob=0.85, random_token_prob=0.0)
  old = tmp_path / "old"
  old.mkdir()
  (old / "config.json").write_text(json.dumps(old_layout(electra_saved)))
  read = flax_format.read_config(str(old / "config.json"))
  assert read.objective == "electra" and read.masking.mask_token_prob == 0.85
  assert read.masking.mask_rate == config.masking.mask_rate
  loop.check_workdir_config(config, str(old))  # continuing accepts it: same run
  metadata = loop.run_metadata(config, "sha")
  loop.check_continuation(dict(metadata, config=old_layout(metadata["config"])), metadata,
                           allow_changes=False, source="old checkpoint")
  config.electra.temperature = 3.0  # a real difference is still refused
  with pytest.raises(Exception, match="electra.temperature"):
    loop.check_workdir_config(config, str(old))
  # An old-layout MLM-less workdir with parameters loads for fine-tuning as before.
  shutil.copy(workdir / "tokenizer.model", old)
  assert flax_format.read_config(str(old / "config.json")).electra.disc_weight == 50.0
