"""What the code before the package was regrouped wrote still loads: a checkpoint and exports.

tests/data/written_by_153ca36 was written by main at commit 153ca36 (before the
CPU forms, the runtime, pretraining and performance packages and the renames):
a 4-step run of a micro config on the built-in corpus (`workdir/`: its config,
tokenizer, final parameters and the checkpoint of step 4) and the Hugging Face
export of its discriminator (`hf_discriminator/`, without tokenizer.json).
"""

import shutil
from pathlib import Path

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from electra_jax.convert import flax_format, pretrained
from electra_jax.data import any_tokenizer
from electra_jax.models import electra
from electra_jax.pretraining import loop, train_step
from electra_jax.runtime import checkpointing, sharding

WRITTEN = Path(__file__).parent / "data" / "written_by_153ca36"


def saved_params() -> dict:
  return flax.serialization.msgpack_restore((WRITTEN / "workdir" / "params.msgpack").read_bytes())


def test_its_checkpoint_restores_and_is_accepted_as_the_same_run(tmp_path):
  workdir = tmp_path / "workdir"
  shutil.copytree(WRITTEN / "workdir", workdir)
  config = flax_format.read_config(str(workdir / "config.json"))
  mesh = sharding.create_mesh(config.mesh)
  abstract_state, _ = train_step.abstract_train_state(config, mesh)
  tokenizer = any_tokenizer.load_tokenizer(str(workdir), config.data.lowercase)
  metadata = loop.run_metadata(config, tokenizer.sha256)
  checkpoints = checkpointing.Checkpointer(str(workdir / "checkpoints"), 2, 3)
  try:
    restored = checkpoints.restore_latest(abstract_state, check=lambda step, saved: (
        loop.check_continuation(saved, metadata, False, f"the checkpoint of step {step}")))
  finally:
    checkpoints.close()
  assert restored.step == 4 and int(restored.state.step) == 4
  # The checkpoint is of the last step: its parameters are the run's final ones.
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored.state.params),
               saved_params())


def test_its_exports_load_and_give_the_same_discriminator():
  from_workdir = pretrained.load_discriminator(str(WRITTEN / "workdir"))
  from_hf = pretrained.load_discriminator(str(WRITTEN / "hf_discriminator"))
  config = flax_format.read_config(str(WRITTEN / "workdir" / "config.json"))
  model = electra.build_pretrainer(config)
  ids = jnp.asarray([[2, 40, 41, 42, 3, 0]], jnp.int32)
  logits = [model.apply({"params": d.params}, ids, jnp.zeros_like(ids),
                        method="discriminator_logits") for d in (from_workdir, from_hf)]
  assert np.all(np.isfinite(logits[0]))
  np.testing.assert_allclose(logits[0], logits[1], atol=1e-5)
  assert from_workdir.tokenizer.sha256 == from_hf.tokenizer.sha256
