"""Our ELECTRA against transformers' own implementation, both directions, in float32.

Random weights in every parameter, identical inputs (padding and both segments
included); discriminator logits, generator logits and every layer's hidden
states must agree to 1e-4.
"""

import os

import flax.traverse_util
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="the parity tests need torch and transformers: pip install -e '.[hf]'")
transformers = pytest.importorskip(
    "transformers", reason="the parity tests need torch and transformers: pip install -e '.[hf]'")

from convert_helpers import (LENGTH, SIZES, TRICKY, corpus,  # pylint: disable=wrong-import-position
                             example_batch, exported_random_run, google_order_pieces,
                             our_order_pieces, random_params, tiny_config, write_run,
                             write_vocab)
from electra_jax.convert import pretrained
from electra_jax.convert.run_export import export_run
from electra_jax.data import train_tokenizer
from electra_jax.data.wordpiece import WordPieceTokenizer
from electra_jax.models import electra

TOLERANCE = 1e-4
def hf_outputs(model, ids, types):
  with torch.no_grad():
    out = model(torch.tensor(ids, dtype=torch.long),
                attention_mask=torch.tensor(ids != 0, dtype=torch.long),
                token_type_ids=torch.tensor(types, dtype=torch.long), output_hidden_states=True)
  return out.logits.numpy(), [h.numpy() for h in out.hidden_states]


def our_outputs(config, params, ids, types, network):
  """Logits at every position, and the hidden states transformers reports: the encoder's
  input (after the projection, when there is one), then the output of each layer."""
  model = electra.build_pretrainer(config)
  ids, types = jnp.asarray(ids), jnp.asarray(types)
  if network == "generator":
    positions = jnp.broadcast_to(jnp.arange(LENGTH), ids.shape)
    args, method = (ids, types, positions), "generator_logits"
  else:
    args, method = (ids, types), "discriminator_logits"
  logits, state = model.apply({"params": params}, *args, method=method,
                              capture_intermediates=True, mutable=["intermediates"])
  captured = state["intermediates"]
  encoder = captured[network]
  own_embeddings = network == "discriminator" and config.electra.embedding_sharing == "none"
  embedded = captured[electra.DISCRIMINATOR_EMBEDDINGS if own_embeddings else "embeddings"]
  first = encoder.get("embeddings_project", embedded)["__call__"][0]
  layers = [encoder[f"layer_{i}"]["__call__"][0] for i in range(config.model.num_layers)
            if f"layer_{i}" in encoder]
  return np.asarray(logits), [np.asarray(h) for h in (first, *layers)]


def assert_close(ours, theirs, what):
  ours, theirs = np.asarray(ours), np.asarray(theirs)
  assert ours.shape == theirs.shape, what
  gap = np.max(np.abs(ours - theirs))
  assert gap <= TOLERANCE, f"{what}: max |difference| {gap:.2e}"


def assert_same_outputs(config, params, hf_model, network, our_ids, hf_ids, types, hf_vocab):
  """Our network on `our_ids` against transformers' on the same text in its ids."""
  our_logits, our_hidden = our_outputs(config, params, our_ids, types, network)
  hf_logits, hf_hidden = hf_outputs(hf_model, hf_ids, types)
  if network == "generator":
    hf_logits = hf_logits[..., hf_vocab]  # the vocabulary axis in our id order
  assert_close(our_logits, hf_logits, f"{network} logits")
  assert len(our_hidden) == len(hf_hidden)
  for i, (ours, theirs) in enumerate(zip(our_hidden, hf_hidden)):
    assert_close(ours, theirs, f"{network} hidden states {i}")


@pytest.fixture(name="exported", scope="module")
def fixture_exported(tmp_path_factory):
  """Our tiny model with random weights, exported; for the tests that do not vary sizes."""
  tmp_path = tmp_path_factory.mktemp("exported")
  config, params = exported_random_run(tmp_path)
  return config, params, tmp_path / "hf"


