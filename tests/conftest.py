"""Shared test setup: CPU only, and small helpers for configs."""

import atexit
import importlib.util
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One XLA compilation cache for the whole run, the CLIs' subprocesses included:
# most tests compile the same tiny train step, and compiling it costs more than
# running it. A fresh directory per run, so no test depends on an earlier run.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="electra_jax_tests_xla_")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"

# The CLIs restart themselves with huge pages unless GLIBC_TUNABLES already names
# the tunable (electra_jax/cpu/huge_pages.py). Naming it here spares each of the suite's
# CLI subprocesses that restart; tests/test_cpu_process.py checks the restart itself.
os.environ.setdefault("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(name="bucket")
def fixture_bucket():
  """A fresh bucket of fsspec's in-memory file system, standing in for gs:// and s3://."""
  url = f"memory://bucket-{uuid.uuid4().hex[:8]}"
  yield url
  fs = fsspec.filesystem("memory")
  if fs.exists(url):
    fs.rm(url, recursive=True)


def load_config(name: str):
  """`configs/<name>.py`'s get_config(), as the CLI loads it."""
  spec = importlib.util.spec_from_file_location(f"configs_{name}", REPO / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def write_word_corpus(path: Path, num_words: int, num_documents: int) -> Path:
  """A corpus of made-up words at `path`: documents of 6 twelve-word sentences.

  Enough text for a tokenizer and a few training steps, without the built-in corpus.
  """
  rng = np.random.default_rng(0)
  words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(2, 7)))
           for _ in range(num_words)]
  path.write_text("\n\n".join(
      "\n".join(" ".join(rng.choice(words, 12)) + "." for _ in range(6))
      for _ in range(num_documents)))
  return path


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


def cpu_env(devices: int, **extra: str) -> dict[str, str]:
  return dict(os.environ, JAX_PLATFORMS="cpu", JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
              # Faster compiles; the reference and the pair are compiled alike.
              XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} "
                        "--xla_backend_optimization_level=0", **extra)


# A benchmark (or any step) of the tiny config at its smallest, as command-line flags.
TINY_SHAPE = ["--config=configs/tiny.py", "--config.model.vocab_size=64",
              "--config.data.max_seq_length=16", "--config.train.batch_size=4"]
