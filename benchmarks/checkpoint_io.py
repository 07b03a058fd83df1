r"""Checkpoint save and restore times, and what asynchronous saving costs the train steps.

  python -m benchmarks.checkpoint_io --out=/tmp/ckpt-bench

For configs/small.py and configs/base.py, with a randomly initialized state of
the real size (parameters and Adam's two moments, float32; the moments random
too, as after training), prints:
  - the checkpoint's size on disk;
  - save: the seconds the training loop is blocked (the state is copied off the
    devices) and the seconds until the checkpoint is complete on disk;
  - restore: the seconds to read the newest checkpoint back into the state's shardings;
  - the train steps' slowdown from one asynchronous save: a few steps timed without
    a save and with one started at their first step (waiting for it to be complete
    before the clock stops, so the figure is an upper bound), alternately, and the
    overhead that gives at the default interval (checkpoint.every_steps) for this
    machine's step time at the config's own batch.
The steps run at a small batch (--batch, --length: the cost of a save does not
depend on it) to keep a CPU run to minutes; the step time at the real batch is
timed separately for the overhead figure (--real_batch; base's does not fit a
24 GB machine, so for base the step time that keeps the overhead under 5% is printed).
benchmarks/README.md records the figures with the command and the machine.
"""

import os
import shutil
import statistics
import subprocess
import tempfile
import time

import jax
import numpy as np
from absl import flags, logging

from configs import base as base_config
from configs import small as small_config
from electra_jax import cli
from electra_jax.pretraining import train_step as train_step_lib
from electra_jax.runtime import checkpointing, sharding

_OUT = flags.DEFINE_string("out", None, "Scratch directory for the checkpoints (a few GB for "
                           "base); default: a temporary directory, deleted at the end.")
_CONFIGS = flags.DEFINE_list("configs", ["small", "base"], "Which configs to measure.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Saves and restores timed per config (the median "
                                "is printed), and pairs of step windows timed.")
_STEPS = flags.DEFINE_integer("steps", 4, "Train steps per timed window.")
_BATCH = flags.DEFINE_integer("batch", 2, "Batch of the timed step windows.")
_LENGTH = flags.DEFINE_integer("length", 128, "Sequence length of the timed step windows.")
_REAL_BATCH = flags.DEFINE_list(
    "real_batch", ["small"], "Configs whose step is also timed at their own batch and length "
    "(one step, after one that compiles), for the overhead at the default interval. Base's "
    "(256 x 512) needs far more memory than a 24 GB machine has.")

CONFIGS = {"small": small_config, "base": base_config}


def compiled(config, batch_size: int, length: int):
  config.train.batch_size, config.data.max_seq_length = batch_size, length
  training = train_step_lib.compile_training(config, sharding.create_mesh(config.mesh))
  rng = np.random.default_rng(0)
  batch = {"input_ids": rng.integers(5, config.model.vocab_size, (batch_size, length), np.int32),
           "token_type_ids": np.zeros((batch_size, length), np.int32)}
  return training, sharding.global_batch(batch, training.batch_sharding, batch_size)


def run_steps(training, state, batch, steps: int,
              checkpoints: checkpointing.Checkpointer | None = None, save_step: int = 0):
  """`steps` train steps; with `checkpoints`, a save of step `save_step` after the first.

  Returns the state and the seconds until the steps are done and the save is
  complete, as the training loop would see them.
  """
  start = time.perf_counter()
  for i in range(steps):
    state, _ = training.train_step(state, batch)
    if checkpoints and i == 0:
      checkpoints.save(save_step, state, {"next_index": save_step}, {})
  jax.block_until_ready(state)
  if checkpoints:
    checkpoints.wait()
  return state, time.perf_counter() - start


def trained_looking(state):
  """The state with random optimizer moments: fresh ones are zeros, which compress to nothing."""
  leaves, tree = jax.tree.flatten(state.opt_state)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  randomize = lambda x, key: (jax.random.uniform(key, x.shape, x.dtype, 1e-8, 1e-3)
                              if jax.numpy.issubdtype(x.dtype, jax.numpy.floating) else x)
  return state.replace(opt_state=jax.tree.unflatten(tree, [
      jax.jit(randomize)(x, key) for x, key in zip(leaves, keys)]))


