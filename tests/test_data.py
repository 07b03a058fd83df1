"""Sources, the tokenizer and ELECTRA packing: documents in, examples out."""

import gzip
import io
import itertools
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from conftest import make_documents
from electra_jax.data import sources
from electra_jax.data.packing import Examples, pack_documents
from electra_jax.data.sentencepiece_tokenizer import Tokenizer, train_tokenizer
from electra_jax.errors import DataError
from electra_jax.vocabulary import CLS_ID, MASK_ID, PAD_ID, SEP_ID, SPECIAL_PIECES, UNK_ID

SPECIAL_IDS = list(SPECIAL_PIECES)
WIKI_SAMPLE = Path(__file__).resolve().parents[2] / "shared/data/wikipedia-en-sample/text/wiki_00"


def read_source(source: str,
                text_field: str = "text") -> tuple[list[list[str]], sources.SkipReport]:
  """Every document of `source`, and what was skipped."""
  report = sources.SkipReport()
  options = sources.ReadOptions(text_field=text_field)
  documents = [document for item in sources.resolve_inputs(source, options)
               for document in sources.read_documents(item, options, report)]
  return documents, report


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
  documents = make_documents(40, extra=" [MASK] [CLS] [SEP]")
  return train_tokenizer(documents, vocab_size=200, lowercase=True, max_sentences=10_000, seed=0)


# ---------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------


def test_text_files_split_into_documents_at_blank_lines(tmp_path):
  (tmp_path / "a.txt").write_bytes(b"\xef\xbb\xbfone  \n two\n\n\n\nthree\n")
  (tmp_path / "b.txt").write_text("four\r\n\r\nfive\r\n")
  (tmp_path / "c.txt.gz").write_bytes(gzip.compress(b"six\nseven\n\neight"))
  source = f"{tmp_path}/[ab].txt, {tmp_path / 'c.txt.gz'}"
  documents, report = read_source(source)
  assert documents == [["one", "two"], ["three"], ["four"], ["five"], ["six", "seven"], ["eight"]]
  assert not report.counts
  assert [item.name for item in sources.resolve_inputs(source, sources.ReadOptions())] == [
      str(tmp_path / name) for name in ("a.txt", "b.txt", "c.txt.gz")]


@pytest.mark.parametrize("name", ["missing.txt", "*.missing"])
def test_unmatched_path_names_the_pattern(tmp_path, name):
  pattern = str(tmp_path / name)
  with pytest.raises(DataError, match=re.escape(f"no file matches '{pattern}'")):
    sources.resolve_inputs(pattern, sources.ReadOptions())


def test_directory_source_suggests_a_glob(tmp_path):
  with pytest.raises(DataError, match=r"is a directory.*/\*'"):
    sources.resolve_inputs(str(tmp_path), sources.ReadOptions())


def test_json_lines_are_recognised_and_read_from_the_text_field(tmp_path):
  records = [{"body": "First line.\nSecond line.\n\nThird.", "id": 1}, {"body": "  "},
             {"id": 3}, {"body": 7}, {"body": "Last doc."}]
  lines = [json.dumps(r) for r in records[:2]] + ["{not json", ""] + [json.dumps(r) for r in
                                                                     records[2:]]
  (tmp_path / "corpus").write_text("\n".join(lines) + "\n")  # no extension: found by content
  documents, report = read_source(str(tmp_path / "corpus"), text_field="body")
  assert documents == [["First line.", "Second line.", "Third."], ["Last doc."]]
  assert dict(report.counts) == {sources.EMPTY_DOCUMENT: 1, sources.BAD_JSON: 1,
                                 sources.NO_TEXT_FIELD: 2}


WIKI_TEXT = """<doc id="1" url="?curid=1" title="Kalo">
Kalo

Kalo is a made-up word.
History.
It was made up for this test.
</doc>
<doc id="2" url="?curid=2" title="Mine">
Mine


</doc>
stray line
<doc id="3" url="?curid=3" title="Suta">
Suta

Suta is another one.
</doc>
"""


