"""Data read from URLs as from local paths: fsspec's in-memory file system (memory://) stands
in for gs:// and s3://, which go through the same calls (runtime/fileio.py)."""

import gzip
import json
import os
import shutil

import fsspec
import numpy as np
import pytest

import finetune_helpers as helpers
from conftest import make_documents, write_corpus
from electra_jax.config import default_config
from electra_jax.data import dataset as dataset_lib
from electra_jax.data import loader, sources
from electra_jax.errors import DataError
from electra_jax.finetune import conll, glue, squad
from electra_jax.runtime import fileio


def upload(local_dir, url: str) -> None:
  """Every file under `local_dir` to the same names under `url`."""
  fs = fsspec.filesystem("memory")
  for root, _, files in os.walk(local_dir):
    for name in files:
      relative = os.path.relpath(os.path.join(root, name), local_dir)
      with open(os.path.join(root, name), "rb") as src, fs.open(f"{url}/{relative}", "wb") as dst:
        shutil.copyfileobj(src, dst)


def read_source(source: str):
  report = sources.SkipReport()
  options = sources.ReadOptions()
  items = sources.resolve_inputs(source, options)
  return [d for item in items for d in sources.read_documents(item, options, report)], items


def test_a_corpus_at_a_url_reads_as_the_same_files_on_disk(tmp_path, bucket):
  local = tmp_path / "corpus"
  local.mkdir()
  write_corpus(local / "a.txt", make_documents(5, seed=1))
  (local / "b.txt.gz").write_bytes(gzip.compress(b"six\nseven\n\neight\n"))
  (local / "c.jsonl").write_text("".join(json.dumps({"text": "\n".join(d)}) + "\n"
                                         for d in make_documents(3, seed=2)))
  upload(local, f"{bucket}/corpus")
  from_disk, disk_items = read_source(f"{local}/*")
  from_url, url_items = read_source(f"{bucket}/corpus/*")
  assert from_url == from_disk and len(from_url) == 10
  assert [item.name for item in url_items] == [f"{bucket}/corpus/{name}"
                                               for name in ("a.txt", "b.txt.gz", "c.jsonl")]
  assert [item.size for item in url_items] == [item.size for item in disk_items]


def test_prepared_data_from_a_url_equals_that_from_disk(tmp_path, bucket):
  (tmp_path / "corpus").mkdir()
  write_corpus(tmp_path / "corpus" / "a.txt", make_documents(60, seed=1))
  upload(tmp_path / "corpus", f"{bucket}/corpus")
  prepared = []
  for source in (str(tmp_path / "corpus" / "a.txt"), f"{bucket}/corpus/a.txt"):
    config = default_config()
    config.data.update(source=source, max_seq_length=32, num_workers=1)
    config.model.vocab_size = 150
    data = dataset_lib.prepare(config, str(tmp_path / f"run-{len(prepared)}"))
    prepared.append(loader.read_examples(data, "train").input_ids)
  np.testing.assert_array_equal(*prepared)


def test_fine_tuning_files_at_a_url_read_as_on_disk(tmp_path, bucket):
  helpers.write_sst2(tmp_path / "glue")
  helpers.write_conll(tmp_path / "conll")
  helpers.write_squad(tmp_path / "squad", version=2)
  upload(tmp_path, bucket)
  as_lists = lambda e: (e.ids, e.first, e.second, e.targets.tolist())
  for path, read in (("glue/SST-2/dev.tsv", lambda p: as_lists(glue.read_tsv(p, "sst2"))),
                     ("conll/dev.txt", lambda p: conll.read_conll(p, -1)),
                     ("squad/dev-v2.0.json", lambda p: squad.read_squad(p, 2))):
    assert read(f"{bucket}/{path}") == read(str(tmp_path / path)), path
  assert conll.split_path(f"{bucket}/conll", "train") == f"{bucket}/conll/train.txt"


def test_a_missing_file_at_a_url_is_named(bucket):
  with pytest.raises(DataError, match=f"no file matches '{bucket}/missing/\\*.txt'"):
    read_source(f"{bucket}/missing/*.txt")


def test_a_scheme_without_its_driver_says_what_to_install(monkeypatch):
  monkeypatch.setattr(fsspec.core, "url_to_fs", lambda path: (_ for _ in ()).throw(
      ImportError("Install s3fs to access S3")))
  with pytest.raises(DataError, match=r"s3:// paths need s3fs \(pip install s3fs\)"):
    fileio.exists("s3://bucket/corpus.txt")
