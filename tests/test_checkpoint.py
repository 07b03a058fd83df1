"""The checkpoint module on its own: what is kept, damaged checkpoints, metadata checks, room.

Small pytrees stand in for a train state here; tests/test_resume.py runs the
pre-training CLI through kills, preemption and other meshes.
"""

import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, load_config
from electra_jax import config as config_lib
from electra_jax.errors import ConfigError, UserError
from electra_jax.pretraining import loop
from electra_jax.runtime import checkpointing, stop_signals

STATE = {"weights": jnp.zeros((64, 32), jnp.float32), "step": jnp.zeros((), jnp.int32)}
ABSTRACT = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), STATE)


def state_at(step: int) -> dict:
  return {"weights": jnp.full((64, 32), step, jnp.float32), "step": jnp.asarray(step, jnp.int32)}


def save_steps(directory, steps, **options) -> checkpointing.Checkpointer:
  options = {"every_steps": 1, "keep": 10, **options}
  checkpoints = checkpointing.Checkpointer(str(directory), **options)
  for step in steps:
    if checkpoints.should_save(step):
      checkpoints.save(step, state_at(step), {"next_index": step}, {"run": "a", "step": step})
  checkpoints.wait()
  return checkpoints


def test_saves_every_n_steps_keeps_the_newest_and_every_mth_and_restores_all_parts(tmp_path):
  checkpoints = save_steps(tmp_path, range(1, 21), every_steps=2, keep=2, keep_every=8)
  assert checkpoints.all_steps() == [8, 16, 18, 20]
  restored = checkpoints.restore_latest(ABSTRACT)
  checkpoints.close()
  assert restored.step == 20 and restored.loader_state == {"next_index": 20}
  assert restored.metadata == {"run": "a", "step": 20}
  np.testing.assert_array_equal(restored.state["weights"], np.full((64, 32), 20.0))
  assert restored.state["step"] == 20 and restored.state["step"].dtype == jnp.int32


def test_an_empty_directory_restores_nothing(tmp_path):
  checkpoints = checkpointing.Checkpointer(str(tmp_path / "none"), every_steps=5, keep=1)
  assert checkpoints.restore_latest(ABSTRACT) is None
  checkpoints.close()


def truncate_arrays(step_dir: Path) -> None:
  for path in (step_dir / "state").rglob("*"):
    if path.is_file() and path.parent.name == "d":
      path.write_bytes(path.read_bytes()[:10])


DAMAGES = {
    "truncated arrays": truncate_arrays,
    "state removed": lambda step_dir: shutil.rmtree(step_dir / "state"),
    "metadata cut short": lambda step_dir: (step_dir / "metadata" / "metadata").write_text('{"ru'),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_an_unreadable_latest_checkpoint_is_set_aside_for_the_previous_one(tmp_path, damage,
                                                                           caplog):
  save_steps(tmp_path, [1, 2, 3]).close()
  DAMAGES[damage](tmp_path / "3")
  checkpoints = checkpointing.Checkpointer(str(tmp_path), every_steps=1, keep=10)
  with caplog.at_level(logging.WARNING):
    restored = checkpoints.restore_latest(ABSTRACT)
  assert restored.step == 2 and restored.state["step"] == 2
  assert "The checkpoint of step 3 cannot be read" in caplog.text
  assert "using step 2 instead" in caplog.text
  # Kept for inspection under a name that is no step, so that step 3 can be saved again.
  assert (tmp_path / "3.unreadable").is_dir() and checkpoints.all_steps() == [1, 2]
  checkpoints.save(3, state_at(3), {"next_index": 3}, {"run": "a"})
  checkpoints.close()
  assert checkpointing.Checkpointer(str(tmp_path), every_steps=1, keep=10).all_steps() == [1, 2, 3]


def test_when_no_checkpoint_can_be_read_nothing_is_moved(tmp_path):
  save_steps(tmp_path, [1, 2]).close()
  for step in (1, 2):
    truncate_arrays(tmp_path / str(step))
  checkpoints = checkpointing.Checkpointer(str(tmp_path), every_steps=1, keep=10)
  with pytest.raises(UserError, match="no checkpoint in .* can be read .step 2"):
    checkpoints.restore_latest(ABSTRACT)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]