def directory_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(path) for name in names)


def measure(name: str, out: str) -> None:
  config = CONFIGS[name].get_config()
  every = config.checkpoint.every_steps
  training, batch = compiled(config, _BATCH.value, _LENGTH.value)
  state = jax.block_until_ready(trained_looking(training.init_state()))
  state_bytes = sum(x.nbytes for x in jax.tree.leaves(state))
  directory = os.path.join(out, name)
  checkpoints = checkpointing.Checkpointer(directory, every_steps=1, keep=1)

  blocked, complete, restored = [], [], []
  for repeat in range(1, _REPEATS.value + 1):
    start = time.perf_counter()
    checkpoints.save(repeat, state, {"next_index": repeat}, {"config": name})
    blocked.append(time.perf_counter() - start)
    checkpoints.wait()
    complete.append(time.perf_counter() - start)
    subprocess.run(["sync"], check=False)  # written back: the restore does not compete with it
    reader = checkpointing.Checkpointer(directory, every_steps=1, keep=1)
    start = time.perf_counter()
    jax.block_until_ready(reader.restore_latest(training.abstract_state).state)
    restored.append(time.perf_counter() - start)
    reader.close()
  size = directory_bytes(os.path.join(directory, str(_REPEATS.value)))
  print(f"{name}: state {state_bytes / 2**20:,.0f} MiB in memory, checkpoint "
        f"{size / 2**20:,.0f} MiB on disk; save blocks training for "
        f"{statistics.median(blocked):.2f} s and is complete after "
        f"{statistics.median(complete):.2f} s; restore {statistics.median(restored):.2f} s "
        f"(medians of {_REPEATS.value})", flush=True)

  state, _ = run_steps(training, state, batch, 1)  # warm-up
  plain, saving = [], []
  for repeat in range(_REPEATS.value):
    state, seconds = run_steps(training, state, batch, _STEPS.value)
    plain.append(seconds)
    state, seconds = run_steps(training, state, batch, _STEPS.value, checkpoints,
                               save_step=_REPEATS.value + 1 + repeat)
    saving.append(seconds)
  checkpoints.close()
  per_save = statistics.median(s - p for s, p in zip(saving, plain))
  print(f"{name}: {_STEPS.value} steps of batch {_BATCH.value} x {_LENGTH.value} take "
        f"{statistics.median(plain):.2f} s, {statistics.median(saving):.2f} s with an "
        f"asynchronous save: one save costs the steps {per_save:.2f} s (median of "
        f"{_REPEATS.value} pairs); under 5% at every {every} steps needs steps of at least "
        f"{per_save / (0.05 * every) * 1e3:.1f} ms", flush=True)
  if name in _REAL_BATCH.value:
    del training, state
    real_config = CONFIGS[name].get_config()
    real, real_batch = compiled(real_config, real_config.train.batch_size,
                                real_config.data.max_seq_length)
    real_state, _ = run_steps(real, real.init_state(), real_batch, 1)  # the first step
    _, real_step = run_steps(real, real_state, real_batch, 1)
    print(f"{name}: a step of its own batch ({real_config.train.batch_size} x "
          f"{real_config.data.max_seq_length}) takes {real_step:.1f} s here: one save every "
          f"{every} steps costs {100 * per_save / (every * real_step):.4f}% of the step time",
          flush=True)


def main(argv: list[str]) -> None:
  del argv
  # Errors only: Orbax warns about "waiting for the previous save" when it counts
  # the explicit waits that time the saves here.
  logging.set_verbosity(logging.ERROR)
  out = _OUT.value or tempfile.mkdtemp(prefix="checkpoint-io-")
  print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}; "
        f"jax {jax.__version__} on {jax.devices()[0].platform}; checkpoints in {out}", flush=True)
  try:
    for name in _CONFIGS.value:
      measure(name, out)
  finally:
    if not _OUT.value:
      shutil.rmtree(out, ignore_errors=True)
  print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
  cli.run(main)