def test_wikiextractor_output_is_recognised_and_titles_dropped(tmp_path):
  (tmp_path / "wiki_00").write_text(WIKI_TEXT)
  (tmp_path / "wiki_01.gz").write_bytes(gzip.compress(WIKI_TEXT.encode()))
  documents, report = read_source(f"{tmp_path}/wiki_*")
  expected = [["Kalo is a made-up word.", "History.", "It was made up for this test."],
              ["Suta is another one."]]
  assert documents == expected * 2
  assert dict(report.counts) == {sources.EMPTY_DOCUMENT: 2, sources.OUTSIDE_DOC: 2}
  assert report.inputs[sources.EMPTY_DOCUMENT] == [str(tmp_path / "wiki_00"),
                                                   str(tmp_path / "wiki_01.gz")]


@pytest.mark.skipif(not WIKI_SAMPLE.exists(), reason=f"{WIKI_SAMPLE} is not here (shared data)")
def test_the_real_wikipedia_sample_reads_every_doc_block():
  text = WIKI_SAMPLE.read_text(encoding="utf-8")
  documents, report = read_source(str(WIKI_SAMPLE))
  assert len(documents) + report.counts[sources.EMPTY_DOCUMENT] == text.count("<doc ")
  assert set(report.counts) <= {sources.EMPTY_DOCUMENT}
  assert documents[0][0].startswith("Jarred Shaw (born September 28, 1990) is an American")
  assert not any(line.startswith("<doc") or line == "</doc>" for d in documents for line in d)


def test_bad_input_is_counted_by_reason_and_file(tmp_path, monkeypatch):
  monkeypatch.setattr(sources, "MAX_LINE_BYTES", 100)
  (tmp_path / "a_empty.txt").write_text("\n \n")
  (tmp_path / "b_binary.bin").write_bytes(b"\x00\x01\x02 text\n")
  (tmp_path / "c_mixed.txt").write_bytes(b"good line\n\xff\xfe bad\nal\xe9 bad\n" + b"x" * 250 +
                                         b"\nlast line\n")
  documents, report = read_source(f"{tmp_path}/*")
  assert documents == [["good line", "last line"]]
  assert dict(report.counts) == {sources.EMPTY_FILE: 1, sources.BINARY_FILE: 1,
                                 sources.UNDECODABLE_LINE: 2, sources.LONG_LINE: 1}
  assert report.inputs[sources.BINARY_FILE] == [str(tmp_path / "b_binary.bin")]
  assert report.inputs[sources.UNDECODABLE_LINE] == [str(tmp_path / "c_mixed.txt")]
  merged = sources.SkipReport.from_json(json.loads(json.dumps(report.to_json())))
  merged.merge(report)
  assert merged.counts[sources.UNDECODABLE_LINE] == 4
  assert merged.inputs[sources.UNDECODABLE_LINE] == [str(tmp_path / "c_mixed.txt")]
  assert any("2 lines that are not UTF-8 (in " in line for line in report.summary())


def test_unreadable_file_is_named(tmp_path):
  path = tmp_path / "gone.txt"
  path.write_text("text\n")
  (item,) = sources.resolve_inputs(str(path), sources.ReadOptions())
  path.unlink()  # disappears between resolving and reading
  with pytest.raises(DataError, match=re.escape(f"cannot read {path}")):
    list(sources.read_documents(item, sources.ReadOptions(), sources.SkipReport()))


def test_truncated_gzip_is_named(tmp_path):
  path = tmp_path / "cut.txt.gz"
  path.write_bytes(gzip.compress("".join(f"line {i}\n" for i in range(5000)).encode())[:100])
  with pytest.raises(DataError, match=re.escape(f"cannot read {path}")):
    read_source(str(path))


def test_tfds_source_without_tfds_installed_says_how_to_install(monkeypatch):
  import builtins  # pylint: disable=import-outside-toplevel
  real_import = builtins.__import__

  def without_tfds(name, *args, **kwargs):
    if name.startswith("tensorflow_datasets"):
      raise ImportError(name=name)
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", without_tfds)
  with pytest.raises(DataError, match=r"tensorflow_datasets is not installed.*electra_jax\[tfds\]"):
    sources.resolve_inputs("tfds:c4/en", sources.ReadOptions())


