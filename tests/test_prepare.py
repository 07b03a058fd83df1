"""Preparation: tokenizer, shards and manifest; reuse, refusal, resuming, workers, bad input."""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, make_documents, write_corpus
from electra_jax.config import default_config
from electra_jax.data import dataset
from electra_jax.data import loader, shards, sources, tfds_source
from electra_jax.data import shard_writer
from electra_jax.errors import DataError
from electra_jax.vocabulary import CLS_ID, PAD_ID, SEP_ID


def small_config(source: str, vocab_size: int = 200, **data):
  config = default_config()
  config.data.source = source
  config.data.max_seq_length = 32
  config.data.eval_fraction = 0.2
  config.data.num_workers = 1
  config.model.vocab_size = vocab_size
  config.data.update(data)
  return config


def write_files(directory, num_files: int, documents_per_file: int = 10) -> str:
  directory.mkdir(exist_ok=True)
  for i in range(num_files):
    write_corpus(directory / f"part-{i}.txt", make_documents(documents_per_file, seed=i))
  return f"{directory}/part-*.txt"


def all_examples(data) -> dict[str, np.ndarray]:
  return {split: loader.read_examples(data, split).input_ids for split in shards.SPLITS}


def test_prepare_writes_shards_and_a_manifest_then_reuses_them(tmp_path):
  source = write_files(tmp_path / "corpus", 3)
  workdir = tmp_path / "run"
  data = dataset.prepare(small_config(source), str(workdir))
  directory = workdir / "data"
  assert data.directory == str(directory)
  assert sorted(os.listdir(workdir)) == ["data", "tokenizer.model"]
  manifest = json.loads((directory / "manifest.json").read_text())
  assert manifest == data.manifest
  assert manifest["tokenizer_sha256"] == data.tokenizer.sha256
  assert manifest["settings"]["max_seq_length"] == 32 and manifest["vocab_size"] == 200
  paths = [str(tmp_path / "corpus" / f"part-{i}.txt") for i in range(3)]
  assert manifest["inputs"] == [[path, os.path.getsize(path)] for path in paths]
  assert manifest["input_bytes"] == sum(os.path.getsize(path) for path in paths)
  assert manifest["skipped"] == {}
  train, eval_ = manifest["splits"]["train"], manifest["splits"]["eval"]
  assert train["documents"] + eval_["documents"] == 30 and eval_["documents"] > 0
  assert [s["file"] for s in train["shards"]] == [f"train-0000{i}.array_record" for i in range(3)]
  assert sum(s["examples"] for s in train["shards"]) == train["examples"]

  examples = all_examples(data)
  for split, ids in examples.items():
    assert ids.shape == (manifest["splits"][split]["examples"], 32)
    assert np.all(ids[:, 0] == CLS_ID)
    text = ids[~np.isin(ids, [PAD_ID, CLS_ID, SEP_ID])]
    assert text.size == manifest["splits"][split]["tokens"]  # every token, once

  shard = directory / "train-00000.array_record"
  written = shard.stat().st_mtime_ns
  again = dataset.prepare(small_config(source), str(workdir))
  assert again.manifest == manifest and shard.stat().st_mtime_ns == written
  for split, ids in all_examples(again).items():
    np.testing.assert_array_equal(ids, examples[split])


def test_examples_do_not_depend_on_the_number_of_workers(tmp_path):
  source = write_files(tmp_path / "corpus", 4)
  one = dataset.prepare(small_config(source), str(tmp_path / "one"))
  two = dataset.prepare(small_config(source, num_workers=2), str(tmp_path / "two"))
  assert two.tokenizer.sha256 == one.tokenizer.sha256
  for split, ids in all_examples(one).items():
    np.testing.assert_array_equal(all_examples(two)[split], ids)


