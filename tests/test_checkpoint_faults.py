"""A fault-injection matrix over the newest checkpoint: every kind of file Orbax writes, each
truncated, zero-filled, deleted, or with a byte flipped in the middle; kills during
asynchronous saves; fine-tuning's checkpoints. docs/checkpoint_faults.md has the table.

In every cell the restart reads a state equal to one that was saved, never a damaged one:
where the damage touches what the state is read from, the checkpoint is reported in one
warning line, set aside as `<step>.unreadable`, and the one before it is used; where it
touches only Orbax's bookkeeping, the state still matches the checksums saved with it and
the checkpoint is used (with one warning line where Orbax noticed).
"""

import contextlib
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import finetune_helpers as helpers
from checkpoint_states import ABSTRACT, assert_state_is, state_at
from conftest import REPO
from electra_jax.errors import UserError
from electra_jax.finetune import resume, trainer
from electra_jax.runtime import checkpointing

# Each kind of file in a checkpoint (one process), relative to its step directory.
FILES = {
    "OCDBT data": "state/ocdbt.process_0/d/*",
    "root OCDBT data": "state/d/*",
    "OCDBT manifest": "state/manifest.ocdbt",
    "process manifest": "state/ocdbt.process_0/manifest.ocdbt",
    "_METADATA": "state/_METADATA",
    "_sharding": "state/_sharding",
    "array_metadatas": "state/array_metadatas/*",
    "run metadata item": "metadata/metadata",
    "loader position item": "loader/metadata",
    "commit_success.txt": "**/commit_success.txt",
    "_CHECKPOINT_METADATA": "_CHECKPOINT_METADATA",
}
FAULTS = ("truncated", "zero-filled", "deleted", "flipped")
# The files the state or the run's position is read from: damage to any of them must cost the
# checkpoint. Damage to the others (Orbax's bookkeeping) may leave it readable, its state
# matching its checksums; which of them Orbax needs depends on its version and on the state.
READ_FROM = ("OCDBT data", "root OCDBT data", "OCDBT manifest", "run metadata item",
             "loader position item")


