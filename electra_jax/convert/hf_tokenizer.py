"""Our tokenizers <-> the tokenizer files of a Hugging Face folder.

Writing: a WordPiece vocabulary becomes `vocab.txt` + `tokenizer_config.json`
(what BertTokenizer and ElectraTokenizer read); a SentencePiece model becomes a
`tokenizer.json` for transformers' fast tokenizers (the same unigram pieces,
scores and normalization, so the same ids) and is also kept as
`tokenizer.model`, from which an import recovers it exactly. transformers'
ElectraTokenizer and ElectraTokenizerFast are WordPiece only: given a
SentencePiece folder they would build a WordPiece model from its pieces and
silently read most words as [UNK], so the folder makes them fail instead (see
`_WORDPIECE_ONLY`), and AutoTokenizer loads it.

Reading: `tokenizer.model` when present, else `vocab.txt`. Our code keeps the
special tokens at ids 0-4, so a vocabulary that has them elsewhere (Google's
has [UNK] [CLS] [SEP] [MASK] at 100-103) is reordered: the five special pieces
first, then every other piece in its original order. `order` records the
move, to reorder the embedding rows the same way.
"""

import dataclasses
import json
import os

import numpy as np

from electra_jax.convert import import_optional
from electra_jax.data.any_tokenizer import AnyTokenizer
from electra_jax.data.sentencepiece_tokenizer import Tokenizer
from electra_jax.data.wordpiece import read_vocab, WordPieceTokenizer
from electra_jax.errors import DataError
from electra_jax.runtime import fileio
from electra_jax.runtime.workdir import SENTENCEPIECE_FILE, WORDPIECE_FILE
from electra_jax.vocabulary import (CLS_ID, CLS_PIECE, MASK_PIECE, PAD_PIECE, SEP_ID, SEP_PIECE,
                                    SPECIAL_PIECES, UNK_ID, UNK_PIECE)

TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
FAST_TOKENIZER_FILE = "tokenizer.json"
_SPECIAL_TOKENS = {"pad_token": PAD_PIECE, "unk_token": UNK_PIECE, "cls_token": CLS_PIECE,
                   "sep_token": SEP_PIECE, "mask_token": MASK_PIECE}
_SENTENCEPIECE_SPACE = "\u2581"
# transformers' WordPiece classes pass `tokenize_chinese_chars` to their normalizer,
# which accepts only a bool; this sentence makes them fail loudly (TypeError) and
# tells whoever opens tokenizer_config.json why. AutoTokenizer ignores the setting.
_WORDPIECE_ONLY = ("not a WordPiece tokenizer: ElectraTokenizer and ElectraTokenizerFast would "
                   "read its words as [UNK]; load it with AutoTokenizer")
_CONTROL_PIECE = 3  # SentencePiece's ModelProto.SentencePiece.Type.CONTROL


@dataclasses.dataclass(frozen=True)
class ImportedTokenizer:
  """A folder's tokenizer in our id order; `order[i]` is the folder's id of our id i."""

  tokenizer: AnyTokenizer
  order: np.ndarray
  path: str  # the file it was read from

  @property
  def reordered(self) -> bool:
    return not np.array_equal(self.order, np.arange(len(self.order)))


def write_wordpiece_casing(directory: str, tokenizer: WordPieceTokenizer) -> None:
  """The one setting of a WordPiece tokenizer that vocab.txt lacks, as transformers keeps it."""
  fileio.atomic_write(os.path.join(directory, TOKENIZER_CONFIG_FILE),
                      json.dumps({"do_lower_case": tokenizer.lowercase}, indent=2))


def write_tokenizer(directory: str, tokenizer: AnyTokenizer, max_length: int) -> None:
  """The tokenizer files transformers' AutoTokenizer loads, giving our ids."""
  settings = {**_SPECIAL_TOKENS, "model_max_length": max_length,
              "model_input_names": ["input_ids", "token_type_ids", "attention_mask"]}
  if isinstance(tokenizer, WordPieceTokenizer):
    tokenizer.save(os.path.join(directory, WORDPIECE_FILE))
    settings.update(tokenizer_class="ElectraTokenizer", do_lower_case=tokenizer.lowercase,
                    strip_accents=None, tokenize_chinese_chars=True)
  else:
    tokenizer.save(os.path.join(directory, SENTENCEPIECE_FILE))
    fast = _fast_tokenizer(tokenizer)
    fileio.atomic_write(os.path.join(directory, FAST_TOKENIZER_FILE), fast.to_str(pretty=True))
    settings.update(tokenizer_class="PreTrainedTokenizerFast",
                    tokenize_chinese_chars=_WORDPIECE_ONLY)
  fileio.atomic_write(os.path.join(directory, TOKENIZER_CONFIG_FILE),
                      json.dumps(settings, indent=2))