# A run killed while its asynchronous save is still writing: the save of step 2
# has started (the state is off the device) when the process dies. Its 256 MiB
# are random, so that compression cannot make the write short enough to finish
# before the kill.
KILLED_MID_SAVE = """
import os, sys
import jax, jax.numpy as jnp
from electra_jax.runtime import checkpointing
checkpoints = checkpointing.Checkpointer(sys.argv[1], every_steps=1, keep=5)
small = {"weights": jnp.zeros((64, 32)), "step": jnp.asarray(1, jnp.int32)}
checkpoints.save(1, small, {"next_index": 1}, {"run": "a"})
checkpoints.wait()
weights = jax.random.normal(jax.random.PRNGKey(0), (8192, 8192)).block_until_ready()
big = {"weights": weights, "step": jnp.asarray(2, jnp.int32)}
checkpoints.save(2, big, {"next_index": 2}, {"run": "a"})
os._exit(9)
"""


def test_a_half_written_checkpoint_is_reported_removed_and_the_previous_one_used(tmp_path,
                                                                                 caplog):
  result = subprocess.run([sys.executable, "-c", KILLED_MID_SAVE, str(tmp_path)], cwd=REPO,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 9, result.stderr[-2000:]
  unfinished = [p.name for p in tmp_path.iterdir() if p.name.startswith("2.")]
  assert unfinished and "orbax-checkpoint-tmp" in unfinished[0]  # the kill came mid-save
  with caplog.at_level(logging.WARNING):
    checkpoints = checkpointing.Checkpointer(str(tmp_path), every_steps=1, keep=5)
  assert "was being written when its run stopped" in caplog.text and unfinished[0] in caplog.text
  restored = checkpoints.restore_latest(ABSTRACT)
  checkpoints.close()
  assert restored.step == 1 and restored.loader_state == {"next_index": 1}
  assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]


@pytest.mark.parametrize("signum, name", [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "Ctrl-C")])
def test_stop_signals_are_noticed_inside_and_handled_as_before_outside(signum, name):
  previous = signal.getsignal(signum)
  with stop_signals.StopSignals() as stop:
    assert not stop.reached(1)
    os.kill(os.getpid(), signum)
    assert stop.reached(2) and stop.received == name
  assert signal.getsignal(signum) is previous


SECOND_CTRL_C = """
import os, signal, time
from electra_jax.runtime import stop_signals
with stop_signals.StopSignals():
  os.kill(os.getpid(), signal.SIGINT)
  os.kill(os.getpid(), signal.SIGINT)
  time.sleep(60)  # a step that has not ended
"""


def test_a_second_ctrl_c_exits_at_once_with_130():
  result = subprocess.run([sys.executable, "-c", SECOND_CTRL_C], cwd=REPO, capture_output=True,
                          text=True, timeout=50)
  assert result.returncode == 130 and "Traceback" not in result.stderr, result.stderr
  assert result.stderr.splitlines()[-1].startswith("Stopped at once on the second Ctrl-C")


# ---------------------------------------------------------------------------
# Metadata: which runs may continue which
# ---------------------------------------------------------------------------


def metadata(**changes) -> dict:
  config = load_config("tiny")
  for name, value in changes.items():
    section, field = name.split("__")
    config[section][field] = value
  return loop.run_metadata(config, tokenizer_sha256="a" * 64)


def test_the_same_run_and_a_new_mesh_logging_or_checkpointing_may_always_continue():
  assert loop.check_continuation(metadata(), metadata(), False, "the checkpoint") == []
  moved = metadata(mesh__data=1, mesh__fsdp=8, train__log_every=1, checkpoint__keep=7)
  assert loop.check_continuation(metadata(), moved, False, "the checkpoint") == []


