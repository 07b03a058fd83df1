"""Hugging Face datasets as a source: for pre-training parquet and arrow files, saved datasets
and datasets by name, each read to the same documents as the same texts in JSON lines; for
fine-tuning and predictions GLUE as Hugging Face has it, read to the same examples as GLUE's
files."""

import json

import numpy as np
import pytest

datasets = pytest.importorskip("datasets", reason="the datasets extra is not installed: "
                               "pip install -e '.[datasets]'")
pyarrow = pytest.importorskip("pyarrow")

import finetune_helpers as helpers  # pylint: disable=wrong-import-position
from conftest import make_documents
from electra_jax.config import default_config
from electra_jax.data import dataset as dataset_lib
from electra_jax.data import loader, sources
from electra_jax.errors import DataError
from electra_jax.finetune import glue, predict, saved_run, trainer

TEXTS = ["First line.\nSecond line.\n\nThird.", "  ", "Last doc.", *(
    "\n".join(document) for document in make_documents(12, seed=3))]


def read_source(source: str, split: str = "train", text_field: str = "text"):
  report = sources.SkipReport()
  options = sources.ReadOptions(text_field=text_field, tfds_split=split)
  documents = [document for item in sources.resolve_inputs(source, options)
               for document in sources.read_documents(item, options, report)]
  return documents, report


@pytest.fixture(name="expected", scope="module")
def fixture_expected(tmp_path_factory):
  path = tmp_path_factory.mktemp("jsonl") / "corpus.jsonl"
  path.write_text("".join(json.dumps({"text": text, "id": i}) + "\n"
                          for i, text in enumerate(TEXTS)))
  documents, report = read_source(str(path))
  assert report.counts == {sources.EMPTY_DOCUMENT: 1}
  return documents


def dataset() -> "datasets.Dataset":
  return datasets.Dataset.from_dict({"id": list(range(len(TEXTS))), "text": TEXTS})


def test_parquet_files_read_as_their_texts(tmp_path, expected):
  first, second = dataset().select(range(5)), dataset().select(range(5, len(TEXTS)))
  first.to_parquet(str(tmp_path / "part-0.bin"))  # known by content, not by name
  second.to_parquet(str(tmp_path / "part-1.parquet"))
  documents, report = read_source(f"{tmp_path}/part-*")
  assert documents == expected and report.counts == {sources.EMPTY_DOCUMENT: 1}


def test_arrow_ipc_files_read_as_their_texts(tmp_path, expected):
  table = pyarrow.table({"text": TEXTS})
  with pyarrow.ipc.new_file(str(tmp_path / "corpus.arrow"), table.schema) as writer:
    for batch in table.to_batches(max_chunksize=4):
      writer.write_batch(batch)
  assert read_source(str(tmp_path / "corpus.arrow"))[0] == expected


def test_a_saved_dataset_directory_reads_as_its_texts(tmp_path, expected):
  dataset().save_to_disk(str(tmp_path / "saved"), num_shards=3)
  assert read_source(str(tmp_path / "saved"))[0] == expected
  datasets.DatasetDict({"train": dataset(), "validation": dataset().select(range(3))}
                       ).save_to_disk(str(tmp_path / "dict"))
  assert read_source(str(tmp_path / "dict"))[0] == expected
  assert read_source(str(tmp_path / "dict"), split="validation")[0] == expected[:2]
  with pytest.raises(DataError, match=r"has no split 'test'; set --config.data.tfds_split to one "
                     r"of train, validation"):
    read_source(str(tmp_path / "dict"), split="test")


def test_a_dataset_by_name_reads_as_its_texts(tmp_path, monkeypatch, expected):
  """hf:NAME goes through datasets.load_dataset; a local folder of data files is such a name."""
  monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
  (tmp_path / "corpus" / "data").mkdir(parents=True)
  dataset().to_parquet(str(tmp_path / "corpus" / "data" / "train-00000-of-00001.parquet"))
  assert read_source(f"hf:{tmp_path / 'corpus'}")[0] == expected
  with pytest.raises(DataError, match=r"cannot load the Hugging Face dataset '.*missing'"):
    read_source(f"hf:{tmp_path / 'missing'}")