def test_exported_folders_load_in_transformers_with_every_weight(exported):
  _, _, out = exported
  for cls, network in ((transformers.ElectraForPreTraining, "discriminator"),
                       (transformers.ElectraForMaskedLM, "generator")):
    _, info = cls.from_pretrained(out / network, output_loading_info=True)
    assert not any(info.values()), (cls.__name__, info)
    # The bare encoder: every weight found; the head is left over, as it is when
    # transformers loads its own saved ElectraForPreTraining / ElectraForMaskedLM.
    _, info = transformers.ElectraModel.from_pretrained(out / network, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"], info
    head = "discriminator_predictions." if network == "discriminator" else "generator_"
    assert info["unexpected_keys"] and all(k.startswith(head) for k in info["unexpected_keys"])


@pytest.mark.parametrize("name", ["AutoTokenizer", "ElectraTokenizerFast", "ElectraTokenizer"])
def test_exported_wordpiece_tokenizer_loads_as_every_class_with_our_ids(exported, name):
  _, _, out = exported
  ours = WordPieceTokenizer(our_order_pieces(), lowercase=True)
  theirs = getattr(transformers, name).from_pretrained(out / "discriminator")
  text = "The quick brown fox jumps over the lazy dog, unaffable!"
  assert theirs(text)["input_ids"] == [2, *ours.encode([text])[0], 3]
  assert theirs.mask_token_id == 4 and theirs.pad_token_id == 0


@pytest.mark.parametrize("sizes", SIZES.values(), ids=SIZES.keys())
def test_ours_exported_equals_transformers(tmp_path, sizes):
  config, params = exported_random_run(tmp_path, sizes)
  ids, types = example_batch()
  same_vocab = np.arange(100)
  for cls, network in ((transformers.ElectraForPreTraining, "discriminator"),
                       (transformers.ElectraForMaskedLM, "generator")):
    hf_model = cls.from_pretrained(tmp_path / "hf" / network).eval()
    assert_same_outputs(config, params, hf_model, network, ids, ids, types, same_vocab)


@pytest.mark.parametrize("sharing", ["gdes", "none"])
def test_a_run_with_the_discriminators_own_embeddings_exports_equal_and_imports_back(
    tmp_path, sharing):
  """GDES's residual is folded into the exported discriminator's word embeddings (and
  "none"'s separate set exported as it is): transformers' ELECTRA gives our outputs, and the
  import takes the pair back into the same run's tree."""
  config = tiny_config()
  config.electra.embedding_sharing = sharing
  params = random_params(config)  # a residual far from its initial zeros
  write_run(tmp_path / "run", config, params)
  export_run(str(tmp_path / "run"), "hf", str(tmp_path / "hf"))
  ids, types = example_batch()
  for cls, network in ((transformers.ElectraForPreTraining, "discriminator"),
                       (transformers.ElectraForMaskedLM, "generator")):
    hf_model = cls.from_pretrained(tmp_path / "hf" / network).eval()
    assert_same_outputs(config, params, hf_model, network, ids, ids, types, np.arange(100))

  config.train.init_from = str(tmp_path / "hf")
  imported = flax.traverse_util.flatten_dict(pretrained.init_from_hf(config, str(tmp_path / "in")))
  expected = flax.traverse_util.flatten_dict(params)
  assert set(imported) == set(expected)
  for path, value in expected.items():
    # (shared + residual) - shared: float32 rounding of the sum, at most 2^-24 of it.
    np.testing.assert_allclose(imported[path], value, rtol=0, atol=1e-6, err_msg="/".join(path))

  export_run(str(tmp_path / "run"), "flax", str(tmp_path / "flax"))
  fine_tuning = pretrained.load_discriminator(str(tmp_path / "flax"))
  folded = electra.discriminator_embeddings(params, sharing)
  assert set(fine_tuning.params) == {"embeddings", "discriminator", "discriminator_head"}
  for path, value in flax.traverse_util.flatten_dict(folded).items():
    np.testing.assert_array_equal(
        flax.traverse_util.flatten_dict(fine_tuning.params["embeddings"])[path], value)


def random_transformers_models(sizes, seed=0):
  """transformers' discriminator and generator with random weights and shared embeddings."""
  embedding_size, hidden_size, generator_size, generator_layers = sizes
  common = dict(vocab_size=100, embedding_size=embedding_size, max_position_embeddings=64)
  discriminator = transformers.ElectraForPreTraining(transformers.ElectraConfig(
      hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
      **common))
  generator = transformers.ElectraForMaskedLM(transformers.ElectraConfig(
      hidden_size=round(hidden_size * generator_size),
      num_hidden_layers=round(2 * generator_layers), num_attention_heads=1,
      intermediate_size=round(64 * generator_size), **common))
  rng = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for model in (discriminator, generator):
      for name, value in model.named_parameters():
        value.copy_(torch.randn(value.shape, generator=rng) * 0.1 + ("LayerNorm.weight" in name))
    generator.electra.embeddings.load_state_dict(discriminator.electra.embeddings.state_dict())
  return discriminator.eval(), generator.eval()


@pytest.mark.parametrize("sizes", SIZES.values(), ids=SIZES.keys())
def test_transformers_imported_equals_ours(tmp_path, sizes):
  """A transformers model with Google's vocabulary layout ([UNK] [CLS] [SEP] [MASK] after
  unused slots) runs the same in our id order once imported."""
  models = dict(zip(("discriminator", "generator"), random_transformers_models(sizes)))
  for network, model in models.items():
    model.save_pretrained(tmp_path / "hf" / network)
    write_vocab(tmp_path / "hf" / network / "vocab.txt", google_order_pieces())
  config = tiny_config(*sizes)
  config.train.init_from = str(tmp_path / "hf")
  params = pretrained.init_from_hf(config, str(tmp_path / "run"))

  google = google_order_pieces()
  hf_vocab = np.asarray([google.index(piece) for piece in our_order_pieces()])  # ours -> theirs
  ids, types = example_batch()
  for network, model in models.items():
    assert_same_outputs(config, params, model, network, ids, hf_vocab[ids], types, hf_vocab)

  fine_tuning = pretrained.load_discriminator(str(tmp_path / "hf"))
  for path, value in flax.traverse_util.flatten_dict(fine_tuning.params).items():
    np.testing.assert_array_equal(value, flax.traverse_util.flatten_dict(params)[path])


def test_sentencepiece_export_tokenizes_like_ours(tmp_path):
  """transformers' fast tokenizer built from our SentencePiece model gives our ids.

  Unigram segmentations can tie (the same pieces in another order, e.g. 999+9 and
  9+999): SentencePiece and the tokenizers library may break a tie differently,
  so a line may differ only where both segmentations have the same score.
  """
  documents = corpus()
  lines = [line for document in documents for line in document][::7]
  ours = train_tokenizer(documents, 1000, lowercase=True, max_sentences=5000, seed=0)
  config = tiny_config()
  config.model.vocab_size = 1000
  write_run(tmp_path / "run", config, random_params(config), tokenizer=ours)
  export_run(str(tmp_path / "run"), "hf", str(tmp_path / "hf"))
  assert os.path.exists(tmp_path / "hf" / "discriminator" / "tokenizer.json")
  theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf" / "discriminator")

  for text in TRICKY:
    assert theirs(text, add_special_tokens=False)["input_ids"] == ours.encode([text])[0], text
  scores = _piece_scores(ours)
  differing = 0
  for text, our_ids in zip(lines, ours.encode(lines)):
    their_ids = theirs(text, add_special_tokens=False)["input_ids"]
    if their_ids != our_ids:
      differing += 1
      assert sorted(their_ids) == sorted(our_ids), text  # the same pieces: a tie
      assert np.isclose(scores[their_ids].sum(), scores[our_ids].sum()), text
  assert differing <= len(lines) // 1000, differing
  pair = theirs("kalo mine", "suta")
  assert pair["input_ids"][0] == 2 and pair["input_ids"].count(3) == 2
  assert pair["token_type_ids"][-1] == 1 and pair["token_type_ids"][0] == 0
  # ELECTRA's own classes are WordPiece only: they must refuse the folder rather than
  # read its words as [UNK] (what they did before the export said otherwise).
  for name in ("ElectraTokenizerFast", "ElectraTokenizer"):
    with pytest.raises(TypeError):
      getattr(transformers, name).from_pretrained(tmp_path / "hf" / "discriminator")


def _piece_scores(tokenizer) -> np.ndarray:
  from sentencepiece import sentencepiece_model_pb2  # pylint: disable=g-import-not-at-top
  proto = sentencepiece_model_pb2.ModelProto()
  proto.ParseFromString(tokenizer.model_proto)
  return np.asarray([piece.score for piece in proto.pieces])


def test_an_older_pytorch_model_bin_folder_imports_the_same(tmp_path):
  """Folders saved by older transformers have pytorch_model.bin, with the tied output matrix
  and the position_ids buffer in it: read with torch, they import to the same parameters."""
  sizes = SIZES["embedding_below_hidden"]
  models = dict(zip(("discriminator", "generator"), random_transformers_models(sizes)))
  for root, pickled in (("safetensors", False), ("bin", True)):
    for network, model in models.items():
      folder = tmp_path / root / network
      model.save_pretrained(folder)
      write_vocab(folder / "vocab.txt", google_order_pieces())
      if pickled:
        state = dict(model.state_dict(), **{
            "electra.embeddings.position_ids": torch.arange(64)[None]})
        assert "generator_lm_head.weight" in state or network == "discriminator"
        torch.save(state, folder / "pytorch_model.bin")
        os.remove(folder / "model.safetensors")
  imported = {}
  for root in ("safetensors", "bin"):
    config = tiny_config(*sizes)
    config.train.init_from = str(tmp_path / root)
    imported[root] = flax.traverse_util.flatten_dict(
        pretrained.init_from_hf(config, str(tmp_path / f"run_{root}")))
  assert imported["bin"].keys() == imported["safetensors"].keys()
  for path, value in imported["safetensors"].items():
    np.testing.assert_array_equal(imported["bin"][path], value)