def read_tokenizer(directory: str, vocab_size: int) -> ImportedTokenizer:
  """The tokenizer of a Hugging Face folder, with the special tokens moved to ids 0-4.

  `vocab_size` is config.json's: the vocabulary must have exactly that many pieces.
  """
  sentencepiece = os.path.join(directory, SENTENCEPIECE_FILE)
  vocab = os.path.join(directory, WORDPIECE_FILE)
  if fileio.exists(sentencepiece):
    tokenizer, order, path = Tokenizer.load(sentencepiece), np.arange(vocab_size), sentencepiece
    size = tokenizer.vocab_size
  elif fileio.exists(vocab):
    pieces, path = read_vocab(vocab), vocab
    size = len(pieces)
    order = _special_first(pieces, vocab)
    tokenizer = WordPieceTokenizer([pieces[i] for i in order], wordpiece_lowercase(directory),
                                   origin=vocab)
  else:
    raise DataError(f"{directory} has no tokenizer: neither {WORDPIECE_FILE} (WordPiece) nor "
                    f"{SENTENCEPIECE_FILE} (SentencePiece); copy the tokenizer files of the "
                    "model into it")
  if size != vocab_size:
    raise DataError(f"{path} has {size} pieces but {directory}/config.json says "
                    f"vocab_size={vocab_size}; they must belong to the same model")
  return ImportedTokenizer(tokenizer, order, path)


def _special_first(pieces: list[str], path: str) -> np.ndarray:
  """Old ids in our order: the special pieces at 0-4, then the rest as they were."""
  missing = [piece for piece in SPECIAL_PIECES.values() if piece not in pieces]
  if missing:
    raise DataError(f"{path} lacks the special token(s) {', '.join(missing)} that ELECTRA needs")
  special = [pieces.index(SPECIAL_PIECES[i]) for i in sorted(SPECIAL_PIECES)]
  rest = sorted(set(range(len(pieces))) - set(special))
  return np.asarray(special + rest)


def wordpiece_lowercase(directory: str) -> bool:
  """Whether a folder's WordPiece tokenizer is uncased (BERT's default when unsaid)."""
  path = os.path.join(directory, TOKENIZER_CONFIG_FILE)
  if not fileio.exists(path):
    return True
  try:
    with fileio.open_text(path) as f:
      settings = json.load(f)
  except (OSError, ValueError) as error:
    raise DataError(f"cannot read {path}: {error}") from None
  lowercase = settings.get("do_lower_case", True)
  unsupported = [key for key, supported in (("strip_accents", lowercase),
                                             ("tokenize_chinese_chars", True))
                 if settings.get(key) not in (None, supported)]
  if unsupported:
    setting = ", ".join(f"{key}={settings[key]}" for key in unsupported)
    raise DataError(f"{path} sets {setting}, which electra_jax's WordPiece tokenizer does not "
                    "support (it follows BERT: accents stripped exactly when lower-casing, CJK "
                    "characters split)")
  return bool(lowercase)


def _fast_tokenizer(tokenizer: Tokenizer):
  """A `tokenizers.Tokenizer` equal to our SentencePiece unigram model.

  The pieces and scores are the model's; the normalizer replays SentencePiece's
  own (its precompiled character map, then trimmed and collapsed spaces) and
  the pre-tokenizer marks word starts with "▁" as SentencePiece does. Special
  tokens are added as such, and [CLS] A [SEP] B [SEP] framing as ELECTRA reads it.
  """
  tokenizers = import_optional("tokenizers")
  model_pb2 = import_optional("sentencepiece.sentencepiece_model_pb2", package="protobuf")
  proto = model_pb2.ModelProto()
  proto.ParseFromString(tokenizer.model_proto)
  fast = tokenizers.Tokenizer(tokenizers.models.Unigram(
      [(piece.piece, piece.score) for piece in proto.pieces], unk_id=UNK_ID, byte_fallback=False))
  fast.normalizer = tokenizers.normalizers.Sequence([
      tokenizers.normalizers.Precompiled(proto.normalizer_spec.precompiled_charsmap),
      tokenizers.normalizers.Strip(),
      tokenizers.normalizers.Replace(tokenizers.Regex(" {2,}"), " "),
  ])
  fast.pre_tokenizer = tokenizers.pre_tokenizers.Metaspace(replacement=_SENTENCEPIECE_SPACE,
                                                           prepend_scheme="always")
  fast.decoder = tokenizers.decoders.Metaspace(replacement=_SENTENCEPIECE_SPACE,
                                               prepend_scheme="always")
  fast.add_special_tokens([
      tokenizers.AddedToken(piece.piece, special=True, normalized=False)
      for piece in proto.pieces if piece.type == _CONTROL_PIECE])
  fast.post_processor = tokenizers.processors.TemplateProcessing(
      single=f"{CLS_PIECE}:0 $A:0 {SEP_PIECE}:0",
      pair=f"{CLS_PIECE}:0 $A:0 {SEP_PIECE}:0 $B:1 {SEP_PIECE}:1",
      special_tokens=[(CLS_PIECE, CLS_ID), (SEP_PIECE, SEP_ID)])
  return fast