def test_a_missing_text_column_names_the_columns_there_are(tmp_path):
  dataset().to_parquet(str(tmp_path / "corpus.parquet"))
  with pytest.raises(DataError, match=r"has no column 'body'; set --config.data.text_field to "
                     r"one of id, text"):
    read_source(str(tmp_path / "corpus.parquet"), text_field="body")


def test_prepared_data_from_parquet_equals_that_from_json_lines(tmp_path):
  texts = ["\n".join(document) for document in make_documents(60, seed=1)]
  (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
  datasets.Dataset.from_dict({"text": texts}).to_parquet(str(tmp_path / "corpus.parquet"))
  prepared = []
  for name in ("corpus.jsonl", "corpus.parquet"):
    config = default_config()
    config.data.update(source=str(tmp_path / name), max_seq_length=32, num_workers=1)
    config.model.vocab_size = 150
    data = dataset_lib.prepare(config, str(tmp_path / name.replace(".", "-")))
    prepared.append(loader.read_examples(data, "train").input_ids)
  np.testing.assert_array_equal(*prepared)


# ---------------------------------------------------------------------------
# GLUE from Hugging Face datasets, for fine-tuning and predictions
# ---------------------------------------------------------------------------


def sst2_dataset_dict(tsv_root) -> "datasets.DatasetDict":
  """The SST-2 files of `tsv_root` as Hugging Face's GLUE has them (its features and names)."""
  features = datasets.Features({"sentence": datasets.Value("string"),
                                "label": datasets.ClassLabel(names=["negative", "positive"]),
                                "idx": datasets.Value("int32")})
  splits = {}
  for split, file in (("train", "train"), ("validation", "dev"), ("test", "dev")):
    rows = [line.split("\t") for line in
            (tsv_root / "SST-2" / f"{file}.tsv").read_text().splitlines()[1:]]
    splits[split] = datasets.Dataset.from_dict(
        {"sentence": [r[0] for r in rows], "idx": list(range(len(rows))),
         "label": [-1 if split == "test" else int(r[1]) for r in rows]},
        features=features)
  return datasets.DatasetDict(splits)


def test_glue_from_a_saved_hf_dataset_fine_tunes_as_from_its_files(tmp_path):
  init = helpers.export_model(tmp_path / "model", num_layers=1)
  helpers.write_sst2(tmp_path / "glue", train=32, dev=16)
  sst2_dataset_dict(tmp_path / "glue").save_to_disk(str(tmp_path / "hf_sst2"))
  results = [trainer.finetune(helpers.config("sst2", init, str(tmp_path / source), epochs=1),
                              str(tmp_path / f"run-{source}"))
             for source in ("glue", "hf_sst2")]
  assert results[0]["history"] == results[1]["history"]
  # Predictions for its test split (labels -1), by idx.
  (path,) = predict.write_predictions(saved_run.read(str(tmp_path / "run-hf_sst2")),
                                      str(tmp_path / "out"))
  rows = (tmp_path / "out" / "SST-2.tsv").read_text().splitlines()
  assert path.endswith("SST-2.tsv") and rows[0] == "index\tprediction"
  assert [r.split("\t")[0] for r in rows[1:]] == [str(i) for i in range(16)]


def test_glue_by_name_loads_the_task_as_its_config(tmp_path, monkeypatch):
  """hf:NAME: datasets.load_dataset(NAME, task); a local folder laid out as the Hub's
  nyu-mll/glue (parquet files per task, named in its README's configs) stands in for it."""
  monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
  helpers.write_sst2(tmp_path / "glue", train=8, dev=4)
  hub = tmp_path / "glue_hub"
  for split, dataset_ in sst2_dataset_dict(tmp_path / "glue").items():
    dataset_.to_parquet(str(hub / "sst2" / f"{split}-00000-of-00001.parquet"))
  (hub / "README.md").write_text("---\nconfigs:\n- config_name: sst2\n  data_files:\n" + "".join(
      f"  - split: {split}\n    path: sst2/{split}-*.parquet\n"
      for split in ("train", "validation", "test")) + "---\n")
  from_hub = glue.read_hf("sst2", "validation", f"hf:{hub}")
  from_files = glue.read_tsv(str(tmp_path / "glue" / "SST-2" / "dev.tsv"), "sst2")
  assert from_hub.first == from_files.first
  np.testing.assert_array_equal(from_hub.targets, from_files.targets)