@pytest.mark.parametrize("change, name", [
    (dict(model__hidden_size=256), "config.model.hidden_size is 128 there and 256 here"),
    (dict(model__vocab_size=9000), "config.model.vocab_size is 8000 there and 9000 here"),
    (dict(model__num_layers=4), "config.model.num_layers is 2 there and 4 here"),
])
def test_another_model_size_is_refused_even_when_changes_are_allowed(change, name):
  for allow in (False, True):
    with pytest.raises(ConfigError, match=f"the checkpoint is of another model.*{name}"):
      loop.check_continuation(metadata(), metadata(**change), allow, "the checkpoint")


def test_another_tokenizer_is_refused():
  other = dict(metadata(), tokenizer_sha256="b" * 64)
  with pytest.raises(ConfigError, match="tokenizer_sha256 is 'aaa.*' there and 'bbb.*' here"):
    loop.check_continuation(metadata(), other, True, "the checkpoint")


def test_other_settings_need_the_explicit_override():
  changed = metadata(train__steps=900, optim__learning_rate=3e-4)
  with pytest.raises(ConfigError, match="made with a different config: "
                     "config.optim.learning_rate is 0.001 there and 0.0003 here; "
                     "config.train.steps is 600 there and 900 here.*"
                     "--config.checkpoint.allow_config_change=True"):
    loop.check_continuation(metadata(), changed, False, "the checkpoint")
  assert loop.check_continuation(metadata(), changed, True, "the checkpoint") == [
      "config.optim.learning_rate is 0.001 there and 0.0003 here",
      "config.train.steps is 600 there and 900 here"]


def test_the_library_version_may_change():
  newer = metadata()
  newer["versions"]["electra_jax"] = "9.9.9"
  assert loop.check_continuation(metadata(), newer, False, "the checkpoint") == []


# ---------------------------------------------------------------------------
# Room to save
# ---------------------------------------------------------------------------


def test_a_full_disk_is_refused_before_training(tmp_path, monkeypatch):
  usage = shutil.disk_usage(tmp_path)
  monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=5 * 2**20))
  with pytest.raises(UserError, match="has 5.0 MiB free but one checkpoint takes 40.0 MiB"):
    checkpointing.check_space(str(tmp_path / "checkpoints"), 40 * 2**20)
  checkpointing.check_space(str(tmp_path / "checkpoints"), 4 * 2**20)


def test_an_unwritable_checkpoint_directory_is_refused(tmp_path):
  (tmp_path / "file").write_text("not a directory")
  with pytest.raises(UserError, match="cannot write to workdir .*file/checkpoints"):
    checkpointing.check_space(str(tmp_path / "file" / "checkpoints"), 1)


@pytest.mark.parametrize("field, value, allowed", [
    ("train.on_nonfinite", "ignore", "one of stop, skip"),
    ("checkpoint.every_steps", 0, "a positive integer"),
    ("checkpoint.keep", 0, "a positive integer"),
    ("checkpoint.keep_every", -5, "an integer >= 0"),
])
def test_checkpoint_settings_are_validated(field, value, allowed):
  config = load_config("tiny")
  section, name = field.split(".")
  config[section][name] = value
  with pytest.raises(ConfigError, match=f"'{field}' = .* must be {allowed}"):
    config_lib.validate(config)


def test_orbax_info_lines_that_name_a_checkpoint_are_no_sign_of_damage():
  """Orbax's INFO lines name the files it reads ("Read Metadata=... from <step>/..."): only
  its warnings and errors, held while a checkpoint is read, may say a file is damaged."""
  pathname = os.path.join(os.sep, "site-packages", "orbax", "checkpoint", "metadata.py")
  record = lambda level, message: logging.LogRecord("absl", level, pathname, 1, message, None,
                                                    None)
  with checkpointing._QUIET_ORBAX.holding() as held:  # pylint: disable=protected-access
    assert not checkpointing._QUIET_ORBAX.filter(  # pylint: disable=protected-access
        record(logging.INFO, "Read Metadata={} from /run/checkpoints/10/_CHECKPOINT_METADATA"))
    assert not checkpointing._QUIET_ORBAX.filter(  # pylint: disable=protected-access
        record(logging.ERROR, "Failed to json parse Metadata file: /run/checkpoints/10/x"))
  assert held == ["Failed to json parse Metadata file: /run/checkpoints/10/x"]
