"""A workdir at a URL trains, continues and exports as a local one does.

gs:// is served by a Google Cloud Storage emulator (gcp-storage-emulator) in
this process, which both of the run's routes to storage talk to: fsspec's gcsfs
(our files, and Orbax's bookkeeping through etils.epath) and tensorstore's own
GCS driver (Orbax's arrays). s3:// goes through the same calls with s3fs.
fsspec's in-memory file system (memory://) stands in for the unit tests.
"""

import importlib
import json
import os
import socket
import subprocess
import sys

import fsspec
import pytest

import finetune_helpers as helpers
from conftest import REPO, cpu_env, make_documents, write_corpus
from electra_jax.errors import UserError
from electra_jax.runtime import fileio
from electra_jax.runtime.metric_writer import MetricWriter, last_logged

STEPS = 20
EVERY = 10


def test_files_at_a_url_are_written_replaced_moved_and_removed(bucket):
  workdir = fileio.prepare_workdir(f"{bucket}/run")
  assert workdir == f"{bucket}/run" and fileio.glob_files(f"{bucket}/**") == []
  fileio.atomic_write(f"{workdir}/a/config.json", "{}")
  fileio.atomic_write(f"{workdir}/a/config.json", b'{"x": 1}')
  with fileio.open_text(f"{workdir}/a/config.json") as f:
    assert json.load(f) == {"x": 1}
  fileio.move(f"{workdir}/a", f"{workdir}/a.unreadable")
  assert not fileio.exists(f"{workdir}/a/config.json")
  assert fileio.is_file(f"{workdir}/a.unreadable/config.json")
  fileio.remove_tree(f"{workdir}/a.unreadable")
  assert fileio.glob_files(f"{bucket}/**") == []


def test_metrics_at_a_url_are_replaced_whole_and_a_continued_run_drops_the_steps_it_repeats(
    bucket):
  workdir = f"{bucket}/run"
  writer = MetricWriter(workdir)
  for step in (1, 2, 3):
    writer.write(step, "train", {"loss": float(step)})
  writer.write(3, "eval", {"loss": 0.5})
  writer.close()
  continued = MetricWriter(workdir, start_step=2)
  continued.write(3, "train", {"loss": 30.0})
  continued.close()
  with fileio.open_text(f"{workdir}/metrics.jsonl") as f:
    lines = [json.loads(line) for line in f]
  assert [(m["step"], m["split"], m["loss"]) for m in lines] == [
      (1, "train", 1.0), (2, "train", 2.0), (3, "train", 30.0)]
  assert last_logged(workdir, "train") == {"loss": 30.0}
  events = fileio.glob_files(f"{workdir}/tensorboard/*")
  assert events and all(fileio.size(path) > 0 for path in events)


def test_a_url_without_its_driver_is_refused_naming_the_package():
  with pytest.raises(UserError, match=r"s3:// paths need s3fs \(pip install s3fs\)"):
    fileio.prepare_workdir("s3://bucket/run")


# ---------------------------------------------------------------------------
# End to end on an emulated Google Cloud Storage
# ---------------------------------------------------------------------------


def _telling_generation(download):
  """The emulator's object download, with the generation header that GCS sends and
  tensorstore reads (the emulator leaves it out)."""

  def serve(request, response, storage, *args, **kwargs):
    try:
      found = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
      response["x-goog-generation"] = found["generation"]
    except Exception:  # pylint: disable=broad-except  # a missing object: download says so
      pass
    download(request, response, storage, *args, **kwargs)

  return serve