def inject(step_dir: Path, pattern: str, fault: str) -> None:
  paths = [p for p in step_dir.glob(pattern) if p.is_file()]
  assert paths, pattern
  for path in paths:
    data = bytearray(path.read_bytes())
    if fault == "deleted":
      path.unlink()
      continue
    if fault == "truncated":
      data = data[:len(data) // 2]
    elif fault == "zero-filled":
      data = bytearray(len(data))
    else:
      data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(name="saved", scope="module")
def fixture_saved(tmp_path_factory):
  """Checkpoints of steps 1, 2 and 3, saved asynchronously as a run saves them."""
  directory = tmp_path_factory.mktemp("saved")
  checkpoints = checkpointing.Checkpointer(str(directory), every_steps=1, keep=5)
  for step in (1, 2, 3):
    checkpoints.save(step, state_at(step), {"next_index": step}, {"run": "a"})
  checkpoints.close()
  return directory


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("kind", FILES)
def test_a_damaged_newest_checkpoint_never_restores_a_damaged_state(tmp_path, saved, kind,
                                                                     fault, caplog):
  directory = tmp_path / "checkpoints"
  shutil.copytree(saved, directory)
  inject(directory / "3", FILES[kind], fault)
  with caplog.at_level(logging.WARNING):
    checkpoints = checkpointing.Checkpointer(str(directory), every_steps=1, keep=5)
    restored = checkpoints.restore_latest(ABSTRACT)
  checkpoints.close()
  warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  if kind in READ_FROM:
    assert restored.step == 2, "the damaged checkpoint was trusted"
  if restored.step == 3:  # read whole: its state matches its checksums (checked below)
    assert not (directory / "3.unreadable").exists()
    assert len(warnings) <= 1 and all("step 3 has damaged files" in w for w in warnings)
  else:
    assert (directory / "3.unreadable").is_dir() and not (directory / "3").exists()
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("The checkpoint of step 3 cannot be read (")
    assert "using step 2 instead" in warnings[0]
  assert_state_is(restored.state, restored.step)
  assert restored.loader_state == {"next_index": restored.step}


RESTORE = """
import sys, jax
from electra_jax.runtime import checkpointing
sys.path.insert(0, "tests")
from checkpoint_states import ABSTRACT
checkpoints = checkpointing.Checkpointer(sys.argv[1], every_steps=1, keep=5)
print("restored", checkpoints.restore_latest(ABSTRACT).step)
checkpoints.close()
"""


@pytest.mark.parametrize("kind, fault", [("OCDBT data", "truncated"), ("OCDBT data", "deleted"),
                                         ("array_metadatas", "zero-filled"),
                                         ("_CHECKPOINT_METADATA", "zero-filled")])
def test_the_console_gets_one_warning_line_and_no_traceback(tmp_path, saved, kind, fault):
  """In a process of its own, as a restart runs: Orbax's reader threads and failed reads
  leave errors behind that must not reach the console."""
  shutil.copytree(saved, tmp_path / "checkpoints")
  inject(tmp_path / "checkpoints" / "3", FILES[kind], fault)
  result = subprocess.run([sys.executable, "-c", RESTORE, str(tmp_path / "checkpoints")],
                          cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
  assert len([line for line in result.stderr.splitlines() if "WARNING" in line]) == 1, (
      result.stderr)


def test_a_checkpoint_saved_before_checksums_existed_restores(tmp_path, saved):
  shutil.copytree(saved, tmp_path / "checkpoints")
  checkpoints = checkpointing.Checkpointer(str(tmp_path / "checkpoints"), every_steps=1, keep=5)
  original = checkpointing.state_checksums.compute
  try:  # as an older version saved it: the metadata without checksums
    checkpointing.state_checksums.compute = lambda state: None
    checkpoints.save(4, state_at(4), {"next_index": 4}, {"run": "a"})
    checkpoints.wait()
  finally:
    checkpointing.state_checksums.compute = original
  restored = checkpoints.restore_latest(ABSTRACT)
  checkpoints.close()
  assert restored.step == 4 and restored.metadata == {"run": "a"}
  assert_state_is(restored.state, 4)


# A run that saves asynchronously as fast as it can, printing each step whose save is complete.
SAVING = """
import sys, jax, jax.numpy as jnp
from electra_jax.runtime import checkpointing
sys.path.insert(0, "tests")
from checkpoint_states import state_at
checkpoints = checkpointing.Checkpointer(sys.argv[1], every_steps=1, keep=3)
padding = jax.random.normal(jax.random.key(0), (1024, 1024))  # 4 MiB a save
for step in range(1, 10_000):
  state = dict(state_at(step), padding=padding + step)
  checkpoints.save(step, state, {"next_index": step}, {"run": "a"})
  if step > 1:
    print("complete", step - 1, flush=True)  # the previous save finished before this one began
"""


def kill_during_saves(directory: Path, seed: int) -> tuple[int, int]:
  """Kills the saving run at a random moment; (the last step it knew complete, the step the
  restart restores)."""
  process = subprocess.Popen([sys.executable, "-c", SAVING, str(directory)], cwd=REPO,
                             env=dict(os.environ, JAX_PLATFORMS="cpu"), stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
  complete = 0
  deadline = time.monotonic() + 60
  while complete < 2 and time.monotonic() < deadline:  # at least two saves done, then at random
    complete = int(process.stdout.readline().split()[1])
  time.sleep(random.Random(seed).uniform(0.0, 1.5))
  process.send_signal(signal.SIGKILL)
  complete = max([complete] + [int(line.split()[1]) for line in process.stdout])
  process.wait()
  abstract = dict(ABSTRACT, padding=jax.ShapeDtypeStruct((1024, 1024), jnp.float32))
  checkpoints = checkpointing.Checkpointer(str(directory), every_steps=1, keep=3)
  restored = checkpoints.restore_latest(abstract)
  checkpoints.close()
  padding = restored.state.pop("padding")
  assert_state_is(restored.state, restored.step)
  np.testing.assert_array_equal(
      padding, jax.random.normal(jax.random.key(0), (1024, 1024)) + restored.step)
  return complete, restored.step


@pytest.mark.parametrize("trial", [
    *range(3), *(pytest.param(trial, marks=pytest.mark.slow) for trial in range(3, 20))])
def test_a_kill_at_any_moment_of_asynchronous_saves_loses_at_most_the_unsaved_steps(tmp_path,
                                                                                     trial):
  complete, restored = kill_during_saves(tmp_path, seed=trial)
  assert restored >= complete  # every save known complete survives the kill


@pytest.mark.parametrize("kind, fault", [
    ("OCDBT data", "truncated"),
    *(pytest.param(*cell, marks=pytest.mark.slow)  # ~8 s each
      for cell in (("OCDBT data", "deleted"), ("run metadata item", "truncated")))])
def test_fine_tuning_falls_back_to_the_checkpoint_before_and_ends_as_uninterrupted(
    tmp_path, kind, fault):
  init = helpers.export_model(tmp_path / "model", num_layers=1)
  helpers.write_sst2(tmp_path / "glue", train=32, dev=16)
  config = helpers.config("sst2", init, str(tmp_path / "glue"), epochs=2)
  config.checkpoint.update(every_steps=2, keep=10)
  uninterrupted = trainer.finetune(config, str(tmp_path / "uninterrupted"))
  workdir = tmp_path / "run"
  with resume.RunCheckpoints(config, str(workdir)) as checkpointer:
    trainer.finetune(config, str(workdir), checkpointer)
  newest = max(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  for later in (p for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()):
    if int(later.name) > newest - 4:  # keep the checkpoint of step newest - 4 and before
      inject(later, FILES[kind], fault)
  (workdir / "results.json").unlink()  # as if the run had stopped before its end
  with resume.RunCheckpoints(config, str(workdir)) as checkpointer:
    results = trainer.finetune(config, str(workdir), checkpointer)
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()
                if p.name.endswith(".unreadable")) == sorted(
                    f"{step}.unreadable" for step in range(newest - 2, newest + 1, 2))
  assert results["history"] == uninterrupted["history"]


@contextlib.contextmanager
def small_filesystem(path: Path, size: str):
  """A tmpfs of `size` mounted at `path` (root only, where the machine allows mounting)."""
  path.mkdir()
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                           capture_output=True, check=False)
  if mounted.returncode:
    pytest.skip(f"cannot mount a small filesystem here: {mounted.stderr.decode().strip()}")
  try:
    yield path
  finally:
    subprocess.run(["umount", str(path)], check=True)


def save_until_it_fails(directory: Path) -> int:
  """Saves 1 MiB states until a save fails; the step whose save was the last to begin."""
  checkpoints = checkpointing.Checkpointer(str(directory), every_steps=1, keep=100)
  padding = jax.random.normal(jax.random.key(0), (256, 1024))
  step = 0
  with pytest.raises(UserError) as failure:
    for step in range(1, 50):
      checkpoints.save(step, dict(state_at(step), padding=padding + step), {"next_index": step},
                       {"run": "a"})
    checkpoints.close()
  return step, str(failure.value)


def restore_after_failure(directory: Path) -> int:
  abstract = dict(ABSTRACT, padding=jax.ShapeDtypeStruct((256, 1024), jnp.float32))
  checkpoints = checkpointing.Checkpointer(str(directory), every_steps=1, keep=100)
  restored = checkpoints.restore_latest(abstract)
  checkpoints.close()
  restored.state.pop("padding")
  assert_state_is(restored.state, restored.step)
  assert not [p for p in directory.iterdir() if "tmp" in p.name]  # the failed save is gone
  return restored.step


def test_a_full_disk_during_a_save_ends_in_one_line_and_the_newest_complete_one_restores(
    tmp_path):
  with small_filesystem(tmp_path / "small", "3m") as disk:
    step, message = save_until_it_fails(disk / "checkpoints")
    newest = int(re.search(r"the newest complete checkpoint is step (\d+)", message)[1])
    assert "No space left on device, errno 28" in message and newest < step
    assert restore_after_failure(disk / "checkpoints") == newest


def test_a_directory_gone_read_only_mid_run_ends_in_one_line_and_loses_nothing_saved(tmp_path):
  with small_filesystem(tmp_path / "disk", "64m") as disk:
    checkpoints = checkpointing.Checkpointer(str(disk / "checkpoints"), every_steps=1, keep=10)
    for step in (1, 2):
      checkpoints.save(step, state_at(step), {"next_index": step}, {"run": "a"})
    checkpoints.wait()
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    try:
      with pytest.raises(UserError, match=r"Read-only file system, errno 30\); the newest "
                         r"complete checkpoint is step 2"):
        checkpoints.save(3, state_at(3), {"next_index": 3}, {"run": "a"})
        checkpoints.close()
    finally:
      subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
    checkpoints = checkpointing.Checkpointer(str(disk / "checkpoints"), every_steps=1, keep=10)
    restored = checkpoints.restore_latest(ABSTRACT)
    checkpoints.close()
    assert restored.step == 2
    assert_state_is(restored.state, 2)
