"""The WordPiece tokenizer: BERT's tokenization exactly, our special ids, files."""

import os

import pytest

from convert_helpers import TRICKY, corpus, our_order_pieces
from electra_jax.data import any_tokenizer
from electra_jax.data.wordpiece import WordPieceTokenizer
from electra_jax.errors import DataError
from electra_jax.vocabulary import CLS_ID, MASK_ID, PAD_ID, SEP_ID, UNK_ID

@pytest.fixture(name="tokenizer")
def fixture_tokenizer():
  return WordPieceTokenizer(our_order_pieces(), lowercase=True)


def pieces(tokenizer, text):
  return [tokenizer.id_to_piece(i) for i in tokenizer.encode([text])[0]]


def test_basic_splitting_and_longest_match_first(tokenizer):
  assert pieces(tokenizer, "The QUICK, unaffable fox!") == [
      "the", "quick", ",", "un", "##aff", "##able", "fox", "!"]
  assert pieces(tokenizer, "Élan") == ["e", "##l", "##a", "##n"]  # accent stripped, then cut
  assert pieces(tokenizer, "x日y") == ["x", "[UNK]", "y"]  # a CJK ideograph is a word of its own
  assert pieces(tokenizer, "a" * 100) == ["a"] + ["##a"] * 99
  assert pieces(tokenizer, "a" * 101) == ["[UNK]"]
  assert pieces(tokenizer, "fox\x00es\u200b \u00a0dog") == ["fox", "##e", "##s", "dog"]


def test_cased_keeps_case_and_accents():
  tokenizer = WordPieceTokenizer(our_order_pieces(), lowercase=False)
  assert pieces(tokenizer, "The é") == ["[UNK]", "é"]


def test_special_tokens_are_never_produced_by_text(tokenizer):
  ids = tokenizer.encode(["[MASK] [CLS] [SEP] [PAD] [UNK] the"])[0]
  assert not {PAD_ID, CLS_ID, SEP_ID, MASK_ID} & set(ids)
  assert tokenizer.decode([CLS_ID, *tokenizer.encode(["un fox"])[0], SEP_ID, PAD_ID, UNK_ID,
                           MASK_ID]) == "un fox [UNK]"


def test_decode_glues_continuations(tokenizer):
  assert tokenizer.decode(tokenizer.encode(["The unaffable fox."])[0]) == "the unaffable fox ."


def test_save_load_and_the_single_loader(tokenizer, tmp_path):
  path = any_tokenizer.save_tokenizer(tokenizer, str(tmp_path))
  assert os.listdir(tmp_path) == ["vocab.txt"] and path == str(tmp_path / "vocab.txt")
  loaded = any_tokenizer.load_tokenizer(str(tmp_path), lowercase=True)
  assert isinstance(loaded, WordPieceTokenizer) and loaded.sha256 == tokenizer.sha256
  assert loaded.encode(TRICKY) == tokenizer.encode(TRICKY)
  cased = any_tokenizer.load_tokenizer(str(tmp_path), lowercase=False)
  assert cased.sha256 != tokenizer.sha256  # the casing decides ids too
  assert any_tokenizer.load_tokenizer(str(tmp_path / "none"), lowercase=True) is None


def test_two_tokenizers_in_one_directory_is_an_error(tokenizer, tmp_path):
  tokenizer.save(str(tmp_path / "vocab.txt"))
  (tmp_path / "tokenizer.model").write_bytes(b"")
  with pytest.raises(DataError, match="holds two tokenizers"):
    any_tokenizer.load_tokenizer(str(tmp_path), lowercase=True)


def test_equals_bert_basic_and_wordpiece_tokenizers(tmp_path):
  """Ours against transformers' pure-Python BERT tokenizer (the original algorithm) and its
  Rust one, with an uncased vocabulary trained on the built-in corpus."""
  reason = "the comparison needs transformers and tokenizers: pip install -e '.[hf]'"
  transformers = pytest.importorskip("transformers", reason=reason)
  tokenizers = pytest.importorskip("tokenizers", reason=reason)
  legacy_bert = pytest.importorskip("transformers.models.bert.tokenization_bert_legacy",
                                    reason="this transformers has no pure-Python BERT tokenizer")

  lines = [line for document in corpus() for line in document]
  trainer = tokenizers.BertWordPieceTokenizer(lowercase=True)
  trainer.train_from_iterator(lines[::4], vocab_size=2000,
                              special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
  vocab = sorted(trainer.get_vocab(), key=trainer.get_vocab().get)
  (tmp_path / "vocab.txt").write_text("".join(f"{piece}\n" for piece in vocab), encoding="utf-8")
  ours = WordPieceTokenizer.load(str(tmp_path / "vocab.txt"), lowercase=True)
  legacy = legacy_bert.BertTokenizerLegacy(str(tmp_path / "vocab.txt"), do_lower_case=True)
  rust = transformers.BertTokenizer(str(tmp_path / "vocab.txt"), do_lower_case=True)

  for text in TRICKY + lines[1::50]:
    expected = legacy.tokenize(text)
    assert pieces(ours, text) == expected, text
    assert rust.convert_ids_to_tokens(rust(text, add_special_tokens=False)["input_ids"]) == expected
