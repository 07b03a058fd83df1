"""Two processes on localhost train together exactly as one process with all their devices.

Each process has 4 simulated CPU devices and joins the other through
jax.distributed (gloo collectives); the reference is one process with 8. The
mesh (fsdp 4 x tensor 2) spans both processes, so each holds half of every
batch and a share of every parameter.
"""

import json
import os
import socket
import subprocess
import sys

import flax.serialization
import jax
import numpy as np
import pytest

from conftest import REPO
from test_data import make_documents, write_corpus

STEPS = 10
RELATIVE_TOLERANCE = 1e-5


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def start_train(workdir, corpus, devices: int, *flags: str) -> subprocess.Popen:
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
             # Faster compiles; the reference and the pair are compiled alike.
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} "
                       "--xla_backend_optimization_level=0")
  overrides = dict(steps=STEPS, log_every=1, eval_every=0, eval_batches=2, batch_size=8)
  return subprocess.Popen(
      [sys.executable, "-m", "electra_jax.train", "--config=configs/tiny.py",
       f"--workdir={workdir}", f"--config.data.source={corpus}", "--config.model.vocab_size=200",
       "--config.data.max_seq_length=32", "--config.optim.warmup_steps=5",
       "--config.mesh.data=1", "--config.mesh.fsdp=4", "--config.mesh.tensor=2",
       *(f"--config.train.{k}={v}" for k, v in overrides.items()), *flags],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(processes: list[subprocess.Popen]) -> list[str]:
  """Waits for all; their stderr. A failure in one stops the others."""
  try:
    outputs = [p.communicate(timeout=600)[1] for p in processes]
  finally:
    for p in processes:
      if p.poll() is None:
        p.kill()
  for p, err in zip(processes, outputs):
    assert p.returncode == 0, err[-3000:]
  return outputs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("multihost")
  corpus = write_corpus(tmp / "corpus.txt", make_documents(60))
  port = free_port()
  processes = [start_train(tmp / "one", corpus, 8)] + [
      start_train(tmp / "two", corpus, 4, f"--coordinator_address=localhost:{port}",
                  "--num_processes=2", f"--process_id={i}") for i in range(2)]
  _, *logs = finish(processes)
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
      "config.json", "metrics.jsonl", "params.msgpack", "tensorboard", "tokenizer.model"]
  assert "Process 0 of 2 joined" in log0 and "(8 devices)" in log0
  assert f"step {STEPS}/{STEPS}" in log0 and "Wrote the final parameters" in log0
  assert "Process 1 of 2 joined" in log1
  assert "step 1/" not in log1 and "Wrote the final" not in log1 and "tokenizer" not in log1
