"""Config validation and the CLI's one-line errors."""

import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO, load_config
from electra_jax import config as config_lib
from electra_jax.config import shipped
from electra_jax.errors import ConfigError


@pytest.mark.parametrize("name", ["tiny", "small", "base", "large"])
def test_shipped_configs_are_valid_and_take_their_model_from_the_size_table(name):
  config = load_config(name)
  config_lib.validate(config)
  for field, value in config_lib.MODEL_SIZES[name].items():
    assert config.model[field] == value, field


def test_an_unknown_size_is_refused_with_the_known_ones():
  with pytest.raises(ConfigError, match="unknown model size 'huge'; known: tiny, small, base"):
    config_lib.sized_config("huge")


@pytest.mark.parametrize("field, value, expected", [
    ("train.batch_size", 0, "'train.batch_size' = 0 is not allowed: must be a positive integer"),
    ("masking.mask_rate", 1.5, "'masking.mask_rate' = 1.5"),
    ("model.dtype", "float16", "must be one of float32, bfloat16"),
    ("model.num_heads", 3, "'model.hidden_size' = 256 must be divisible by 'model.num_heads' = 3"),
    ("data.max_seq_length", 1024, "exceeds 'model.max_position_embeddings' = 512"),
])
def test_bad_values_name_the_field(field, value, expected):
  config = load_config("small")
  section, name = field.split(".")
  config[section][name] = value
  with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
    config_lib.validate(config)


def test_unknown_field_in_a_config_file_is_named():
  config = load_config("small")
  config.unlock()
  config.train.stepz = 3
  with pytest.raises(ConfigError, match="unknown config field 'train.stepz'"):
    config_lib.validate(config)


def test_max_predictions_follows_the_original_rule():
  config = load_config("small")
  assert config_lib.max_predictions_per_seq(config) == 19
  config.masking.max_predictions_per_seq = 7
  assert config_lib.max_predictions_per_seq(config) == 7


def run_train(*args, cwd=REPO):
  return subprocess.run([sys.executable, "-m", "electra_jax.train", *args], cwd=cwd,
                        capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["--config.train.stepz=3"], "unknown config field 'train.stepz' (did you mean 'steps'?)"),
    (["--config.train.steps=abc"], "--config.train.steps=abc"),
    (["--config.train.batch_size=-1"], "'train.batch_size' = -1 is not allowed"),
])
def test_cli_config_errors_are_one_line_with_exit_code_2(tmp_path, args, message):
  result = run_train("--config=configs/tiny.py", f"--workdir={tmp_path}", *args)
  assert result.returncode == 2, result.stderr
  assert message in result.stderr
  assert "Traceback" not in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1
  assert list(tmp_path.iterdir()) == []  # nothing written before the config is valid


@pytest.mark.parametrize("overrides", [[], ["--config.train.steps=3"]])
def test_cli_missing_config_file_is_one_line_naming_the_shipped_configs(tmp_path, overrides):
  result = run_train("--config=a/path/that/does/not/exist.py", f"--workdir={tmp_path}",
                     *overrides)
  assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
  assert result.stderr.strip().splitlines() == [
      "error: --config=a/path/that/does/not/exist.py: no such file, nor a shipped config; give "
      "a config file's path or one of base, large, small, tiny, glue, qa, tagging"]


def test_a_shipped_config_is_found_by_name_from_any_directory(tmp_path):
  result = run_train("--config=tiny", "--config.model.vocab_size=64",
                     "--config.data.max_seq_length=16", "--config.train.batch_size=4",
                     "--config.train.dry_run=True", cwd=tmp_path)
  assert result.returncode == 0, result.stderr
  assert "Dry run: compiled and reported" in result.stderr
  assert shipped.resolve("glue") == str(shipped.configs_directory() / "finetune" / "glue.py")
  assert shipped.resolve("base:arg") == f"{shipped.configs_directory() / 'base.py'}:arg"


