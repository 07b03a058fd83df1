"""Never lose a run: the pre-training CLI killed, preempted, moved to other devices, fed a NaN.

Every CLI run here trains the same small model on the same corpus with a
loss logged at every step. The reference runs uninterrupted; the others are
stopped and started again with the very same command, and must log the very
same losses. Subprocesses share a compilation cache, so that only the first
run of each mesh compiles.
"""

import json
import shutil
import signal
import subprocess
import sys
import time

import flax.serialization
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import REPO, cpu_env, load_config, make_documents, write_corpus
from electra_jax.errors import UserError
from electra_jax.pretraining import loop

STEPS = 80
EVERY = 10
KEEP_EVERY = 20
SHARDED_RELATIVE_TOLERANCE = 1e-5  # other meshes differ only in the order of reductions
STOP_SECONDS = 30  # from SIGTERM to exit, generous for a loaded 2-core machine


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("resume")
  corpus = write_corpus(tmp / "corpus.txt", make_documents(60))
  return dict(tmp=tmp, corpus=corpus, cache=str(tmp / "compilation-cache"))


def command(shared, workdir, *flags: str) -> list[str]:
  return [sys.executable, "-m", "electra_jax.train", "--config=configs/tiny.py",
          f"--workdir={workdir}", f"--config.data.source={shared['corpus']}",
          "--config.model.vocab_size=200", "--config.data.max_seq_length=32",
          "--config.optim.warmup_steps=5", f"--config.train.steps={STEPS}",
          "--config.train.batch_size=8", "--config.train.log_every=1",
          "--config.train.eval_every=0", "--config.train.eval_batches=2",
          f"--config.checkpoint.every_steps={EVERY}", "--config.checkpoint.keep=3",
          f"--config.checkpoint.keep_every={KEEP_EVERY}", *flags]


