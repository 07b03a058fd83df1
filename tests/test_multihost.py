"""Processes on localhost join one run; two of them train exactly as one process with all devices.

Each process has 4 simulated CPU devices and joins the others through
jax.distributed (gloo collectives); the reference is one process with 8. The
mesh (fsdp 4 x tensor 2) spans both processes, so each holds half of every
batch and a share of every parameter. Fine-tuning joins the same way: two
processes of one device each against one process of two.
"""

import functools
import json
import signal
import socket
import subprocess
import sys
import time

import finetune_helpers
import flax.serialization
import jax
import numpy as np
import pytest

from conftest import REPO, cpu_env, load_config, make_documents, write_corpus
from electra_jax.models import electra
from electra_jax.pretraining import optim, train_step as train_step_lib
from electra_jax.runtime import checkpointing, sharding

STEPS = 10
RELATIVE_TOLERANCE = 1e-5


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def start_train(workdir, corpus, devices: int, *flags: str) -> subprocess.Popen:
  env = cpu_env(devices)
  overrides = dict(steps=STEPS, log_every=1, eval_every=0, eval_batches=2, batch_size=8)
  return subprocess.Popen(
      [sys.executable, "-m", "electra_jax.train", "--config=configs/tiny.py",
       f"--workdir={workdir}", f"--config.data.source={corpus}", "--config.model.vocab_size=200",
       "--config.data.max_seq_length=32", "--config.optim.warmup_steps=5",
       "--config.mesh.data=1", "--config.mesh.fsdp=4", "--config.mesh.tensor=2",
       *(f"--config.train.{k}={v}" for k, v in overrides.items()), *flags],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(processes: list[subprocess.Popen]) -> list[tuple[str, str]]:
  """Waits for all; their (stdout, stderr). A failure in one stops the others."""
  try:
    outputs = [p.communicate(timeout=600) for p in processes]
  finally:
    for p in processes:
      if p.poll() is None:
        p.kill()
  for p, (_, err) in zip(processes, outputs):
    assert p.returncode == 0, err[-3000:]
  return outputs


# ---------------------------------------------------------------------------
# Joining: from the cluster's environment, or alone
# ---------------------------------------------------------------------------

JOIN = ("from electra_jax.runtime import distributed; distributed.initialize_distributed(); "
        "import jax; "
        "print(jax.process_index(), jax.process_count(), jax.device_count())")


def join(environments: list[dict[str, str]]) -> list[str]:
  processes = [subprocess.Popen([sys.executable, "-c", JOIN], cwd=REPO, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for env in environments]
  return [out.strip() for out, _ in finish(processes)]


def slurm_task(task: int, tasks: int, port: int) -> dict[str, str]:
  """What srun sets for one task of a job on this host (the port is JAX's override)."""
  return cpu_env(4, SLURM_JOB_ID="1234", SLURM_STEP_NODELIST="localhost",
                 SLURM_NTASKS=str(tasks), SLURM_PROCID=str(task), SLURM_LOCALID=str(task),
                 JAX_COORDINATOR_PORT=str(port))


def test_slurm_tasks_join_without_flags():
  port = free_port()
  assert join([slurm_task(i, 2, port) for i in range(2)]) == ["0 2 8", "1 2 8"]


def test_without_a_cluster_or_with_one_slurm_task_a_process_runs_alone():
  assert join([cpu_env(4), slurm_task(0, 1, free_port())]) == ["0 1 4", "0 1 4"]


# ---------------------------------------------------------------------------
# Training together
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("multihost")
  corpus = write_corpus(tmp / "corpus.txt", make_documents(60))
  port = free_port()
  processes = [start_train(tmp / "one", corpus, 8)] + [
      start_train(tmp / "two", corpus, 4, f"--coordinator_address=localhost:{port}",
                  "--num_processes=2", f"--process_id={i}") for i in range(2)]
  _, *logs = [err for _, err in finish(processes)]
  return tmp / "one", tmp / "two", logs


def metrics(workdir) -> list[dict]:
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_match_one_process_step_by_step(runs):
  one, two, _ = runs
  reference, pair = metrics(one), metrics(two)
  # Written once (by process 0 alone): one line per step, then the evaluation.
  assert [(m["split"], m["step"]) for m in pair] == (
      [("train", s) for s in range(1, STEPS + 1)] + [("eval", STEPS)])
  assert [(m["split"], m["step"]) for m in reference] == [(m["split"], m["step"]) for m in pair]
  losses = lambda ms: [m["loss"] for m in ms]
  assert losses(reference)[0] > losses(reference)[-2]  # it trains
  np.testing.assert_allclose(losses(pair), losses(reference), rtol=RELATIVE_TOLERANCE, atol=0)
  np.testing.assert_allclose(pair[-1]["disc_auc"], reference[-1]["disc_auc"], rtol=1e-4)


def test_final_parameters_are_gathered_and_equal(runs):
  one, two, _ = runs
  read = lambda w: flax.serialization.msgpack_restore((w / "params.msgpack").read_bytes())
  for a, b in zip(jax.tree.leaves(read(one)), jax.tree.leaves(read(two))):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_only_process_zero_writes_and_logs(runs):
  _, two, (log0, log1) = runs
  assert sorted(p.name for p in two.iterdir()) == [
      "checkpoints", "config.json", "data", "metrics.jsonl", "params.msgpack", "tensorboard",
      "tokenizer.model"]
  assert "Process 0 of 2 joined" in log0 and "(8 devices)" in log0
  assert f"step {STEPS}/{STEPS}" in log0 and "Wrote the final parameters" in log0
  assert "Process 1 of 2 joined" in log1
  assert "step 1/" not in log1 and "Wrote the final" not in log1 and "tokenizer" not in log1


def test_both_processes_save_one_checkpoint_that_restores_on_one_device(runs):
  """The final checkpoint (each process wrote its shards) read into this process's one device."""
  _, two, _ = runs
  config = load_config("tiny")
  config.model.vocab_size, config.data.max_seq_length, config.optim.warmup_steps = 200, 32, 5
  config.train.steps, config.train.batch_size = STEPS, 8
  init = functools.partial(train_step_lib.create_train_state, config,
                           electra.build_pretrainer(config), optim.build_optimizer(config))
  abstract, _ = sharding.abstract_sharded(init, sharding.create_mesh(config.mesh),
                                          sharding.axis_rules(config.mesh))
  checkpoints = checkpointing.Checkpointer(str(two / "checkpoints"), every_steps=1, keep=1)
  restored = checkpoints.restore_latest(abstract)
  checkpoints.close()
  assert restored.step == STEPS and restored.loader_state == {"next_index": STEPS}
  assert int(restored.state.step) == STEPS
  params = flax.serialization.msgpack_restore((two / "params.msgpack").read_bytes())
  for a, b in zip(jax.tree.leaves(restored.state.params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_one_step_with_a_checkpoint(tmp_path):
  corpus = write_corpus(tmp_path / "corpus.txt", make_documents(60))
  port = free_port()
  processes = [start_train(tmp_path / "run", corpus, 4, f"--coordinator_address=localhost:{port}",
                           "--num_processes=2", f"--process_id={i}", "--config.train.steps=1000")
               for i in range(2)]
  metrics_file = tmp_path / "run" / "metrics.jsonl"
  while not (metrics_file.exists() and metrics_file.read_text().count("\n") >= 3):
    assert all(p.poll() is None for p in processes), processes[0].stderr.read()[-3000:]
    time.sleep(0.05)
  processes[1].send_signal(signal.SIGTERM)  # what one preempted host receives
  logs = [err for _, err in finish(processes)]  # both exit 0
  stopped = [int(log.split("Stopped at step ")[1].split()[0]) for log in logs]
  assert stopped[0] == stopped[1] < 1000
  assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [str(stopped[0])]
  assert not (tmp_path / "run" / "params.msgpack").exists()


# ---------------------------------------------------------------------------
# Fine-tuning together
# ---------------------------------------------------------------------------


def start_finetune(workdir, init, data_dir, devices: int, *flags: str) -> subprocess.Popen:
  return subprocess.Popen(
      [sys.executable, "-m", "electra_jax.finetune", "--config=configs/finetune/glue.py",
       f"--config.init={init}", f"--config.data_dir={data_dir}", f"--workdir={workdir}",
       "--config.max_seq_length=16", "--config.train.batch_size=8", "--config.train.epochs=2",
       *flags],
      cwd=REPO, env=cpu_env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow  # ~20 s; pre-training's two-process test covers the same flags in CI
def test_fine_tuning_joins_through_the_same_flags_and_matches_one_process(tmp_path):
  """Fine-tuning too: two processes of one device each, joined by the same flags as
  pre-training, fine-tune as one process with both devices does."""
  init = finetune_helpers.export_model(tmp_path / "model", num_layers=1)
  finetune_helpers.write_sst2(tmp_path / "glue", train=48, dev=16)
  port = free_port()
  processes = [start_finetune(tmp_path / "one", init, tmp_path / "glue", 2)] + [
      start_finetune(tmp_path / "two", init, tmp_path / "glue", 1,
                     f"--coordinator_address=localhost:{port}", "--num_processes=2",
                     f"--process_id={i}") for i in range(2)]
  _, log0, log1 = [err for _, err in finish(processes)]
  assert "Process 0 of 2 joined" in log0 and "Process 1 of 2 joined" in log1
  one, two = (json.loads((tmp_path / run / "results.json").read_text()) for run in ("one", "two"))
  assert [h["step"] for h in two["history"]] == [h["step"] for h in one["history"]] == [6, 12]
  for ours, reference in zip(two["history"], one["history"]):
    for name, value in reference["metrics"]["dev"].items():
      np.testing.assert_allclose(ours["metrics"]["dev"][name], value, rtol=1e-4, err_msg=name)
  train_losses = lambda run: [m["loss"] for m in metrics(tmp_path / run) if m["split"] == "train"]
  assert len(train_losses("two")) >= 2
  np.testing.assert_allclose(train_losses("two"), train_losses("one"), rtol=1e-4)
  read = lambda run: flax.serialization.msgpack_restore(
      (tmp_path / run / "best" / "params.msgpack").read_bytes())
  for a, b in zip(jax.tree.leaves(read("two")), jax.tree.leaves(read("one"))):
    np.testing.assert_allclose(a, b, atol=1e-5)
