"""Tiny models, vocabularies and runs for the conversion tests (shared by several files)."""

import functools
import os

import flax.traverse_util
import numpy as np

from electra_jax import config as config_lib
from electra_jax.convert import flax_format
from electra_jax.convert.run_export import export_run
from electra_jax.data import builtin_documents
from electra_jax.data.wordpiece import WordPieceTokenizer
from electra_jax.vocabulary import SPECIAL_PIECES

SPECIAL = list(SPECIAL_PIECES.values())
VOCAB_SIZE = 100
LENGTH = 16

# Accents and case, punctuation of every kind, CJK ideographs between other scripts,
# words the vocabulary cannot cut, over-long words, odd whitespace and control characters.
TRICKY = [
    "Café naïve résumé Ångström ÉCOLE İstanbul straße ﬁne Σίσυφος ΣΟΦΙΑ",
    "hello,world!! (x) $5.00 — 'quotes' «guillemets» ... don't 3.14 10% a_b c\\d ^e `f` ~g |h",
    "日本語のテキスト 中文字符 한국어 カタカナ 𠀀",
    "supercalifragilisticexpialidocious xyzzy qwfp zzzzzz " + "a" * 101,
    "tab\there\nnew\r\u00a0nbsp\u3000wide\u2003em zero\u200bwidth soft\u00adhyphen \u2028line",
    "emoji 😀👍🏽 ✓ ©® e\u0301 NUL\x00char \ufffd \x07bell \x0bvt \x1cfs",
    "  leading   and trailing  ", "", "Full-width ＡＢＣ １２３ ℌ ⅸ ① ㎏",
]

# (embedding_size, hidden_size, generator_size, generator_layers): embeddings as wide as
# the discriminator or narrower, and generators narrower (and shallower) than it.
SIZES = {
    "embedding_equals_hidden": (32, 32, 0.5, 1.0),
    "embedding_below_hidden": (16, 32, 0.5, 1.0),
    "shallow_generator": (24, 32, 0.5, 0.5),
}


@functools.cache
def corpus() -> list[list[str]]:
  """The built-in corpus, read once (it takes seconds) for all the tests that need it."""
  return builtin_documents()


def tiny_config(embedding_size=16, hidden_size=32, generator_size=0.5, generator_layers=1.0):
  config = config_lib.default_config()
  config.model.update(vocab_size=VOCAB_SIZE, embedding_size=embedding_size,
                      hidden_size=hidden_size, num_layers=2, num_heads=2, intermediate_size=64,
                      max_position_embeddings=64, generator_size=generator_size,
                      generator_layers=generator_layers)
  config.data.max_seq_length = LENGTH
  config_lib.validate(config)
  return config


def random_params(config, seed=0) -> dict:
  """Random values in every parameter (no bias 0, no LayerNorm scale 1), so that parity
  tests see a mistake in any of them. numpy, not the model's initializer: much faster."""
  rng = np.random.default_rng(seed)
  shapes = flax.traverse_util.flatten_dict(flax_format.param_shapes(config))
  return flax.traverse_util.unflatten_dict({
      path: ((path[-1] == "scale") + rng.normal(0, 0.1, leaf.shape)).astype(np.float32)
      for path, leaf in shapes.items()})


def google_order_pieces(size=VOCAB_SIZE) -> list[str]:
  """A WordPiece vocabulary laid out like Google's: [PAD], unused slots, then [UNK]...[MASK]."""
  letters = [chr(ord("a") + i) for i in range(26)]
  pieces = (["[PAD]"] + [f"[unused{i}]" for i in range(4)] + SPECIAL[1:] +
            ["the", "quick", "brown", "fox", "jump", "over", "lazy", "dog", "un", "##aff",
             "##able", ".", ",", "!", "'", "é"] + letters + [f"##{c}" for c in letters])
  return pieces + [f"w{i}" for i in range(size - len(pieces))]


def our_order_pieces(size=VOCAB_SIZE) -> list[str]:
  """The same vocabulary with the special tokens first, as an import reorders it."""
  pieces = google_order_pieces(size)
  return SPECIAL + [p for p in pieces if p not in SPECIAL]


def write_vocab(path, pieces) -> None:
  with open(path, "w", encoding="utf-8") as f:
    f.writelines(f"{piece}\n" for piece in pieces)


def write_run(workdir, config, params, tokenizer=None) -> None:
  """A finished pre-training run: config.json, params.msgpack, the tokenizer."""
  os.makedirs(workdir, exist_ok=True)
  tokenizer = tokenizer or WordPieceTokenizer(our_order_pieces(), lowercase=True)
  flax_format.write(str(workdir), flax_format.SavedModel(config, params, tokenizer))


def exported_random_run(directory, sizes=()) -> tuple:
  """A finished run with random parameters in `directory`/run, and its HF export in /hf."""
  config = tiny_config(*sizes)
  params = random_params(config)
  write_run(directory / "run", config, params)
  export_run(str(directory / "run"), "hf", str(directory / "hf"))
  return config, params


def example_batch(batch=3, seed=0) -> tuple[np.ndarray, np.ndarray]:
  """Ids of ordinary pieces framed by [CLS] ... [SEP], one row padded; segments A and B."""
  ids = np.random.default_rng(seed).integers(len(SPECIAL), VOCAB_SIZE, (batch, LENGTH))
  ids[:, 0], ids[:, -1], ids[1, 9:] = 2, 3, 0
  types = np.zeros_like(ids)
  types[:, LENGTH // 2:] = 1
  types[1, 9:] = 0
  return ids.astype(np.int32), types.astype(np.int32)