@pytest.fixture(scope="module")
def builtin() -> list[list[str]]:
  return read_source("")[0]  # the empty source is the built-in corpus


def test_builtin_corpus_is_large_and_clean(builtin):
  # 79 help() topics and ~600 stdlib modules on CPython 3.11.
  assert len(builtin) > 500
  assert sum(len(line) for document in builtin for line in document) > 1_000_000
  assert all(document and all(line and line == line.strip() for line in document)
             for document in builtin)


# ---------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("lowercase", [True, False])
def test_special_ids_are_fixed_and_never_produced_by_text(lowercase):
  documents = make_documents(30, extra=" [MASK] [CLS] [SEP] [PAD] [UNK]")
  trained = train_tokenizer(documents, vocab_size=150, lowercase=lowercase,
                            max_sentences=10_000, seed=0)
  assert [trained.id_to_piece(i) for i in SPECIAL_IDS] == list(SPECIAL_PIECES.values())
  ids = np.concatenate(trained.encode([line for document in documents for line in document]))
  assert not np.isin(ids, [PAD_ID, CLS_ID, SEP_ID, MASK_ID]).any()
  assert MASK_ID not in trained.encode(["[MASK]"])[0]


def test_lowercase_folds_case(tokenizer):
  assert tokenizer.encode(["Kalo MINE suta"]) == tokenizer.encode(["kalo mine suta"])
  assert tokenizer.decode(tokenizer.encode(["Kalo Mine"])[0]) == "kalo mine"


def test_tokenizer_round_trips_through_a_file(tokenizer, tmp_path):
  path = tmp_path / "tokenizer.model"
  tokenizer.save(str(path))
  loaded = Tokenizer.load(str(path))
  assert loaded.sha256 == tokenizer.sha256 and loaded.vocab_size == tokenizer.vocab_size == 200
  assert loaded.encode(["kalo mine su."]) == tokenizer.encode(["kalo mine su."])
  assert os.listdir(tmp_path) == ["tokenizer.model"]  # no temporary file left behind


def test_training_is_deterministic_and_samples_lines(tokenizer):
  documents = make_documents(40, extra=" [MASK] [CLS] [SEP]")
  again = train_tokenizer(documents, vocab_size=200, lowercase=True, max_sentences=10_000, seed=0)
  assert again.sha256 == tokenizer.sha256
  sampled = [train_tokenizer(documents, vocab_size=200, lowercase=True, max_sentences=300, seed=s)
             for s in (0, 0, 1)]
  assert sampled[0].sha256 == sampled[1].sha256 != sampled[2].sha256


def test_corpus_too_small_for_the_vocabulary():
  with pytest.raises(DataError, match=r"too small for model.vocab_size=30522: SentencePiece can "
                     r"build at most \d+ pieces from it; lower --config.model.vocab_size"):
    train_tokenizer(make_documents(2), vocab_size=30522, lowercase=True, max_sentences=100, seed=0)


def test_a_model_whose_text_can_encode_to_mask_is_refused():
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(  # [MASK] at id 4, but as a piece that text encodes to
      sentence_iterator=iter(["[MASK] kalo mine suta."] * 50), model_writer=model, vocab_size=30,
      pad_id=PAD_ID, pad_piece="[PAD]", unk_id=UNK_ID, unk_piece="[UNK]", bos_id=-1, eos_id=-1,
      control_symbols=["[CLS]", "[SEP]"], user_defined_symbols=["[MASK]"],
      hard_vocab_limit=False, minloglevel=2)
  with pytest.raises(DataError, match=r"does not have \[MASK\] at id 4 as a control symbol"):
    Tokenizer.from_bytes(model.getvalue())


