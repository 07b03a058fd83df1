"""The configs shipped with electra_jax by name: `--config=base` as well as `configs/base.py`.

The repository's configs/ folder is installed as the package `electra_jax.configs`
(setup.py), so after `pip install` the names work from any directory; in a
checkout they resolve to the folder itself. A `--config` value that is neither
an existing file nor a shipped name is refused in one line that lists the names.
"""

import importlib.util
import os
from pathlib import Path

from electra_jax.errors import ConfigError

# Where the names are looked up, in this order (pre-training's, then fine-tuning's).
_FOLDERS = ("", "finetune")


def configs_directory() -> Path:
  """The installed `electra_jax.configs` package, else the checkout's configs/ folder."""
  spec = importlib.util.find_spec("electra_jax.configs")
  if spec is not None and spec.submodule_search_locations:
    return Path(list(spec.submodule_search_locations)[0])
  return Path(__file__).resolve().parents[2] / "configs"


def names() -> list[str]:
  """Every shipped config's name: tiny, small, base, large, then fine-tuning's."""
  directory = configs_directory()
  return [path.stem for folder in _FOLDERS
          for path in sorted((directory / folder).glob("*.py")) if path.stem != "__init__"]


def resolve(value: str) -> str:
  """The config file that `--config=value` means (its `:argument` suffix kept)."""
  path, colon, argument = value.partition(":")
  if os.path.isfile(path):
    return value
  for folder in _FOLDERS:
    candidate = configs_directory() / folder / f"{path.removesuffix('.py')}.py"
    if os.sep not in path and candidate.is_file():
      return f"{candidate}{colon}{argument}"
  raise ConfigError(f"--config={value}: no such file, nor a shipped config; give a config file's "
                    f"path or one of {', '.join(names())}")
