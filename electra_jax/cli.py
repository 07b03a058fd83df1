"""What every `python -m electra_jax.<verb>` shares: flag parsing, error reporting, and the
process settings of a run on the CPU.

Mistakes in flags or config values end in one line naming the field and exit
code 2; other user errors (missing corpus, unwritable workdir) in one line and
exit code 1. Tracebacks are kept for bugs, where they help.
"""

import os
import re
import sys
from typing import Callable, Sequence

import ml_collections
from absl import app, flags

from electra_jax import config as config_lib
from electra_jax.config import shipped
from electra_jax.cpu import process as cpu_process
from electra_jax.errors import ConfigError, Interrupted, UserError


def _fail(error: UserError) -> None:
  print(error if isinstance(error, Interrupted) else f"error: {error}", file=sys.stderr)
  sys.exit(error.exit_code)


def _unknown_override(argv: Sequence[str], error: Exception) -> str:
  """Names the `--config.*` override whose field does not exist."""
  message = str(error).strip("'\"")
  key = re.match(r"\W*(\w+)", message)
  hint = re.search(r'Did you mean "(\w+)"', message)
  for arg in argv:
    path = arg.split("=", 1)[0].lstrip("-")
    if key and path.startswith("config.") and path.split(".")[-1] == key[1]:
      field = path[len("config."):]
      return f"unknown config field '{field}'" + (f" (did you mean '{hint[1]}'?)" if hint else "")
  return f"unknown config field: {message.splitlines()[0]}"


_HELP_FLAGS = {"--help", "-help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml"}


def _with_config_files(argv: Sequence[str]) -> list[str]:
  """`argv` with each `--config=` value a file: a shipped config's name becomes its path."""
  resolved = []
  for arg in argv:
    name, equals, value = arg.partition("=")
    if equals and name.lstrip("-") == "config":
      arg = f"{name}={shipped.resolve(value)}"
    resolved.append(arg)
  return resolved


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing, with every flag or config mistake reported in one line."""
  try:
    return flags.FLAGS(_with_config_files(argv))
  except ConfigError as e:
    _fail(e)
  except SystemExit as e:  # absl exits 1 after printing --help; asking for help is no failure
    sys.exit(0 if e.code == 1 and set(argv[1:]) & _HELP_FLAGS else e.code)
  except (KeyError, AttributeError) as e:  # an override naming a field that does not exist
    _fail(ConfigError(_unknown_override(argv, e)))
  except (flags.Error, ValueError, TypeError) as e:
    _fail(ConfigError(str(e).splitlines()[0]))


def resolved_config(config_flag: flags.FlagHolder,
                    validate: Callable[[ml_collections.ConfigDict], None] = config_lib.validate
                    ) -> ml_collections.ConfigDict:
  """The `--config` file with its overrides applied, checked by `validate`."""
  if config_flag.value is None:
    raise ConfigError("--config is required, e.g. --config=configs/tiny.py")
  config = config_flag.value
  if not isinstance(config, ml_collections.ConfigDict):  # config_flags' stand-in for a load failure
    try:
      config.lock()
    except Exception as e:  # pylint: disable=broad-except
      cause = e.__cause__ or e
      raise ConfigError(f"cannot load --config={flags.FLAGS['config'].config_filename}: "
                        f"{cause}") from None
  validate(config)
  return config


def run(main: Callable[[list[str]], None]) -> None:
  """`app.run(main)` with one-line errors for flags, config and user input.

  First, for a run on the CPU, turns on oneDNN's matmuls and restarts the
  process with huge pages for large allocations (electra_jax/cpu/process.py).
  """
  cpu_process.apply_settings()

  def guarded_main(argv: list[str]) -> None:
    try:
      main(argv)
    except UserError as e:
      _fail(e)
    except KeyboardInterrupt:  # Ctrl-C before training started (or on a multi-host run)
      print("Interrupted by Ctrl-C", file=sys.stderr, flush=True)
      os._exit(Interrupted.exit_code)  # pylint: disable=protected-access  # no waiting on threads

  app.run(guarded_main, flags_parser=parse_flags)
