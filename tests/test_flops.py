"""The analytic model FLOPs, the peak table and MFU."""

import dataclasses

import jax
import pytest

from conftest import load_config
from electra_jax.performance import flops
from electra_jax.pretraining import train_step as train_step_lib
from electra_jax.runtime import sharding


def small_shapes(config):
  config.train.batch_size = 4
  config.data.max_seq_length = 32
  return config


def test_model_flops_agree_with_xla_count():
  """XLA counts every operation of the compiled step; the model FLOPs count only the
  matmuls, so XLA's count is a little higher, never lower or far off."""
  config = small_shapes(load_config("small"))
  config.model.num_layers = 2  # compiles in seconds; the count is per layer anyway
  counted = flops.step_flops(config)
  xla = train_step_lib.compile_training(config, sharding.create_mesh(config.mesh)).cost["flops"]
  assert counted["total"] <= xla <= 1.25 * counted["total"], (counted["total"], xla)


def test_parts_add_up_and_follow_the_sizes():
  config = load_config("small")
  parts = flops.step_flops(config)
  assert parts["total"] == pytest.approx(sum(parts[name] for name in (
      "generator", "generator_head", "discriminator", "discriminator_head")))
  # ELECTRA-Small at the paper's batch: 1.4e18 FLOPs over 1M steps (ELECTRA.md).
  assert parts["total"] == pytest.approx(1.4e12, rel=0.2)
  # The generator head runs at the masked positions only: doubling the mask rate
  # doubles it and leaves the discriminator alone.
  config.masking.mask_rate = 0.30
  more = flops.step_flops(config)
  assert more["generator_head"] == pytest.approx(2 * parts["generator_head"], rel=0.05)
  assert more["discriminator"] == parts["discriminator"]
  # Attention grows with the length squared, the dense layers linearly.
  config.data.max_seq_length = 512
  long = flops.step_flops(config)
  assert long["discriminator_attention"] == pytest.approx(16 * parts["discriminator_attention"])


def test_peak_table_and_mfu():
  fake = dataclasses.make_dataclass("Device", ["platform", "device_kind"])
  a100 = [fake("gpu", "NVIDIA A100-SXM4-80GB")] * 8
  assert flops.peak_flops("bfloat16", a100).flops_per_s == 8 * 312e12
  assert flops.peak_flops("float32", a100).flops_per_s == 8 * 156e12
  assert flops.peak_flops("bfloat16", [fake("gpu", "NVIDIA H100 PCIe")]).flops_per_s == 756e12
  assert flops.peak_flops("bfloat16", [fake("tpu", "TPU v5 lite")]).flops_per_s == 197e12
  assert flops.peak_flops("bfloat16", [fake("gpu", "Some Future GPU")]) is None
  peak = flops.Peak(1e12, "test")
  assert flops.mfu(5e11, 1.0, peak) == pytest.approx(0.5)
  assert flops.mfu(5e11, 1.0, None) != flops.mfu(5e11, 1.0, None)  # NaN when unknown


def test_cpu_peak_is_measured():
  peak = flops.peak_flops("float32", jax.devices("cpu"))
  assert peak.source.startswith("measured") and 1e9 < peak.flops_per_s < 1e14


def test_a_measured_peak_is_measured_again_and_only_ever_raised():
  low = flops.Peak(1.0, "measured: test")
  again = flops.remeasured(low, "float32")
  assert again.flops_per_s > 1e9 and again.source == low.source
  high = flops.Peak(1e30, "measured: test")
  assert flops.remeasured(high, "float32") == high
  known = flops.Peak(1.0, "table: test")  # a device's known peak is not re-measured
  assert flops.remeasured(known, "float32") == known
  assert flops.remeasured(None, "float32") is None


def test_mlm_counts_the_full_size_encoder_and_its_head_at_the_masked_positions():
  config = load_config("small")
  electra_flops = flops.step_flops(config)
  config.objective = "mlm"
  mlm = flops.step_flops(config)
  assert set(mlm) == {"discriminator", "discriminator_attention", "mlm_head", "total"}
  assert mlm["discriminator"] == electra_flops["discriminator"]  # the same encoder
  assert mlm["total"] == pytest.approx(mlm["discriminator"] + mlm["mlm_head"])
  m, predictions = config.model, config.train.batch_size * 19
  assert mlm["mlm_head"] == pytest.approx(
      3 * 2 * predictions * (m.hidden_size * m.embedding_size + m.embedding_size * m.vocab_size))
  # No generator and no per-token head: an MLM step of the same encoder costs less.
  assert mlm["total"] < electra_flops["total"]
  assert "mlm_head" in flops.describe(mlm)


@pytest.mark.slow  # ~21 s; the ELECTRA model's count against XLA's runs by default
def test_mlm_model_flops_agree_with_xla_count():
  config = small_shapes(load_config("small"))
  config.model.num_layers, config.objective = 2, "mlm"
  counted = flops.step_flops(config)
  xla = train_step_lib.compile_training(config, sharding.create_mesh(config.mesh)).cost["flops"]
  assert counted["total"] <= xla <= 1.25 * counted["total"], (counted["total"], xla)
