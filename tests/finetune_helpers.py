"""A tiny pre-trained model and tiny task files (GLUE, CoNLL, SQuAD) for the fine-tuning tests."""

import json
import os

import flax.traverse_util
import numpy as np

from convert_helpers import our_order_pieces, tiny_config, write_run
from electra_jax.convert import flax_format
from electra_jax.data.wordpiece import WordPieceTokenizer
from electra_jax.finetune import config as finetune_config

POSITIVE = ["good", "great", "fun", "fine"]
NEGATIVE = ["bad", "dull", "awful", "sad"]
WORDS = POSITIVE + NEGATIVE + ["the", "quick", "brown", "fox", "lazy", "dog", "is", "a", "in"]


def tokenizer() -> WordPieceTokenizer:
  """convert_helpers' vocabulary plus the words of the test sentences."""
  pieces = our_order_pieces()
  return WordPieceTokenizer(pieces + [w for w in WORDS if w not in pieces], lowercase=True)


def export_model(directory, num_layers=2) -> str:
  """A finished pre-training run's files (config.json, params.msgpack, vocab.txt), its weights
  drawn as the model's initializer draws them (normal(0.02), LayerNorms 1, biases 0)."""
  config = tiny_config()
  config.model.vocab_size = tokenizer().vocab_size
  config.model.num_layers = num_layers
  rng = np.random.default_rng(0)
  shapes = flax.traverse_util.flatten_dict(flax_format.param_shapes(config))
  params = flax.traverse_util.unflatten_dict({
      path: (np.ones(leaf.shape) if path[-1] == "scale" else np.zeros(leaf.shape)
             if path[-1] == "bias" else rng.normal(0, 0.02, leaf.shape)).astype(np.float32)
      for path, leaf in shapes.items()})
  path = str(directory)
  write_run(path, config, params, tokenizer())
  return path


def sentiment_rows(count: int, seed: int) -> list[tuple[str, int]]:
  """Sentences whose label is whether their one sentiment word is positive."""
  rng = np.random.default_rng(seed)
  rows = []
  for _ in range(count):
    label = int(rng.integers(2))
    word = (POSITIVE if label else NEGATIVE)[rng.integers(4)]
    rows.append((f"the {WORDS[8 + rng.integers(6)]} is {word} .", label))
  return rows


def write(path, text: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)


def write_sst2(root, train=64, dev=32) -> None:
  for split, count, seed in (("train", train, 0), ("dev", dev, 1)):
    rows = "".join(f"{s}\t{y}\n" for s, y in sentiment_rows(count, seed))
    write(os.path.join(root, "SST-2", f"{split}.tsv"), "sentence\tlabel\n" + rows)


def write_conll(directory, sentences=48, seed=0) -> None:
  """Sentences in which 'fox' and 'lazy dog' are entities (B-ANI, B-ANI I-ANI)."""
  rng = np.random.default_rng(seed)
  for split, count in (("train", sentences), ("dev", sentences // 2)):
    blocks = ["-DOCSTART- -X- O O\n"]
    for _ in range(count):
      lines = []
      for word in rng.choice(["the", "quick", "fox", "is", "a", "lazy dog", "brown"], 5):
        for i, token in enumerate(word.split()):
          tag = "O" if token not in ("fox", "dog", "lazy") else (
              "B-ANI" if i == 0 else "I-ANI")
          lines.append(f"{token} NN I-NP {tag}\n")
      blocks.append("".join(lines))
    write(os.path.join(directory, f"{split}.txt"), "\n".join(blocks))


def squad_document(version: int, count: int, seed: int) -> dict:
  """Paragraphs naming a color, questions asking it (2.0: some with the answer missing)."""
  rng = np.random.default_rng(seed)
  colors = ["brown", "quick", "lazy"]
  paragraphs = []
  for i in range(count):
    color = colors[rng.integers(3)]
    context = f"the dog is {color} . " + "the fox is a dog . " * int(rng.integers(1, 4))
    impossible = version == 2 and i % 4 == 3
    if impossible:
      context = "the fox is a dog . " * 2
    answers = [] if impossible else [{"text": color, "answer_start": context.index(color)}]
    qa = {"id": f"q{i}", "question": "what is the dog ?", "answers": answers}
    if version == 2:
      qa["is_impossible"] = impossible
    paragraphs.append({"context": context, "qas": [qa]})
  return {"version": f"{version}.0", "data": [{"title": "t", "paragraphs": paragraphs}]}


def write_squad(directory, version: int, train=48, dev=16) -> None:
  suffix = "v1.1" if version == 1 else "v2.0"
  for split, count, seed in (("train", train, 0), ("dev", dev, 1)):
    write(os.path.join(directory, f"{split}-{suffix}.json"),
          json.dumps(squad_document(version, count, seed)))


def config(task: str, init: str, data_dir: str, **train):
  """A small fine-tuning config: 32 tokens, batches of 8, a learning rate for a tiny model."""
  c = finetune_config.default_config(task)
  c.update(init=init, data_dir=data_dir, max_seq_length=32, max_query_length=12, doc_stride=8)
  c.train.update(batch_size=8, eval_batch_size=8, epochs=2, log_every=4)
  c.train.update(**train)
  c.optim.learning_rate = 5e-3
  finetune_config.validate(c)
  return c