def test_the_wheel_installs_the_shipped_configs(tmp_path):
  """`pip install` puts configs/ in the package as electra_jax.configs (setup.py)."""
  source = tmp_path / "source"
  for name in ("electra_jax", "configs"):
    shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
  for name in ("setup.py", "README.md"):
    shutil.copy(REPO / name, source / name)
  subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                  "-w", str(tmp_path / "wheel"), str(source)], check=True, timeout=300)
  (wheel,) = (tmp_path / "wheel").glob("*.whl")
  installed = {name for name in zipfile.ZipFile(wheel).namelist() if "/configs/" in name}
  assert {f"electra_jax/configs/{name}.py" for name in ("tiny", "small", "base", "large")} | {
      f"electra_jax/configs/finetune/{name}.py" for name in ("glue", "tagging", "qa")} <= installed


@pytest.mark.parametrize("module", ["electra_jax.train", "electra_jax.finetune"])
def test_cli_help_explains_the_flags(module):
  """--help, not only --helpfull, lists the flags shared through runtime/cluster_flags.py."""
  result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  for flag in ("--workdir", "--config", "--coordinator_address", "--num_processes",
               "--process_id", "--cpu_devices"):
    assert flag in result.stdout, flag


def test_warmup_longer_than_the_run_names_the_override_that_fixes_it():
  config = load_config("tiny")
  config.train.steps = 20
  with pytest.raises(ConfigError, match=r"'optim.warmup_steps' = 60 exceeds 'train.steps' = 20; "
                     r"set --config.optim.warmup_steps=2 "):
    config_lib.validate(config)


def test_objective_chooses_the_masking_probabilities():
  config = load_config("tiny")
  assert config.objective == "electra"
  assert config_lib.masking_probs(config) == (0.85, 0.0)  # ELECTRA's original code
  config.objective = "mlm"
  assert config_lib.masking_probs(config) == (0.8, 0.1)  # BERT's 80/10/10
  config.masking.random_token_prob = 0.0
  assert config_lib.masking_probs(config) == (0.8, 0.0)
  resolved = config_lib.resolved(config)
  assert (resolved.masking.mask_token_prob, resolved.masking.random_token_prob) == (0.8, 0.0)
  assert config.masking.mask_token_prob is None  # resolving copies


@pytest.mark.parametrize("change, message", [
    (dict(objective="bert"), "'objective' = 'bert' is not allowed: must be one of electra, mlm"),
    (dict(mask_token_prob=0.95), "add up to more than 1"),
])
def test_bad_objective_or_masking_is_named(change, message):
  config = load_config("tiny")
  config.objective = change.get("objective", "mlm")
  if "mask_token_prob" in change:
    config.masking.mask_token_prob = change["mask_token_prob"]
  with pytest.raises(ConfigError, match=message):
    config_lib.validate(config)


def test_configs_saved_before_the_mlm_objective_are_migrated():
  """The old layout had one `objective` section with masking and ELECTRA's fields."""
  old = {"model": {"hidden_size": 64},
         "objective": {"mask_rate": 0.2, "mask_token_prob": 0.85, "max_predictions_per_seq": None,
                       "gen_weight": 1.0, "disc_weight": 30.0, "temperature": 2.0}}
  migrated = config_lib.migrate(old)
  assert migrated == {
      "model": {"hidden_size": 64}, "objective": "electra",
      "masking": {"mask_rate": 0.2, "mask_token_prob": 0.85, "max_predictions_per_seq": None,
                  "random_token_prob": 0.0},
      "electra": {"gen_weight": 1.0, "disc_weight": 30.0, "temperature": 2.0}}
  assert config_lib.migrate(migrated) == migrated  # the new layout passes unchanged
  # The migrated config is the one an ELECTRA run with these values records now.
  config = load_config("tiny")
  config.masking.mask_rate, config.electra.disc_weight = 0.2, 30.0
  recorded = config_lib.resolved(config).to_dict()
  assert {k: recorded["masking"][k] for k in migrated["masking"]} == migrated["masking"]
