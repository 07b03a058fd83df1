"""Export and import without torch: names, exact round trips, vocabulary order, bad input.

The comparison with transformers' own model is in test_hf_parity.py.
"""

import json
import os
import subprocess
import sys

import flax.serialization
import flax.traverse_util
import numpy as np
import pytest

safetensors_numpy = pytest.importorskip(
    "safetensors.numpy", reason="export and import need safetensors: pip install -e '.[hf]'")

from conftest import REPO  # pylint: disable=wrong-import-position
from convert_helpers import (SIZES, exported_random_run, google_order_pieces, our_order_pieces,
                             random_params, tiny_config, write_run, write_vocab)
from electra_jax.convert import hf_params, pretrained
from electra_jax.convert.run_export import export_run
from electra_jax.data.wordpiece import WordPieceTokenizer
from electra_jax.errors import ConfigError, DataError, UserError
from electra_jax.pretraining import loop

flatten = flax.traverse_util.flatten_dict


def assert_bit_identical(actual: dict, expected: dict) -> None:
  actual, expected = flatten(actual), flatten(expected)
  assert set(actual) == set(expected)
  for key, value in expected.items():
    assert actual[key].dtype == np.float32, key
    np.testing.assert_array_equal(actual[key], value, err_msg="/".join(key))


@pytest.fixture(name="run")
def fixture_run(tmp_path):
  """A finished run of the tiny model (embedding 16 < hidden 32) and its HF export."""
  config, params = exported_random_run(tmp_path)
  return config, params, tmp_path


def import_into(config, source, workdir):
  config.train.init_from = str(source)
  return pretrained.init_from_hf(config, str(workdir))


def test_every_parameter_of_a_network_has_its_own_transformers_name():
  config = tiny_config(24, 32)  # projections in both networks
  params = random_params(config)
  for network, subtrees in hf_params.NETWORKS.items():
    paths = [(name, *path) for name in subtrees for path in flatten(params[name])]
    names = {hf_params.hf_name(path) for path in paths}
    assert len(names) == len(paths)
    assert names == set(hf_params.to_hf(params, network))
  assert "electra.encoder.layer.1.attention.self.query.weight" in names
  assert "generator_lm_head.bias" in names and "generator_lm_head.weight" not in names


@pytest.mark.parametrize("sizes", SIZES.values(), ids=SIZES.keys())
def test_ours_to_hf_to_ours_is_bit_identical(tmp_path, sizes):
  config, params = exported_random_run(tmp_path, sizes)
  assert sorted(os.listdir(tmp_path / "hf")) == ["discriminator", "generator"]
  imported = import_into(tiny_config(*sizes), tmp_path / "hf", tmp_path / "again")
  assert_bit_identical(imported, params)
  assert ((tmp_path / "again" / "vocab.txt").read_bytes() ==
          (tmp_path / "run" / "vocab.txt").read_bytes())


def test_google_vocabulary_order_is_moved_to_special_tokens_first(run):
  """A folder laid out as Google's ([UNK] at 5 here, 100 there) imports to our order."""
  config, params, tmp_path = run
  ours, google = our_order_pieces(), google_order_pieces()
  to_google = np.asarray([ours.index(piece) for piece in google])  # google id -> our id
  for network in ("discriminator", "generator"):
    folder = tmp_path / "hf" / network
    tensors = safetensors_numpy.load_file(folder / "model.safetensors")
    for name in ("electra.embeddings.word_embeddings.weight", "generator_lm_head.bias"):
      if name in tensors:
        tensors[name] = tensors[name][to_google]
    (folder / "model.safetensors").write_bytes(safetensors_numpy.save(tensors, {"format": "pt"}))
    write_vocab(folder / "vocab.txt", google)

  imported = import_into(config, tmp_path / "hf", tmp_path / "again")
  assert_bit_identical(imported, params)
  assert (tmp_path / "again" / "vocab.txt").read_text().splitlines() == ours


def test_flax_export_holds_the_discriminator_and_loads_for_fine_tuning(run):
  config, params, tmp_path = run
  export_run(str(tmp_path / "run"), "flax", str(tmp_path / "flax"))
  assert sorted(os.listdir(tmp_path / "flax")) == ["config.json", "params.msgpack", "vocab.txt"]
  saved = flax.serialization.msgpack_restore((tmp_path / "flax" / "params.msgpack").read_bytes())
  assert set(saved) == {"embeddings", "discriminator", "discriminator_head"}
  discriminator = {name: params[name] for name in saved}
  for source in ("flax", "run", "hf", "hf/discriminator"):  # every place fine-tuning starts from
    loaded = pretrained.load_discriminator(str(tmp_path / source))
    assert_bit_identical(loaded.params, discriminator)
    assert loaded.model.hidden_size == 32 and loaded.model.embedding_size == 16
    expected = [our_order_pieces().index(piece) for piece in ("the", "quick", "dog", "!")]
    assert loaded.tokenizer.encode(["The quick dog!"]) == [expected]