def test_an_interrupted_preparation_resumes_where_it_stopped(tmp_path, monkeypatch):
  source = write_files(tmp_path / "corpus", 3)
  config = small_config(source)
  real_read = sources.read_documents
  read = []

  def interrupted_at_the_third_input(item, *args):
    read.append(os.path.basename(item.name))
    if len(read) == 3:
      raise KeyboardInterrupt
    return real_read(item, *args)

  monkeypatch.setattr(sources, "read_documents", real_read)
  dataset.prepare(config, str(tmp_path / "tokenizer-only"))  # the same tokenizer, trained apart
  os.makedirs(tmp_path / "run")
  os.replace(tmp_path / "tokenizer-only" / "tokenizer.model", tmp_path / "run" / "tokenizer.model")
  monkeypatch.setattr(sources, "read_documents", interrupted_at_the_third_input)
  with pytest.raises(KeyboardInterrupt):
    dataset.prepare(config, str(tmp_path / "run"))
  directory = tmp_path / "run" / "data"
  assert not (directory / "manifest.json").exists()
  assert sorted(os.listdir(directory / "inputs")) == ["00000.json", "00001.json"]
  assert not [f for f in os.listdir(directory) if f.endswith(".tmp")]  # the partial shard is gone
  finished = (directory / "train-00000.array_record").stat().st_mtime_ns

  read.clear()
  monkeypatch.setattr(sources, "read_documents", lambda item, *args: (
      read.append(os.path.basename(item.name)), real_read(item, *args))[1])
  resumed = dataset.prepare(config, str(tmp_path / "run"))
  assert read == ["part-2.txt"]
  assert (directory / "train-00000.array_record").stat().st_mtime_ns == finished
  uninterrupted = dataset.prepare(config, str(tmp_path / "uninterrupted"))
  assert resumed.manifest["splits"] == uninterrupted.manifest["splits"]
  for split, ids in all_examples(uninterrupted).items():
    np.testing.assert_array_equal(all_examples(resumed)[split], ids)


def test_prepared_data_of_other_settings_or_tokenizer_is_refused(tmp_path):
  source = write_files(tmp_path / "corpus", 2)
  shared = str(tmp_path / "shared")
  dataset.prepare(small_config(source, dir=shared), str(tmp_path / "a"))
  manifest = (tmp_path / "shared" / "manifest.json").read_text()

  with pytest.raises(DataError, match=r"prepared with data.max_seq_length=32, but this run has "
                     r"64; set --config.data.dir to a new directory"):
    dataset.prepare(small_config(source, dir=shared, max_seq_length=64), str(tmp_path / "b"))
  write_files(tmp_path / "corpus", 3)  # the glob now matches one file more
  with pytest.raises(DataError, match=r"prepared with 2 inputs from data.source='.*', but this "
                     r"run's data.source='.*' gives 3"):
    dataset.prepare(small_config(source, dir=shared), str(tmp_path / "b"))
  (tmp_path / "corpus" / "part-2.txt").unlink()
  with pytest.raises(DataError, match=r"tokenizer.model has 200 pieces but model.vocab_size=300; "
                     r"set --config.model.vocab_size=200"):
    dataset.prepare(small_config(source, vocab_size=300, dir=shared), str(tmp_path / "b"))

  other = dataset.prepare(small_config(write_files(tmp_path / "other", 2), vocab_size=150),
                           str(tmp_path / "c"))
  (tmp_path / "d").mkdir()
  other.tokenizer.save(str(tmp_path / "d" / "tokenizer.model"))
  with pytest.raises(DataError, match="is not the tokenizer the prepared data was made with"):
    dataset.prepare(small_config(source, dir=shared), str(tmp_path / "d"))
  assert (tmp_path / "shared" / "manifest.json").read_text() == manifest  # nothing overwritten


def test_a_partial_preparation_with_other_settings_is_refused(tmp_path):
  source = write_files(tmp_path / "corpus", 2)
  data = dataset.prepare(small_config(source), str(tmp_path))
  os.remove(os.path.join(data.directory, "manifest.json"))  # as if interrupted
  with pytest.raises(DataError, match="holds a preparation interrupted with other settings"):
    dataset.prepare(small_config(source, short_seq_prob=0.5), str(tmp_path))


def test_prepare_writes_nothing_when_the_corpus_is_missing(tmp_path):
  workdir = tmp_path / "run"
  with pytest.raises(DataError, match="no file matches"):
    dataset.prepare(small_config(str(tmp_path / "missing.txt")), str(workdir))
  assert not workdir.exists()


