"""electra.embedding_sharing: which loss trains which embeddings, and runs that continue.

"shared" (the paper's): one set for both networks. "gdes" (DeBERTaV3): the
replaced-token loss reaches only the discriminator's residual word table, never
the shared one, which the generator's MLM loss trains. "none": a set each.
Export and import of such runs: tests/test_hf_parity.py.
"""

import json
import subprocess
import sys

import flax.serialization
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model_helpers
from conftest import REPO, cpu_env, make_documents, write_corpus
from electra_jax.config import validate
from electra_jax.errors import ConfigError
from electra_jax.models import electra
from electra_jax.pretraining import objective

WORDS = ("embeddings", "word_embeddings", "embedding")
OWN_WORDS = (electra.DISCRIMINATOR_EMBEDDINGS, "word_embeddings", "embedding")
POSITIONS = ("embeddings", "position_embeddings", "embedding")


def setup(sharing: str):
  config, model, params = model_helpers.tiny_setup(electra__embedding_sharing=sharing)
  if sharing == "gdes":  # a residual that is not zero, so that its gradient is general
    residual = jax.random.normal(jax.random.PRNGKey(1), params[OWN_WORDS[0]][OWN_WORDS[1]][
        OWN_WORDS[2]].shape) * 0.02
    params[OWN_WORDS[0]][OWN_WORDS[1]][OWN_WORDS[2]] = residual
  return config, model, params


def loss_gradients(model, params, network: str) -> dict:
  """The gradient of one network's loss alone: the discriminator's replaced-token loss on a
  batch with some tokens replaced, or the generator's MLM loss at three positions."""
  batch = model_helpers.batch()
  ids, types = batch["input_ids"], batch["token_type_ids"]

  def loss(p):
    if network == "generator":
      positions = jnp.tile(jnp.array([[1, 4, 7]]), (ids.shape[0], 1))
      logits = model.apply({"params": p}, ids, types, positions, method="generator_logits")
      targets = jnp.take_along_axis(ids, positions, axis=1)
      return objective.mlm_loss(logits, targets, jnp.ones(targets.shape), targets.size)
    replaced = ids.at[:, 2:5].set(7)
    labels = (replaced != ids).astype(jnp.float32)
    real = (ids != 0).astype(jnp.float32)
    logits = model.apply({"params": p}, replaced, types, method="discriminator_logits")
    return objective.rtd_loss(logits, labels, real, real.sum())

  return flax.traverse_util.flatten_dict(jax.grad(loss)(params))


def test_gdes_keeps_the_replaced_token_loss_off_the_shared_word_table():
  _, model, params = setup("gdes")
  discriminator = loss_gradients(model, params, "discriminator")
  assert np.all(np.asarray(discriminator[WORDS]) == 0)  # exactly: a stop-gradient
  assert np.abs(discriminator[OWN_WORDS]).sum() > 0
  assert np.abs(discriminator[POSITIONS]).sum() > 0  # positions and types stay shared
  generator = loss_gradients(model, params, "generator")
  assert np.abs(generator[WORDS]).sum() > 0
  assert np.all(np.asarray(generator[OWN_WORDS]) == 0)


def test_shared_embeddings_take_both_losses_and_separate_ones_each_their_own():
  _, model, params = setup("shared")
  assert np.abs(loss_gradients(model, params, "discriminator")[WORDS]).sum() > 0
  _, model, params = setup("none")
  discriminator = loss_gradients(model, params, "discriminator")
  generator = loss_gradients(model, params, "generator")
  for own in (OWN_WORDS, (electra.DISCRIMINATOR_EMBEDDINGS, *POSITIONS[1:])):
    assert np.abs(discriminator[own]).sum() > 0 and np.all(np.asarray(generator[own]) == 0)
  assert np.all(np.asarray(discriminator[WORDS]) == 0)


def test_gdes_starts_as_the_shared_model():
  """The residual starts at zero: before training, GDES's discriminator is the paper's."""
  _, gdes_model, gdes_params = model_helpers.tiny_setup(electra__embedding_sharing="gdes")
  _, shared_model, shared_params = model_helpers.tiny_setup()
  assert not np.any(np.asarray(gdes_params[OWN_WORDS[0]][OWN_WORDS[1]][OWN_WORDS[2]]))
  batch = model_helpers.batch()
  logits = [model.apply({"params": params}, batch["input_ids"], batch["token_type_ids"],
                        method="discriminator_logits")
            for model, params in ((gdes_model, gdes_params), (shared_model, shared_params))]
  np.testing.assert_array_equal(*logits)


def test_mlm_has_no_generator_to_share_with():
  config, _, _ = model_helpers.tiny_setup()
  config.objective = "mlm"
  config.electra.embedding_sharing = "gdes"
  with pytest.raises(ConfigError, match="'objective' = 'mlm' has no generator to share with"):
    validate(config)


def train(workdir, corpus, *flags: str) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, "-m", "electra_jax.train", "--config=configs/tiny.py",
       f"--workdir={workdir}", f"--config.data.source={corpus}", "--config.model.vocab_size=200",
       "--config.data.max_seq_length=32", "--config.optim.warmup_steps=2",
       "--config.train.steps=6", "--config.train.batch_size=8", "--config.train.log_every=1",
       "--config.train.eval_every=0", "--config.train.eval_batches=1",
       "--config.checkpoint.every_steps=3", *flags],
      cwd=REPO, env=cpu_env(1), capture_output=True, text=True, timeout=600)


def test_a_gdes_run_continues_from_its_checkpoint_bit_for_bit(tmp_path):
  corpus = write_corpus(tmp_path / "corpus.txt", make_documents(30))
  workdir = tmp_path / "run"
  gdes = "--config.electra.embedding_sharing=gdes"
  first = train(workdir, corpus, gdes)
  assert first.returncode == 0, first.stderr[-3000:]
  params = (workdir / "params.msgpack").read_bytes()
  losses = (workdir / "metrics.jsonl").read_text()
  restored = flax.serialization.msgpack_restore(params)
  assert np.abs(restored[OWN_WORDS[0]][OWN_WORDS[1]][OWN_WORDS[2]]).sum() > 0  # it trained

  for step_6 in (workdir / "checkpoints" / "6", workdir / "params.msgpack"):
    subprocess.run(["rm", "-r", str(step_6)], check=True)
  again = train(workdir, corpus, gdes)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "step 3" in again.stderr
  assert (workdir / "params.msgpack").read_bytes() == params
  assert [json.loads(line)["loss"] for line in (workdir / "metrics.jsonl").read_text().split(
      "\n") if line] == [json.loads(line)["loss"] for line in losses.split("\n") if line]

  changed = train(workdir, corpus, "--config.train.steps=7")
  assert changed.returncode != 0
  assert "electra.embedding_sharing" in changed.stderr.strip().splitlines()[-1]