@pytest.fixture(name="gcs", scope="module")
def fixture_gcs(tmp_path_factory):
  emulator = pytest.importorskip(
      "gcp_storage_emulator.server",
      reason="the GCS emulator is a test dependency: pip install -e '.[test]'")
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
  url = f"http://127.0.0.1:{port}"
  settings = dict(STORAGE_EMULATOR_HOST=url, TENSORSTORE_GCS_HTTP_URL=url,
                  # gcsfs's hierarchical-namespace probe speaks gRPC, which the emulator
                  # does not: without this, a minute of retries per bucket.
                  GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT="false")
  saved = {name: os.environ.get(name) for name in settings}
  os.environ.update(settings)  # for this process's own look at the bucket, before gcsfs loads
  pytest.importorskip("gcsfs", reason="gs:// needs gcsfs: pip install -e '.[gcs]'")
  objects = importlib.import_module("gcp_storage_emulator.handlers.objects")
  objects.download = _telling_generation(objects.download)
  server = emulator.create_server("127.0.0.1", port, in_memory=True, default_bucket="bucket")
  server.start()
  tmp = tmp_path_factory.mktemp("gcs")
  env = cpu_env(1, **settings, HOME=str(tmp / "home"),
                JAX_COMPILATION_CACHE_DIR=str(tmp / "cache"),
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  yield dict(env=env, tmp=tmp, corpus=write_corpus(tmp / "corpus.txt", make_documents(40)))
  server.stop()
  for name, value in saved.items():
    if value is None:
      os.environ.pop(name)
    else:
      os.environ[name] = value


def cli(gcs, module: str, *flags: str) -> subprocess.CompletedProcess:
  result = subprocess.run([sys.executable, "-m", module, *flags], cwd=REPO, env=gcs["env"],
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def train(gcs, workdir: str) -> subprocess.CompletedProcess:
  return cli(gcs, "electra_jax.train", "--config=configs/tiny.py", f"--workdir={workdir}",
             f"--config.data.source={gcs['corpus']}", "--config.model.vocab_size=200",
             "--config.data.max_seq_length=32", "--config.optim.warmup_steps=5",
             f"--config.train.steps={STEPS}", "--config.train.batch_size=8",
             "--config.train.log_every=5", "--config.train.eval_every=0",
             "--config.train.eval_batches=2", f"--config.checkpoint.every_steps={EVERY}")


def read(url: str) -> bytes:
  fs, inner = fsspec.core.url_to_fs(url, token="anon")
  return fs.cat_file(inner)


def train_losses(metrics: bytes) -> dict[int, float]:
  lines = [json.loads(line) for line in metrics.decode().splitlines()]
  return {m["step"]: m["loss"] for m in lines if m["split"] == "train"}


# Slow (over a minute: two training runs, an export and a fine-tune); the memory:// tests
# above keep each storage call in the default suite.
@pytest.mark.slow
def test_a_run_at_a_gs_url_trains_continues_and_exports_as_the_same_run_on_disk(gcs):
  local = gcs["tmp"] / "local"
  remote = "gs://bucket/run"
  train(gcs, str(local))
  train(gcs, remote)
  fs, _ = fsspec.core.url_to_fs(remote, token="anon")
  written = {path.removeprefix("bucket/run/").split("/")[0] for path in fs.find("bucket/run")}
  assert {"config.json", "metrics.jsonl", "params.msgpack", "tokenizer.model", "tensorboard",
          "checkpoints"} <= written
  assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls("bucket/run/checkpoints")) == ["10", "20"]
  # The prepared data stays on local disk, in a directory named after the workdir.
  assert (gcs["tmp"] / "home/.cache/electra_jax/prepared/gs/bucket/run/manifest.json").exists()
  params = (local / "params.msgpack").read_bytes()
  assert read(f"{remote}/params.msgpack") == params
  assert train_losses(read(f"{remote}/metrics.jsonl")) == train_losses(
      (local / "metrics.jsonl").read_bytes())

  # Lose everything after step 10: the same command continues from the checkpoint in the
  # bucket, and ends where the uninterrupted run did.
  fs.rm("bucket/run/checkpoints/20", recursive=True)
  fs.rm_file("bucket/run/params.msgpack")
  continued = train(gcs, remote)
  assert "step 10" in continued.stderr
  assert read(f"{remote}/params.msgpack") == params
  assert sorted(train_losses(read(f"{remote}/metrics.jsonl"))) == [5, 10, 15, 20]

  out = gcs["tmp"] / "export"
  cli(gcs, "electra_jax.export", f"--workdir={remote}", "--format=flax", f"--out={out}")
  cli(gcs, "electra_jax.export", f"--workdir={local}", "--format=flax",
      f"--out={gcs['tmp'] / 'local-export'}")
  for name in ("params.msgpack", "tokenizer.model"):
    assert (out / name).read_bytes() == (gcs["tmp"] / "local-export" / name).read_bytes()

  # Fine-tuning from the run in the bucket into another, and predicting from that.
  glue = gcs["tmp"] / "glue"
  helpers.write_sst2(glue)
  helpers.write(glue / "SST-2" / "test.tsv", "index\tsentence\n0\tthe fox is good\n1\tdull\n")
  finetuned = "gs://bucket/sst2"
  cli(gcs, "electra_jax.finetune", "--config=glue", f"--config.init={remote}",
      f"--config.data_dir={glue}", f"--workdir={finetuned}", "--config.max_seq_length=16",
      "--config.train.batch_size=8", "--config.train.epochs=1")
  assert json.loads(read(f"{finetuned}/results.json"))["epochs"] == 1
  cli(gcs, "electra_jax.predict", f"--workdir={finetuned}", f"--input={glue}")
  assert read(f"{finetuned}/predictions/SST-2.tsv").decode().splitlines()[0] == (
      "index\tprediction")