def test_load_discriminator_reorders_a_google_vocabulary(tmp_path):
  config, params = exported_random_run(tmp_path)
  folder = tmp_path / "hf" / "discriminator"
  ours, google = our_order_pieces(), google_order_pieces()
  tensors = safetensors_numpy.load_file(folder / "model.safetensors")
  name = "electra.embeddings.word_embeddings.weight"
  tensors[name] = tensors[name][[ours.index(piece) for piece in google]]
  (folder / "model.safetensors").write_bytes(safetensors_numpy.save(tensors, {"format": "pt"}))
  write_vocab(folder / "vocab.txt", google)
  loaded = pretrained.load_discriminator(str(folder))
  np.testing.assert_array_equal(loaded.params["embeddings"]["word_embeddings"]["embedding"],
                                params["embeddings"]["word_embeddings"]["embedding"])
  assert loaded.tokenizer.id_to_piece(1) == "[UNK]" and loaded.tokenizer.vocab_size == 100


@pytest.mark.slow  # a CLI pre-training run (~40 s)
def test_pretraining_starts_from_the_imported_weights(run):
  """One step at learning rate 0 (the warmup's first) leaves exactly the imported weights."""
  config, params, tmp_path = run
  corpus = tmp_path / "corpus.txt"
  # Distinct documents: copies of one would all land on the same side of the eval split.
  corpus.write_text("".join(f"The quick brown fox jumps over the lazy dog {i} times.\n"
                            "Unaffable dogs jump!\n\n" for i in range(40)))
  config.data.update(source=str(corpus), eval_fraction=0.25)
  config.train.update(init_from=str(tmp_path / "hf"), steps=1, batch_size=4, eval_batches=1,
                      log_every=1)
  config.optim.warmup_steps = 1
  loop.train_and_evaluate(config, str(tmp_path / "continued"))
  final = flax.serialization.msgpack_restore(
      (tmp_path / "continued" / "params.msgpack").read_bytes())
  assert_bit_identical(final, params)
  assert ((tmp_path / "continued" / "vocab.txt").read_text().splitlines() == our_order_pieces())


# ---------------------------------------------------------------------------
# Bad input: one error naming the file and what is wrong
# ---------------------------------------------------------------------------


def test_a_bert_folder_is_refused(tmp_path):
  folder = tmp_path / "bert"
  folder.mkdir()
  (folder / "config.json").write_text(json.dumps(
      {"model_type": "bert", "architectures": ["BertForMaskedLM"], "hidden_size": 32}))
  with pytest.raises(DataError, match=rf"{folder}/config.json describes a 'bert' model "
                     r"\(BertForMaskedLM\), not ELECTRA"):
    pretrained.load_discriminator(str(folder))


@pytest.mark.parametrize("missing, message", [
    ("config.json", "config.json does not exist"),
    ("model.safetensors", "has no weights: neither model.safetensors nor pytorch_model.bin"),
    ("vocab.txt", "has no tokenizer: neither vocab.txt (WordPiece) nor tokenizer.model"),
])
def test_a_missing_file_is_named(run, missing, message):
  _, _, tmp_path = run
  folder = tmp_path / "hf" / "discriminator"
  (folder / missing).unlink()
  with pytest.raises(DataError) as error:
    pretrained.load_discriminator(str(folder))
  assert str(folder) in str(error.value) and message in str(error.value)


def test_weights_whose_shape_does_not_match_config_json(run):
  _, _, tmp_path = run
  folder = tmp_path / "hf" / "discriminator"
  hf_config = json.loads((folder / "config.json").read_text())
  hf_config["intermediate_size"] = 48  # the weights have 64
  (folder / "config.json").write_text(json.dumps(hf_config))
  with pytest.raises(DataError, match=rf"{folder}/model.safetensors: electra.encoder.layer.0."
                     r"intermediate.dense.bias has shape \[64\], but config.json implies \[48\]; "
                     "the weights and config.json do not belong together"):
    pretrained.load_discriminator(str(folder))


def test_a_generator_that_is_not_the_discriminator_scaled_down(run):
  config, _, tmp_path = run
  folder = tmp_path / "hf" / "generator"
  hf_config = json.loads((folder / "config.json").read_text())
  hf_config["intermediate_size"] = 48  # hidden is 1/2 of the discriminator's, FFN 3/4
  (folder / "config.json").write_text(json.dumps(hf_config))
  with pytest.raises(DataError, match=rf"the generator in {folder} \(hidden_size 16, "
                     r"num_layers 2, num_heads 1, intermediate_size 48\) is not the "
                     "discriminator's sizes scaled"):
    import_into(config, tmp_path / "hf", tmp_path / "again")
  assert not (tmp_path / "again").exists()  # nothing is written before everything checks out


def test_a_generator_folder_is_not_a_discriminator(run):
  _, _, tmp_path = run
  folder = tmp_path / "hf" / "generator"
  with pytest.raises(DataError, match=rf"{folder}/model.safetensors lacks 4 weight\(s\) that an "
                     r"ELECTRA discriminator of its config.json has: discriminator_predictions"):
    pretrained.load_discriminator(str(folder))


