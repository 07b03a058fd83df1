"""What a newcomer sees on one CPU host: quiet runs that say what they did, and fixes named.

The CLIs run here as a user runs them: JAX_PLATFORMS unset (conftest sets it
for the rest of the suite), default verbosity.
"""

import os
import subprocess
import sys

import pytest

from conftest import REPO, make_documents, write_corpus

NOISE = ("Unable to initialize backend", "no cluster found", "TPU_ACCELERATOR_TYPE",
         "Traceback", "InitGoogle")


def run(module: str, *args: str) -> subprocess.CompletedProcess:
  environ = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=environ,
                        capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("quiet")
  corpus = write_corpus(tmp / "corpus.txt", make_documents(40))
  args = ["--config=tiny", f"--workdir={tmp / 'run'}", f"--config.data.source={corpus}",
          "--config.model.vocab_size=200", "--config.data.max_seq_length=32",
          "--config.train.batch_size=8", "--config.train.steps=4", "--config.optim.warmup_steps=2",
          "--config.train.log_every=2", "--config.train.eval_batches=1"]
  first = run("electra_jax.train", *args)
  assert first.returncode == 0, first.stderr[-3000:]
  return dict(tmp=tmp, args=args, first=first, again=run("electra_jax.train", *args))


def test_a_cpu_run_prints_no_backend_or_cluster_noise(pretrained):
  for line in pretrained["first"].stderr.splitlines():
    assert not any(noise in line for noise in NOISE), line


def test_a_finished_run_says_so_without_compiling(pretrained):
  again = pretrained["again"]
  assert again.returncode == 0, again.stderr[-3000:]
  assert "Nothing to train:" in again.stderr and "holds the checkpoint of step 4" in again.stderr
  assert "Compiled" not in again.stderr and "Compiled" in pretrained["first"].stderr


def test_export_says_what_it_wrote(pretrained):
  out = pretrained["tmp"] / "export"
  result = run("electra_jax.export", f"--workdir={pretrained['tmp'] / 'run'}", f"--out={out}",
               "--format=flax")
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"Exported the final parameters of {pretrained['tmp'] / 'run'}: wrote {out}" in (
      result.stderr)


def test_fine_tuning_into_a_pretraining_workdir_says_so_and_touches_nothing(pretrained):
  workdir = pretrained["tmp"] / "run"
  before = sorted(str(p) for p in workdir.rglob("*"))
  result = run("electra_jax.finetune", "--config=glue", f"--config.init={workdir}",
               f"--config.data_dir={pretrained['tmp']}", f"--workdir={workdir}")
  assert result.returncode == 1, result.stderr[-3000:]
  (line,) = result.stderr.strip().splitlines()
  assert line == (f"error: --workdir={workdir} is the workdir of a pre-training run (its "
                  "config.json has no fine-tuning task); give fine-tuning a new --workdir of its "
                  f"own, and the pre-training run as --config.init={workdir}")
  assert "move" not in line and sorted(str(p) for p in workdir.rglob("*")) == before