def environment(shared, devices: int = 1) -> dict[str, str]:
  return cpu_env(devices, JAX_COMPILATION_CACHE_DIR=shared["cache"],
                 JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")


def start(shared, workdir, *flags: str, devices: int = 1) -> subprocess.Popen:
  return subprocess.Popen(command(shared, workdir, *flags), cwd=REPO,
                          env=environment(shared, devices), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)


def run(shared, workdir, *flags: str, devices: int = 1) -> subprocess.CompletedProcess:
  return subprocess.run(command(shared, workdir, *flags), cwd=REPO,
                        env=environment(shared, devices), capture_output=True, text=True,
                        timeout=600)


def finished(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def train_lines(workdir) -> list[dict]:
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def losses(workdir, first_step: int = 1) -> dict[int, float]:
  return {m["step"]: m["loss"] for m in train_lines(workdir)
          if m["split"] == "train" and m["step"] >= first_step}


def lines_written(workdir) -> int:
  path = workdir / "metrics.jsonl"
  return path.read_text().count("\n") if path.exists() else 0


def checkpoint_steps(workdir) -> list[int]:
  directory = workdir / "checkpoints"
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if (
      directory.exists()) else []


def read_checkpoint(workdir, step: int) -> dict:
  """The train state saved at `step`, as plain arrays."""
  with ocp.StandardCheckpointer() as checkpointer:
    return checkpointer.restore(workdir / "checkpoints" / str(step) / "state")


def wait_for(condition, process: subprocess.Popen, what: str) -> None:
  while not condition():
    assert process.poll() is None, f"the run ended before {what}: {process.stderr.read()[-3000:]}"
    time.sleep(0.01)


@pytest.fixture(scope="module")
def reference(shared):
  workdir = shared["tmp"] / "reference"
  finished(run(shared, workdir))
  return workdir


# ---------------------------------------------------------------------------
# Stopped and started again
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def interrupted(shared, reference):
  """One run stopped by SIGTERM, by Ctrl-C and killed by SIGKILL, each time started again
  with the same command, and finally run to the end."""
  del reference  # run first: it fills the compilation cache
  workdir = shared["tmp"] / "interrupted"
  facts = {}
  process = start(shared, workdir)
  wait_for(lambda: lines_written(workdir) >= 3, process, "step 3")
  signalled = time.perf_counter()
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=120)
  facts.update(term_returncode=process.returncode, term_stderr=stderr,
               term_seconds=time.perf_counter() - signalled,
               term_checkpoints=checkpoint_steps(workdir), term_last_step=max(losses(workdir)),
               term_params=(workdir / "params.msgpack").exists())

  process = start(shared, workdir)  # the same command
  ctrl_c_after = max(losses(workdir)) + 2
  wait_for(lambda: max(losses(workdir)) >= ctrl_c_after, process, f"step {ctrl_c_after}")
  process.send_signal(signal.SIGINT)
  _, stderr = process.communicate(timeout=120)
  facts.update(ctrl_c_returncode=process.returncode, ctrl_c_stderr=stderr,
               ctrl_c_checkpoints=checkpoint_steps(workdir), ctrl_c_last_step=max(losses(workdir)))

  process = start(shared, workdir)  # the same command
  resumed_from = max(checkpoint_steps(workdir))
  wait_for(lambda: any(s > resumed_from for s in checkpoint_steps(workdir)), process,
           "a checkpoint after the restart")
  process.send_signal(signal.SIGKILL)
  process.communicate(timeout=60)
  facts.update(kill_checkpoints=checkpoint_steps(workdir),
               kill_params=(workdir / "params.msgpack").exists())

  facts["final_stderr"] = finished(run(shared, workdir)).stderr  # the same command again
  facts["workdir"] = workdir
  return facts


def test_sigterm_saves_at_the_next_step_and_exits_0_within_seconds(interrupted):
  assert interrupted["term_returncode"] == 0, interrupted["term_stderr"][-3000:]
  assert interrupted["term_seconds"] < STOP_SECONDS
  stopped = interrupted["term_last_step"]
  assert stopped < STEPS and not interrupted["term_params"]
  assert interrupted["term_checkpoints"][-1] == stopped  # saved where it stopped
  assert f"Stopped at step {stopped} on SIGTERM, with a checkpoint" in interrupted["term_stderr"]


def test_ctrl_c_saves_at_the_next_step_and_exits_130_with_one_line(interrupted):
  stopped = interrupted["ctrl_c_last_step"]
  assert interrupted["ctrl_c_returncode"] == 130, interrupted["ctrl_c_stderr"][-3000:]
  assert interrupted["ctrl_c_checkpoints"][-1] == stopped < STEPS
  assert "Traceback" not in interrupted["ctrl_c_stderr"]
  last_line = interrupted["ctrl_c_stderr"].strip().splitlines()[-1]
  assert last_line == (f"Stopped at step {stopped} on Ctrl-C, with a checkpoint: run the same "
                       "command again to continue")


def test_sigkill_mid_run_then_the_same_command_repeats_the_uninterrupted_run_bit_for_bit(
    interrupted, reference):
  killed = interrupted["kill_checkpoints"]
  assert killed[-1] < STEPS and not interrupted["kill_params"]  # killed mid-run
  assert f"Continuing from the checkpoint of step {killed[-1]}" in interrupted["final_stderr"]
  workdir = interrupted["workdir"]
  # Every logged number but the speed, at every step, is the uninterrupted run's.
  strip = lambda lines: [{k: v for k, v in m.items() if k not in ("tokens_per_s", "mfu")}
                         for m in lines]
  assert strip(train_lines(workdir)) == strip(train_lines(reference))
  assert len(losses(workdir)) == STEPS
  assert (workdir / "params.msgpack").read_bytes() == (reference / "params.msgpack").read_bytes()


def test_checkpoints_are_kept_as_configured(reference, interrupted):
  # keep=3 newest, and every 20th for good.
  assert checkpoint_steps(reference) == [20, 40, 60, 70, 80]
  assert checkpoint_steps(interrupted["workdir"]) == [20, 40, 60, 70, 80]


# ---------------------------------------------------------------------------
# Another device count and mesh
# ---------------------------------------------------------------------------


def interrupted_copy(source, destination, after_step: int):
  """A copy of a finished run as if it had been killed just after its checkpoint `after_step`."""
  shutil.copytree(source, destination)
  for step in checkpoint_steps(destination):
    if step > after_step:
      shutil.rmtree(destination / "checkpoints" / str(step))
  (destination / "params.msgpack").unlink()
  return destination


@pytest.fixture(scope="module")
def one_to_eight(shared, reference):
  workdir = interrupted_copy(reference, shared["tmp"] / "one-to-eight", 60)
  result = finished(run(shared, workdir, "--config.mesh.data=2", "--config.mesh.fsdp=2",
                        "--config.mesh.tensor=2", devices=8))
  return workdir, result.stderr


def test_a_one_device_checkpoint_continues_on_eight_devices(one_to_eight, reference):
  workdir, log = one_to_eight
  assert "Continuing from the checkpoint of step 60" in log and "(8 devices)" in log
  assert sorted(losses(workdir)) == list(range(1, STEPS + 1))
  expected = losses(reference, 61)
  np.testing.assert_allclose([losses(workdir)[s] for s in expected], list(expected.values()),
                             rtol=SHARDED_RELATIVE_TOLERANCE, atol=0)


def test_an_eight_device_checkpoint_continues_on_one_device(shared, one_to_eight, reference):
  eight, _ = one_to_eight
  workdir = interrupted_copy(eight, shared["tmp"] / "eight-to-one", 70)
  log = finished(run(shared, workdir)).stderr
  assert "Continuing from the checkpoint of step 70" in log and "(1 devices)" in log
  expected = losses(reference, 71)
  np.testing.assert_allclose([losses(workdir)[s] for s in expected], list(expected.values()),
                             rtol=SHARDED_RELATIVE_TOLERANCE, atol=0)


# ---------------------------------------------------------------------------
# A workdir of another config, or of another model
# ---------------------------------------------------------------------------


def assert_refused(result, *fragments):
  assert result.returncode == 2, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1, result.stderr[-3000:]
  for fragment in fragments:
    assert fragment in errors[0], errors[0]


@pytest.fixture
def finished_copy(shared, reference, tmp_path):
  shutil.copytree(reference, tmp_path / "run")
  return tmp_path / "run"


@pytest.mark.slow  # ~29 s; tests/test_checkpoint.py checks the same rules without training
def test_a_workdir_of_another_config_is_refused_unless_allowed(shared, finished_copy):
  before = sorted(p.name for p in finished_copy.rglob("*"))
  result = run(shared, finished_copy, f"--config.train.steps={STEPS + 5}")
  assert_refused(result, "was made with a different config",
                 f"config.train.steps is {STEPS} there and {STEPS + 5} here",
                 "--config.checkpoint.allow_config_change=True")
  assert sorted(p.name for p in finished_copy.rglob("*")) == before  # nothing written

  log = finished(run(shared, finished_copy, f"--config.train.steps={STEPS + 5}",
                     "--config.checkpoint.allow_config_change=True")).stderr
  assert f"Continuing from the checkpoint of step {STEPS}" in log
  assert sorted(losses(finished_copy)) == list(range(1, STEPS + 6))


def test_a_workdir_of_another_model_is_refused_even_when_changes_are_allowed(shared,
                                                                           finished_copy):
  result = run(shared, finished_copy, "--config.model.hidden_size=64",
               "--config.checkpoint.allow_config_change=True")
  assert_refused(result, "is of another model or tokenizer",
                 "config.model.hidden_size is 128 there and 64 here")


def test_a_checkpoint_of_another_tokenizer_is_refused(shared, finished_copy):
  # As if someone had put another corpus and tokenizer into the workdir of a run.
  (finished_copy / "config.json").unlink()
  (finished_copy / "tokenizer.model").unlink()
  shutil.rmtree(finished_copy / "data")
  other_corpus = write_corpus(finished_copy.parent / "other.txt",
                              make_documents(100, extra=" Zyx wob."))
  result = run(shared, finished_copy, f"--config.data.source={other_corpus}")
  assert_refused(result, f"the checkpoint of step {STEPS}", "is of another model or tokenizer",
                 "tokenizer_sha256 is '")
  assert checkpoint_steps(finished_copy) == [20, 40, 60, 70, 80]


# ---------------------------------------------------------------------------
# In this process: a NaN in the middle of a run, a full disk
# ---------------------------------------------------------------------------

NAN_STEP = 3


class NanAtStep:
  """The loader's iterator, but the batch of one step has a token id past the vocabulary.

  The embedding lookup turns it into NaN (jnp.take fills out-of-range rows),
  as corrupted data would; loss and gradient follow.
  """

  def __init__(self, iterator, step: int, vocab_size: int):
    self._iterator, self._step, self._vocab_size = iterator, step, vocab_size

  def __next__(self) -> dict:
    batch = next(self._iterator)
    if self._iterator.get_state()["next_index"] == self._step:
      batch = dict(batch, input_ids=batch["input_ids"].copy())
      batch["input_ids"][0, 1] = self._vocab_size + 7
    return batch

  def get_state(self) -> dict:
    return self._iterator.get_state()

  def set_state(self, state: dict) -> None:
    self._iterator.set_state(state)


@pytest.fixture(scope="module")
def compile_once():
  """compile_training and compile_eval_step, compiled on first use and then reused.

  The runs below differ only in what the loop does around the step, so one
  compilation serves them all (compiling takes most of their time).
  """
  compiled = {}
  originals = {name: getattr(loop.train_step_lib, name)
               for name in ("compile_training", "compile_eval_step")}
  for name, original in originals.items():
    def reuse(*args, name=name, original=original):
      if name not in compiled:
        compiled[name] = original(*args)
      return compiled[name]
    setattr(loop.train_step_lib, name, reuse)
  yield
  for name, original in originals.items():
    setattr(loop.train_step_lib, name, original)


@pytest.fixture
def small_run(shared, compile_once, tmp_path):
  """A config of a few steps of a smaller model, trained in this process; its workdir."""
  del compile_once
  config = load_config("tiny")
  config.model.vocab_size, config.data.max_seq_length = 200, 32
  config.model.hidden_size = config.model.embedding_size = 64
  config.model.intermediate_size, config.model.num_layers = 128, 1
  config.data.source, config.data.dir = shared["corpus"], str(shared["tmp"] / "small-run-data")
  config.train.steps, config.train.batch_size, config.optim.warmup_steps = 6, 8, 2
  config.train.eval_every, config.train.eval_batches = 0, 1
  config.checkpoint.every_steps, config.checkpoint.keep = 2, 10
  return config, tmp_path / "run"


@pytest.fixture
def nan_run(small_run, monkeypatch):
  iterator = loop.loader.train_iterator
  monkeypatch.setattr(loop.loader, "train_iterator", lambda data, batch_size, *args, **kwargs:
                      NanAtStep(iterator(data, batch_size, *args, **kwargs), NAN_STEP, 200))
  return small_run


@pytest.mark.slow  # ~37 s; the default policy (stop at a NaN step) runs by default
def test_a_nan_step_is_skipped_and_training_goes_on(nan_run, caplog):
  config, workdir = nan_run
  config.train.on_nonfinite, config.train.log_every, config.checkpoint.every_steps = "skip", 1, 1
  with caplog.at_level("WARNING"):
    loop.train_and_evaluate(config, str(workdir))
  assert (f"Step {NAN_STEP}: gen_loss is nan, disc_loss is nan, loss is nan, grad_norm is nan; "
          "skipped its update (train.on_nonfinite=skip)") in caplog.text
  logged = losses(workdir)
  assert np.isnan(logged[NAN_STEP]) and all(
      np.isfinite(v) for s, v in logged.items() if s != NAN_STEP)
  params = flax.serialization.msgpack_restore((workdir / "params.msgpack").read_bytes())
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params))
  # The bad step changed nothing but the step counter.
  before, after = (read_checkpoint(workdir, step) for step in (NAN_STEP - 1, NAN_STEP))
  assert int(before["step"]) == NAN_STEP - 1 and int(after["step"]) == NAN_STEP
  for a, b in zip(jax.tree.leaves((before["params"], before["opt_state"])),
                  jax.tree.leaves((after["params"], after["opt_state"]))):
    np.testing.assert_array_equal(a, b)


def test_a_nan_step_stops_the_run_with_the_last_good_checkpoint(nan_run):
  config, workdir = nan_run
  config.train.on_nonfinite, config.train.log_every = "stop", 5  # found when saving step 4
  with pytest.raises(UserError, match=f"step {NAN_STEP}: .*loss is nan.*on_nonfinite=stop\\); the "
                     "newest checkpoint, of step 2, is from before it"):
    loop.train_and_evaluate(config, str(workdir))
  assert checkpoint_steps(workdir) == [2] and not (workdir / "params.msgpack").exists()


def test_a_full_disk_stops_the_run_before_training(small_run, monkeypatch):
  config, workdir = small_run
  usage = shutil.disk_usage("/")
  monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=2**18))
  with pytest.raises(UserError, match=r"has 0.2 MiB free but one checkpoint takes 1.\d MiB"):
    loop.train_and_evaluate(config, str(workdir))
  assert not (workdir / "metrics.jsonl").exists() and checkpoint_steps(workdir) == []