def test_bad_input_is_counted_and_reported_at_the_end(tmp_path, caplog):
  corpus = tmp_path / "corpus"
  write_files(corpus, 1, documents_per_file=30)
  (corpus / "part-empty.txt").write_text("\n\n")
  (corpus / "part-image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
  (corpus / "part-latin1.txt").write_bytes("caf\xe9\n".encode("latin-1") + b"Kalo.\n")
  (corpus / "part-short.txt").write_text("Kalo.\n\nMine suta.\n")
  with caplog.at_level(logging.INFO):
    data = dataset.prepare(small_config(f"{corpus}/part-*", min_document_tokens=6), str(tmp_path))
  skipped = data.manifest["skipped"]
  assert {reason: entry["count"] for reason, entry in skipped.items()} == {
      sources.EMPTY_FILE: 1, sources.BINARY_FILE: 1, sources.UNDECODABLE_LINE: 1,
      sources.SHORT_DOCUMENT: 3}  # "Kalo." is short too
  assert skipped[sources.SHORT_DOCUMENT]["inputs"] == [str(corpus / "part-latin1.txt"),
                                                       str(corpus / "part-short.txt")]
  assert f"Skipped 1 binary files (in {corpus / 'part-image.txt'})" in caplog.text
  assert "Skipped 3 documents shorter than data.min_document_tokens" in caplog.text


def test_a_corpus_without_text_is_one_clear_error(tmp_path):
  (tmp_path / "empty.txt").write_text("\n\n")
  (tmp_path / "data.bin").write_bytes(bytes(range(256)))
  with pytest.raises(DataError, match=r"has no text \(1 binary files \(in .*data.bin\); 1 empty "
                     r"files \(in .*empty.txt\)\)"):
    dataset.prepare(small_config(f"{tmp_path}/*"), str(tmp_path / "run"))


def test_an_empty_eval_split_is_one_clear_error(tmp_path):
  source = write_corpus(tmp_path / "corpus.txt", make_documents(3, lines_per_document=100))
  with pytest.raises(DataError, match="no document .* was held out for evaluation; raise "
                     "--config.data.eval_fraction"):
    dataset.prepare(small_config(source, eval_fraction=0.001), str(tmp_path / "run"))
  assert not (tmp_path / "run" / "data" / "manifest.json").exists()


def test_documents_are_held_out_by_content():
  documents = make_documents(2000, lines_per_document=2)
  held_out = shard_writer._held_out  # pylint: disable=protected-access
  chosen = [held_out(d, 0.1) for d in documents]
  assert 150 < sum(chosen) < 250
  assert chosen == [held_out(list(d), 0.1) for d in documents[::-1]][::-1]


def test_prepare_cli_prepares_and_reports(tmp_path):
  corpus = tmp_path / "corpus.jsonl"
  corpus.write_text("".join(json.dumps({"body": " ".join(lines)}) + "\n"
                            for lines in make_documents(40)) + "not json\n")
  result = subprocess.run(
      [sys.executable, "-m", "electra_jax.prepare", "--config=configs/tiny.py",
       f"--workdir={tmp_path / 'run'}", f"--config.data.source={corpus}",
       "--config.data.text_field=body", "--config.model.vocab_size=200",
       "--config.data.eval_fraction=0.2"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  assert "Skipped 1 JSON lines that do not parse" in result.stderr
  assert "Ready in" in result.stderr and "Preparing: 100%" in result.stderr
  manifest = json.loads((tmp_path / "run" / "data" / "manifest.json").read_text())
  assert manifest["splits"]["train"]["documents"] + manifest["splits"]["eval"]["documents"] == 40

  missing = subprocess.run(
      [sys.executable, "-m", "electra_jax.prepare", "--config=configs/tiny.py",
       f"--workdir={tmp_path / 'other'}", f"--config.data.source={tmp_path}/none*.txt"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert missing.returncode == 1 and "Traceback" not in missing.stderr
  assert "error: no file matches" in missing.stderr


def test_tfds_source_with_mock_data(tmp_path, monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets", reason="the tfds extra is not installed")
  pytest.importorskip("tensorflow", reason="the tfds extra (tensorflow) is not installed")
  builder = tfds.builder("wikipedia/20230601.en", data_dir=str(tmp_path / "tfds"))
  builder.info.set_splits(tfds.core.SplitDict(
      [tfds.core.SplitInfo(name="train", shard_lengths=[30], num_bytes=0)]))
  os.makedirs(builder.data_dir)
  builder.info.write_to_directory(builder.data_dir)  # the split sizes TFDS would know
  monkeypatch.setattr(tfds_source, "RECORDS_PER_INPUT", 12)
  config = small_config("tfds:wikipedia/20230601.en", vocab_size=40, min_document_tokens=1)
  with tfds.testing.mock_data(num_examples=30, data_dir=str(tmp_path / "tfds")):
    data = dataset.prepare(config, str(tmp_path / "run"))
  assert data.manifest["inputs"] == [[f"tfds:wikipedia/20230601.en train[{a}:{b}]", b - a]
                                     for a, b in ((0, 12), (12, 24), (24, 30))]
  splits = data.manifest["splits"]
  # The mock yields 30 random texts for any slice: 3 x 30 documents.
  assert splits["train"]["documents"] + splits["eval"]["documents"] == 90
  assert splits["train"]["examples"] > 0