def test_a_file_that_is_not_a_tokenizer_is_refused(tmp_path):
  path = tmp_path / "tokenizer.model"
  path.write_bytes(b"not a model")
  with pytest.raises(DataError, match=re.escape(f"{path} is not a SentencePiece model")):
    Tokenizer.load(str(path))


# ---------------------------------------------------------------------------
# Packing
# ---------------------------------------------------------------------------


def numbered_documents(num_documents: int, seed: int = 0,
                       max_line: int = 30) -> list[list[list[int]]]:
  """Token id 1000 * (document + 1) + position: each token tells where it came from."""
  rng = np.random.default_rng(seed)
  documents = []
  for d in range(num_documents):
    lengths = rng.integers(0, max_line, size=rng.integers(1, 25))  # empty lines included
    ids = iter(range(1000 * (d + 1), 1000 * (d + 2)))
    documents.append([list(itertools.islice(ids, n)) for n in lengths])
  return documents


def check_layout(examples: Examples, length: int) -> None:
  """[CLS] A [SEP] (B [SEP]) then padding, with token types to match, for every row."""
  assert examples.input_ids.shape == examples.token_type_ids.shape == (len(examples), length)
  assert examples.input_ids.dtype == examples.token_type_ids.dtype == np.int32
  for ids, types in zip(examples.input_ids, examples.token_type_ids):
    used = int(np.count_nonzero(ids != PAD_ID))
    assert np.all(ids[used:] == PAD_ID) and np.all(types[used:] == 0)  # padding only at the end
    assert ids[0] == CLS_ID and ids[used - 1] == SEP_ID
    seps = np.flatnonzero(ids == SEP_ID)
    assert len(seps) in (1, 2) and seps[0] > 1 and (len(seps) == 1 or seps[1] > seps[0] + 1)
    np.testing.assert_array_equal(types[:seps[0] + 1], 0)
    np.testing.assert_array_equal(types[seps[0] + 1:used], 1)
    text = ids[(ids != CLS_ID) & (ids != SEP_ID) & (ids != PAD_ID)]
    assert len(set(text // 1000)) == 1  # one document per example
    assert np.all(np.diff(text) > 0)  # in document order


@pytest.mark.parametrize("max_line", [30, 300])  # lines shorter and longer than an example
def test_packed_examples_have_the_electra_layout_and_use_every_token_once(max_line):
  documents = numbered_documents(200, max_line=max_line)
  examples = pack_documents(documents, 32, np.random.default_rng(0), 0.1, 0.05)
  check_layout(examples, 32)
  packed = examples.input_ids[examples.input_ids >= 1000]  # row by row: the corpus order
  corpus = [token for document in documents for line in document for token in line]
  np.testing.assert_array_equal(packed, corpus)
  again = pack_documents(documents, 32, np.random.default_rng(0), 0.1, 0.05)
  np.testing.assert_array_equal(again.input_ids, examples.input_ids)


def test_short_sequence_targets_make_shorter_examples():
  documents = [[list(range(1000 + 8 * i, 1008 + 8 * i)) for i in range(100)]]
  lengths = {}
  for prob in (0.0, 1.0):
    examples = pack_documents(documents, 64, np.random.default_rng(0), 0.1, prob)
    check_layout(examples, 64)
    lengths[prob] = np.count_nonzero(examples.input_ids, axis=1).mean()
  assert lengths[1.0] < 0.8 * lengths[0.0]


@pytest.mark.parametrize("line_length", [8, 200])  # sentences, and paragraphs cut into examples
def test_about_a_tenth_of_examples_are_single_segment(line_length):
  documents = [[list(range(start, start + line_length)) for start in
                range(1000 * (d + 1), 1000 * (d + 1) + 640, line_length)] for d in range(300)]
  examples = pack_documents(documents, 64, np.random.default_rng(0), 0.1, 0.0)
  check_layout(examples, 64)
  full = np.count_nonzero(examples.input_ids, axis=1) > 32  # not a document's short remainder
  single = np.count_nonzero(examples.input_ids == SEP_ID, axis=1) == 1
  assert full.sum() > 2500 and 0.08 < single[full].mean() < 0.12