def test_vocabulary_of_another_size(run):
  _, _, tmp_path = run
  folder = tmp_path / "hf" / "discriminator"
  write_vocab(folder / "vocab.txt", our_order_pieces()[:90])
  with pytest.raises(DataError, match=rf"{folder}/vocab.txt has 90 pieces but {folder}/config.json "
                     "says vocab_size=100"):
    pretrained.load_discriminator(str(folder))


def test_config_that_describes_another_model_names_each_field_and_its_fix(run):
  _, _, tmp_path = run
  config = tiny_config(embedding_size=16, hidden_size=64, generator_size=0.25)
  config.data.lowercase = False
  with pytest.raises(ConfigError) as error:
    import_into(config, tmp_path / "hf", tmp_path / "again")
  message = str(error.value)
  assert "model.hidden_size is 64 but the checkpoint has 32" in message
  assert "data.lowercase is False but the checkpoint has True" in message
  assert message.endswith("; set --config.model.hidden_size=32 --config.model.generator_size=0.5 "
                          "--config.data.lowercase=True")
  assert not (tmp_path / "again").exists()


def test_a_workdir_with_another_tokenizer_is_refused(run):
  config, _, tmp_path = run
  (tmp_path / "again").mkdir()
  pieces = our_order_pieces()
  write_vocab(tmp_path / "again" / "vocab.txt", pieces[:5] + pieces[:4:-1])
  with pytest.raises(DataError, match="is not the tokenizer of"):
    import_into(config, tmp_path / "hf", tmp_path / "again")


def test_export_refuses_to_overwrite(run):
  _, _, tmp_path = run
  before = (tmp_path / "hf" / "discriminator" / "model.safetensors").read_bytes()
  with pytest.raises(UserError, match="already exists and is not empty"):
    export_run(str(tmp_path / "run"), "hf", str(tmp_path / "hf"))
  assert (tmp_path / "hf" / "discriminator" / "model.safetensors").read_bytes() == before


def test_export_of_params_that_do_not_fit_the_config(tmp_path):
  config = tiny_config()
  params = random_params(config)
  del params["discriminator"]["layer_1"]
  write_run(tmp_path / "run", config, params)
  with pytest.raises(DataError, match=r"params.msgpack does not fit its config.json: "
                     r"discriminator/layer_1/attention/key/bias has shape none \(missing\)"):
    export_run(str(tmp_path / "run"), "flax", str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()


def run_cli(*args):
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True,
                        timeout=120)


def test_export_cli(run):
  _, _, tmp_path = run
  result = run_cli("electra_jax.export", f"--workdir={tmp_path / 'run'}", "--format=flax",
                   f"--out={tmp_path / 'flax'}")
  assert result.returncode == 0, result.stderr
  assert (tmp_path / "flax" / "params.msgpack").exists()
  result = run_cli("electra_jax.export", f"--workdir={tmp_path / 'nothing'}",
                   f"--out={tmp_path / 'out'}")
  assert result.returncode == 1 and "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
      f"error: {tmp_path / 'nothing'}/config.json does not exist; is {tmp_path / 'nothing'} a "
      "workdir or an export of electra_jax?")


def test_train_cli_names_a_bad_init_from_in_one_line(tmp_path):
  (tmp_path / "bert" / "discriminator").mkdir(parents=True)
  (tmp_path / "bert" / "discriminator" / "config.json").write_text('{"model_type": "bert"}')
  result = run_cli("electra_jax.train", "--config=configs/tiny.py",
                   f"--workdir={tmp_path / 'run'}", f"--config.train.init_from={tmp_path / 'bert'}")
  assert result.returncode == 1 and "Traceback" not in result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert errors == [f"error: {tmp_path / 'bert'}/discriminator/config.json describes a 'bert' "
                    "model (no architecture named), not ELECTRA; electra_jax reads ELECTRA "
                    "checkpoints only"]


def test_wordpiece_tokenizer_refuses_a_vocabulary_without_special_tokens_first():
  with pytest.raises(DataError, match=r"does not have \[UNK\] at id 1"):
    WordPieceTokenizer(google_order_pieces(), lowercase=True)


def test_a_wordpiece_setting_we_do_not_support_is_named(run):
  _, _, tmp_path = run
  folder = tmp_path / "hf" / "discriminator"
  (folder / "tokenizer_config.json").write_text('{"do_lower_case": true, "strip_accents": false}')
  with pytest.raises(DataError, match=rf"{folder}/tokenizer_config.json sets strip_accents=False, "
                     "which electra_jax's WordPiece tokenizer does not support"):
    pretrained.load_discriminator(str(folder))


def test_exported_files_are_readable_as_any_file_the_user_writes(run):
  _, _, tmp_path = run
  umask = os.umask(0)
  os.umask(umask)
  for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"):
    mode = os.stat(tmp_path / "hf" / "discriminator" / name).st_mode & 0o777
    assert mode == 0o666 & ~umask, (name, oct(mode))
