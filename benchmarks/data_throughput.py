r"""Data pipeline throughput: preparation, the loader, and what train steps consume.

  python -m benchmarks.data_throughput --out=/tmp/bench

prepares ../shared/data/wikipedia-en-sample (WikiExtractor output, 66 MB) with
configs/small.py's settings (30,522 pieces, 128 tokens) and prints:
  - tokenizer training time;
  - preparation speed (MB of raw text/s and tokens/s) with 1 and with all workers;
  - loader speed (examples/s) for small's batches (128 x 128) and base's (256 x 512);
  - the examples/s that a few timed train steps of small and base consume on this machine,
    and the loader's margin over them (the issue asks for at least 10x).
The figures go to stdout; benchmarks/README.md records them with the command and machine.
"""

import copy
import os
import statistics
import time

import jax
from absl import flags, logging

from configs import base as base_config
from configs import small as small_config
from electra_jax import cli
from electra_jax.data import dataset
from electra_jax.data import loader, shards
from electra_jax.data.any_tokenizer import save_tokenizer
from electra_jax.errors import UserError
from electra_jax.performance import timing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CORPUS = flags.DEFINE_string(
    "corpus", os.path.join(REPO, "..", "shared", "data", "wikipedia-en-sample", "text", "wiki_*"),
    "Glob of the corpus to prepare (default: the shared Wikipedia sample).")
_OUT = flags.DEFINE_string("out", None, "Scratch directory for the prepared data (a few 100 MB).")
_LOADER_EXAMPLES = flags.DEFINE_integer("loader_examples", 25_600,
                                        "Examples read (in whole batches) per loader figure.")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 3, "Timed train steps per config (after one "
                                    "that compiles).")
_BASE_BATCH = flags.DEFINE_integer("base_batch", 8, "Batch for base's timed train steps (its "
                                   "default 256 x 512 does not fit a CPU run of minutes).")
_BASE_FILES = flags.DEFINE_integer("base_files", 8, "Corpus files prepared at length 512 for "
                                   "the base loader figure.")


def timed_prepare(config, workdir: str) -> tuple[shards.PreparedData, float]:
  start = time.perf_counter()
  data = dataset.prepare(config, workdir)
  return data, time.perf_counter() - start


def print_prepare_speed(name: str, manifest: dict, tokens: int) -> None:
  seconds = manifest["seconds"]
  print(f"prepare, {name}: {seconds:.1f} s = {manifest['input_bytes'] / 1e6 / seconds:.2f} MB/s, "
        f"{tokens / seconds:,.0f} tokens/s", flush=True)


def loader_speed(data: shards.PreparedData, batch_size: int, num_batches: int) -> float:
  """Examples/s of the train iterator, after a warm-up of a few batches."""
  iterator = loader.train_iterator(data, batch_size, seed=0)
  for _ in range(5):
    next(iterator)
  start = time.perf_counter()
  for _ in range(num_batches):
    batch = next(iterator)
  assert batch["input_ids"].shape == (batch_size, data.max_seq_length)
  return num_batches * batch_size / (time.perf_counter() - start)


def train_step_speed(config, batch_size: int, steps: int) -> float:
  """Examples/s that `steps` train steps consume (after one that compiles), median step."""
  config = copy.deepcopy(config)
  config.train.batch_size = batch_size
  step = timing.JaxStep(config)
  step()
  return batch_size / statistics.median(step() for _ in range(steps))


def main(argv: list[str]) -> None:
  del argv
  if not _OUT.value:
    raise UserError("--out is required: a scratch directory for the prepared data")
  logging.set_verbosity(logging.WARNING)
  out = os.path.abspath(_OUT.value)
  small, base = small_config.get_config(), base_config.get_config()
  print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}; "
        f"jax {jax.__version__} on {jax.devices()[0].platform}")

  small.data.source = _CORPUS.value
  data, total = timed_prepare(small, os.path.join(out, "all-workers"))
  manifest = data.manifest
  megabytes = manifest["input_bytes"] / 1e6
  tokens = sum(manifest["splits"][s]["tokens"] for s in shards.SPLITS)
  examples = sum(manifest["splits"][s]["examples"] for s in shards.SPLITS)
  print(f"corpus: {len(manifest['inputs'])} files, {megabytes:.1f} MB, {tokens:,} tokens -> "
        f"{examples:,} examples of {data.max_seq_length}")
  print(f"tokenizer training ({small.model.vocab_size} pieces): "
        f"{total - manifest['seconds']:.1f} s")
  print_prepare_speed("all workers", data.manifest, tokens)
  os.makedirs(os.path.join(out, "one-worker"), exist_ok=True)  # the same tokenizer, reused
  save_tokenizer(data.tokenizer, os.path.join(out, "one-worker"))
  small.data.num_workers = 1
  data, _ = timed_prepare(small, os.path.join(out, "one-worker"))
  print_prepare_speed("one worker", data.manifest, tokens)

  base.data.source = ",".join(name for name, _ in manifest["inputs"][:_BASE_FILES.value])
  base_data, _ = timed_prepare(base, os.path.join(out, "base"))
  for name, config, prepared, train_batch in (("small", small, data, small.train.batch_size),
                                              ("base", base, base_data, _BASE_BATCH.value)):
    batch, length = config.train.batch_size, config.data.max_seq_length
    load = loader_speed(prepared, batch, max(1, _LOADER_EXAMPLES.value // batch))
    print(f"{name}: loader {load:,.0f} examples/s (batches of {batch} x {length})", flush=True)
    train = train_step_speed(config, train_batch, _TRAIN_STEPS.value)
    print(f"{name}: train step consumes {train:,.2f} examples/s (batch {train_batch} x "
          f"{length}); loader margin {load / train:,.0f}x", flush=True)


if __name__ == "__main__":
  cli.run(main)
