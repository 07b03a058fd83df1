"""The data package: sources, tokenizer, ELECTRA packing, batches, and prepare()."""

import io
import itertools
import logging
import os
import re

import numpy as np
import pytest
import sentencepiece as spm

from electra_jax.config import default_config
from electra_jax.data import pipeline
from electra_jax.data.builtin_corpus import builtin_documents
from electra_jax.data.packing import Examples, pack_documents
from electra_jax.data.sources import iter_documents
from electra_jax.data.tokenizer import (CLS_ID, MASK_ID, PAD_ID, SEP_ID, SPECIAL_PIECES, UNK_ID,
                                        Tokenizer, train_tokenizer)
from electra_jax.errors import DataError

SPECIAL_IDS = list(SPECIAL_PIECES)


def make_documents(num_documents: int, lines_per_document: int = 12, seed: int = 0,
                   extra: str = "") -> list[list[str]]:
  """Sentences of made-up words: enough text for a tokenizer of a few hundred pieces."""
  rng = np.random.default_rng(seed)
  syllables = ["ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "ve", "da", "gu", "he"]
  words = ["".join(rng.choice(syllables, size=rng.integers(1, 4))) for _ in range(300)]
  words[:3] = ["Kalo", "Mine", "Suta"]
  return [[" ".join(rng.choice(words, size=rng.integers(4, 14))) + "." + extra
           for _ in range(lines_per_document)] for _ in range(num_documents)]


def write_corpus(path, documents: list[list[str]]) -> str:
  path.write_text("\n\n".join("\n".join(lines) for lines in documents) + "\n")
  return str(path)


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
  (tmp_path / "c.txt").write_text("six\n")
  source = f"{tmp_path}/[ab].txt, {tmp_path / 'c.txt'}"
  assert list(iter_documents(source)) == [["one", "two"], ["three"], ["four"], ["five"], ["six"]]


@pytest.mark.parametrize("name", ["missing.txt", "*.missing"])
def test_unmatched_path_names_the_pattern(tmp_path, name):
  pattern = str(tmp_path / name)
  with pytest.raises(DataError, match=re.escape(f"no file matches '{pattern}'")):
    iter_documents(pattern)


def test_directory_source_suggests_a_glob(tmp_path):
  with pytest.raises(DataError, match=r"is a directory.*\*\.txt"):
    iter_documents(str(tmp_path))


def test_empty_corpus_names_the_source(tmp_path):
  source = write_corpus(tmp_path / "empty.txt", [])
  with pytest.raises(DataError, match=re.escape(f"the corpus '{source}' has no text")):
    list(iter_documents(source))


def test_binary_files_and_undecodable_lines_are_skipped_and_reported(tmp_path, caplog):
  binary = tmp_path / "a.bin"
  binary.write_bytes(b"\x00\x01\x02 text\n")
  mixed = tmp_path / "b.txt"
  mixed.write_bytes(b"good line\n\xff\xfe bad\nal\xe9 bad\nlast line\n")
  with caplog.at_level(logging.WARNING):
    documents = list(iter_documents(f"{binary},{mixed}"))
  assert documents == [["good line", "last line"]]
  assert f"Skipping {binary}: it looks binary" in caplog.text
  assert f"Skipped 2 line(s) of {mixed}" in caplog.text


def test_only_binary_files_is_an_empty_corpus(tmp_path):
  (tmp_path / "a.bin").write_bytes(b"\x00" * 100)
  with pytest.raises(DataError, match="has no text"):
    list(iter_documents(str(tmp_path / "*.bin")))


def test_unreadable_file_is_named(tmp_path):
  path = tmp_path / "gone.txt"
  path.write_text("text\n")
  documents = iter_documents(str(path))
  path.unlink()  # disappears between resolving and reading
  with pytest.raises(DataError, match=re.escape(f"cannot read {path}")):
    list(documents)


@pytest.fixture(scope="module")
def builtin() -> list[list[str]]:
  return builtin_documents()


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


def numbered_documents(num_documents: int, seed: int = 0) -> list[list[list[int]]]:
  """Token id 1000 * (document + 1) + position: each token tells where it came from."""
  rng = np.random.default_rng(seed)
  documents = []
  for d in range(num_documents):
    lengths = rng.integers(0, 30, size=rng.integers(1, 25))  # empty lines included
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


def test_packed_examples_have_the_electra_layout():
  documents = numbered_documents(200)
  examples = pack_documents(documents, 32, np.random.default_rng(0), 0.1, 0.05)
  check_layout(examples, 32)
  packed = examples.input_ids[examples.input_ids >= 1000]
  assert len(np.unique(packed)) == len(packed)  # no token is used twice
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


def test_about_a_tenth_of_examples_are_single_segment():
  # Lines of 8 tokens filling 64 exactly: every example would have two segments.
  documents = [[list(range(1000 * (d + 1) + 8 * i, 1000 * (d + 1) + 8 * i + 8)) for i in range(80)]
               for d in range(300)]
  examples = pack_documents(documents, 64, np.random.default_rng(0), 0.1, 0.0)
  single = np.count_nonzero(examples.input_ids == SEP_ID, axis=1) == 1
  assert len(examples) == 3000 and 0.08 < single.mean() < 0.12


# ---------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------


def row_examples(n: int, length: int = 4) -> Examples:
  """Row i holds the value i everywhere: a batch shows which rows it took."""
  rows = np.repeat(np.arange(n, dtype=np.int32)[:, None], length, axis=1)
  return Examples(input_ids=rows, token_type_ids=rows % 2)


def test_train_batches_resume_exactly_and_cover_each_epoch_once():
  examples = row_examples(10)
  batches = itertools.islice(pipeline.train_batches(examples, 3, seed=7), 12)
  stream = [batch["input_ids"][:, 0] for batch in batches]
  for epoch in range(4):  # 3 batches per epoch, each leaving out one row of the 10
    rows = np.concatenate(stream[3 * epoch:3 * epoch + 3])
    assert len(set(rows)) == 9
  assert not all(np.array_equal(a, b) for a, b in zip(stream[:3], stream[3:6]))
  resumed = itertools.islice(pipeline.train_batches(examples, 3, seed=7, start_step=5), 7)
  for expected, batch in zip(stream[5:], resumed, strict=True):
    np.testing.assert_array_equal(batch["input_ids"][:, 0], expected)
    assert batch["input_ids"].dtype == batch["token_type_ids"].dtype == np.int32
    np.testing.assert_array_equal(batch["token_type_ids"], batch["input_ids"] % 2)


def test_too_few_training_examples_for_a_batch():
  with pytest.raises(DataError, match=r"has 3 examples, fewer than train.batch_size=4; lower "
                     r"--config.train.batch_size"):
    pipeline.train_batches(row_examples(3), 4, 0)


def test_eval_batches_are_the_first_full_batches_in_order():
  batches = pipeline.eval_batches(row_examples(10), 3, 5)
  assert [b["input_ids"][:, 0].tolist() for b in batches] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
  assert len(pipeline.eval_batches(row_examples(10), 3, 2)) == 2


def test_eval_split_smaller_than_a_batch_is_padded():
  (batch,) = pipeline.eval_batches(row_examples(2), 4, 5)
  assert batch["input_ids"][:, 0].tolist() == [0, 1, PAD_ID, PAD_ID]
  assert np.all(batch["input_ids"][2:] == PAD_ID) and np.all(batch["token_type_ids"][2:] == 0)


# ---------------------------------------------------------------------------
# prepare()
# ---------------------------------------------------------------------------


def small_config(source: str, vocab_size: int = 200):
  config = default_config()
  config.data.source = source
  config.data.max_seq_length = 32
  config.data.eval_fraction = 0.1
  config.model.vocab_size = vocab_size
  return config


def test_prepare_trains_saves_and_reuses_the_tokenizer(tmp_path):
  source = write_corpus(tmp_path / "corpus.txt", make_documents(40))
  workdir = tmp_path / "run"
  data = pipeline.prepare(small_config(source), str(workdir))
  assert os.listdir(workdir) == ["tokenizer.model"]
  assert data.tokenizer.vocab_size == 200 and len(data.train) > len(data.eval) > 0

  again = pipeline.prepare(small_config(source), str(workdir))
  assert again.tokenizer.sha256 == data.tokenizer.sha256
  np.testing.assert_array_equal(again.train.input_ids, data.train.input_ids)
  np.testing.assert_array_equal(again.eval.input_ids, data.eval.input_ids)


def test_prepare_refuses_a_tokenizer_of_another_size(tmp_path):
  source = write_corpus(tmp_path / "corpus.txt", make_documents(40))
  pipeline.prepare(small_config(source), str(tmp_path))
  saved = (tmp_path / "tokenizer.model").read_bytes()
  with pytest.raises(DataError, match=r"tokenizer.model has 200 pieces but model.vocab_size=300; "
                     r"set --config.model.vocab_size=200"):
    pipeline.prepare(small_config(source, vocab_size=300), str(tmp_path))
  assert (tmp_path / "tokenizer.model").read_bytes() == saved


def test_prepare_writes_nothing_when_the_corpus_is_missing(tmp_path):
  workdir = tmp_path / "run"
  with pytest.raises(DataError, match="no file matches"):
    pipeline.prepare(small_config(str(tmp_path / "missing.txt")), str(workdir))
  assert not workdir.exists()


def test_prepare_needs_two_documents(tmp_path):
  source = write_corpus(tmp_path / "corpus.txt", make_documents(1, lines_per_document=200))
  with pytest.raises(DataError, match="has 1 document"):
    pipeline.prepare(small_config(source), str(tmp_path / "run"))


def test_eval_documents_are_held_out_by_content():
  documents = make_documents(200, lines_per_document=2)
  train, eval_ = pipeline.split_documents(documents, 0.1, "corpus")
  assert len(eval_) == 20 and len(train) == 180
  shuffled_train, shuffled_eval = pipeline.split_documents(documents[::-1], 0.1, "corpus")
  assert shuffled_eval == eval_[::-1] and shuffled_train == train[::-1]
  assert [len(s) for s in pipeline.split_documents(documents[:3], 0.01, "c")] == [2, 1]
