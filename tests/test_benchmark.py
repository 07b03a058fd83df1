"""The benchmark CLI, and the PyTorch step it compares with computing our step's function."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, TINY_SHAPE
from convert_helpers import random_params, tiny_config
from electra_jax.convert import hf_params
from electra_jax.cpu import onednn
from electra_jax.models import electra
from electra_jax.performance import profiling
from electra_jax.pretraining import objective, train_step as train_step_lib

def run_benchmark(*args, prelude="pass"):
  """The CLI in a subprocess; `prelude` runs first (to hide a package, say)."""
  code = (f"{prelude}; import runpy, sys; sys.argv = ['benchmark', *{list(args)!r}]; "
          "runpy.run_module('electra_jax.benchmark', run_name='__main__')")
  return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                        timeout=600, check=False)


def torch_is_installed():
  try:
    import torch  # pylint: disable=import-outside-toplevel,unused-import
    import transformers  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    return False
  return True


def test_benchmark_prints_the_table_and_writes_json(tmp_path):
  """One run of both frameworks where torch is installed, ours alone otherwise."""
  compare = ["--compare=torch"] if torch_is_installed() else []
  result = run_benchmark(*TINY_SHAPE, "--steps=2", "--warmup=1", "--threads=1",
                         f"--json={tmp_path / 'out.json'}", *compare)
  assert result.returncode == 0, result.stderr[-2000:]
  for line in ("model FLOPs / step", "XLA's FLOPs / step", "jax step", "MFU"):
    assert line in result.stdout
  report = json.loads((tmp_path / "out.json").read_text())
  assert report["environment"]["threads"] == 1
  if onednn.xla_flags_with_onednn(os.environ) is not None:  # x86, and the tests' runner left it
    assert f"{onednn.FLAG}=true" in report["environment"]["xla_flags"]
  record, = report["results"]
  assert (record["batch_size"], record["length"]) == (4, 16)
  assert len(record["jax"]["step_seconds"]) == 2 and record["jax"]["tokens_per_s"] > 0
  assert len(record["jax"]["kernel_seconds"]) == 2 and record["jax"]["kernel_s"] >= 0
  assert 0 < record["jax"]["mfu"] < 1
  assert record["model_flops"]["total"] < record["xla_flops"]
  if compare:
    assert "jax / torch" in result.stdout
    assert record["speedup"] == pytest.approx(record["torch"]["step_s"] / record["jax"]["step_s"])


@pytest.mark.slow  # ~23 s; test_sharding's --cpu_devices test covers the split in CI
def test_cpu_devices_share_the_benchmarks_batch(tmp_path):
  result = run_benchmark(*TINY_SHAPE, "--steps=1", "--warmup=0", "--cpu_devices=2",
                         f"--json={tmp_path / 'out.json'}")
  assert result.returncode == 0, result.stderr[-2000:]
  report = json.loads((tmp_path / "out.json").read_text())
  assert report["environment"]["device"] == "2 x cpu"
  assert report["results"][0]["jax"]["tokens_per_s"] > 0


def test_kernel_time_is_counted_per_step():
  """A step that faults in fresh memory spends time in the kernel; one that only
  computes spends (next to) none: the figure that tells a slow host from slow code."""
  def touch_fresh_memory():
    np.ones(2**28, np.float32)  # 1 GiB, mapped and faulted in afresh
    return 0.0

  def compute():
    sum(range(200_000))
    return 0.0

  _, faulting = profiling.timed_steps(touch_fresh_memory, 2)
  seconds, computing = profiling.timed_steps(compute, 2)
  assert len(faulting) == len(computing) == len(seconds) == 2
  assert min(faulting) > 0.01 > max(computing)


def test_comparison_without_torch_is_one_clear_error():
  result = run_benchmark(*TINY_SHAPE, "--compare=torch",
                         prelude="import sys; sys.modules['torch'] = None")
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith(
      "error: comparing with PyTorch needs torch and transformers")


def test_torch_reference_computes_our_losses():
  """Our parameters in the transformers networks, the same masking and Gumbel noise,
  dropout off: the PyTorch step's two losses are ours, so both frameworks time the
  same computation."""
  torch = pytest.importorskip("torch", reason="needs torch and transformers: pip install "
                              "-e '.[hf]'")
  pytest.importorskip("transformers", reason="needs torch and transformers")
  from electra_jax.performance import torch_reference  # pylint: disable=import-outside-toplevel
  config = tiny_config()
  config.model.dropout_rate = config.model.attention_dropout_rate = 0.0
  params = random_params(config)
  models = torch_reference.build(config)
  for model, network in ((models.discriminator, "discriminator"), (models.generator, "generator")):
    missing, unexpected = model.load_state_dict(
        {name: torch.from_numpy(x) for name, x in hf_params.to_hf(params, network).items()},
        strict=False)
    assert not unexpected and set(missing) <= {"generator_lm_head.weight"}, (missing, unexpected)
  models.generator.eval()
  models.discriminator.eval()

  rng = np.random.default_rng(0)
  ids = rng.integers(5, config.model.vocab_size, (4, 16)).astype(np.int32)
  ids[:, 0], ids[:, -1], ids[2, 11:] = 2, 3, 0
  types = np.zeros_like(ids)
  types[:, 8:] = 1
  masked = objective.mask_tokens(jax.random.PRNGKey(0), jnp.asarray(ids), 0.15,
                                 train_step_lib.objective_settings(config).max_predictions)
  gumbel = rng.gumbel(size=(*masked.positions.shape, config.model.vocab_size)).astype(np.float32)

  model = electra.build_pretrainer(config)
  gen_logits = model.apply({"params": params}, masked.input_ids, jnp.asarray(types),
                           masked.positions, method="generator_logits")
  sampled = jnp.argmax(gen_logits + gumbel, axis=-1)
  corrupted, labels = objective.replace_tokens(jnp.asarray(ids), masked, sampled)
  real = jnp.asarray(ids != 0)
  disc_logits = model.apply({"params": params}, corrupted, jnp.asarray(types),
                            attention_mask=real, method="discriminator_logits")
  ours = (objective.mlm_loss(gen_logits, masked.targets, masked.weights),
          objective.rtd_loss(disc_logits, labels, real.astype(jnp.float32)))

  as_torch = lambda x: torch.as_tensor(np.array(x), dtype=torch.long)  # a writable copy
  with torch.no_grad():
    theirs = torch_reference.losses(
        models, as_torch(ids), as_torch(types), as_torch(masked.input_ids),
        as_torch(masked.positions), as_torch(masked.targets),
        torch.as_tensor(np.array(masked.weights)), torch.from_numpy(gumbel), 1.0)
  np.testing.assert_allclose([float(x) for x in theirs], [float(x) for x in ours], rtol=1e-5)
