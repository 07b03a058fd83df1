"""Model FLOPs of a train step, the peak FLOP/s of the devices, and their ratio: MFU.

Model FLOPs count the matmuls that the objective (ELECTRA or MLM) needs, from the config alone, the
way MFU is usually defined (PaLM, appendix B): each matmul is 2 x m x n x k
FLOPs forward and twice that backward, so a step costs 3 x its forward
matmuls. Elementwise work, the optimizer and any recomputation (model.remat)
are not counted: a step that does them faster or skips them scores higher.

The peak comes from a table of known accelerators (dense bfloat16 and the
float32 matmul rate at JAX's default precision, from the vendors' data
sheets); on CPU it is measured: the best FLOP/s of a large matmul in the
compute dtype on this machine, now.
"""

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import ml_collections

from electra_jax import config as config_lib
from electra_jax import target
from electra_jax.performance import tpu

# Per JAX device, (bfloat16, float32) FLOP/s. float32 matmuls at JAX's default
# precision run as TF32 on NVIDIA Ampere and newer, and as bfloat16 passes on TPU.
# TPU v2 and v3 show each TensorCore as a device; later TPUs show a chip (tpu.py).
# Matched against `device.device_kind` in this order (first match wins).
DEVICE_PEAKS: tuple[tuple[str, float, float], ...] = (
    ("H100 PCIe", 756e12, 378e12),
    ("H100", 989e12, 494e12),  # SXM
    ("H200", 989e12, 494e12),
    ("A100", 312e12, 156e12),
    ("L40S", 362e12, 183e12),
    ("L4", 121e12, 60e12),
    ("V100", 125e12, 15.7e12),  # no bfloat16 units: the float16 tensor-core rate
    ("TPU v2", 22.5e12, 22.5e12),
    ("TPU v3", 61.5e12, 61.5e12),
    # Longest names first: "TPU v5 lite" before "TPU v5".
    *((chip.device_kind, chip.peak_bf16_flops, chip.peak_bf16_flops)
      for chip in sorted(tpu.CHIPS, key=lambda chip: -len(chip.device_kind))),
)


@dataclasses.dataclass(frozen=True)
class Peak:
  """What the devices of one run can do at most, and how we know."""

  flops_per_s: float  # all devices together
  source: str  # "table: <device kind>", "measured: ..." or "--peak_flops"

  @property
  def measured(self) -> bool:
    """Timed on this host (`measure_matmul_flops`), rather than known."""
    return self.source.startswith("measured:")


def encoder_forward_flops(hidden: int, intermediate: int, layers: int, embedding: int,
                          length: int, feed_forward: str = "gelu") -> dict[str, float]:
  """Forward matmul FLOPs per token of one Transformer stack, by part (GeGLU's feed-forward
  has a third matrix, its gate)."""
  feed_forward_matrices = 3 if feed_forward == "geglu" else 2
  return dict(
      projection=2.0 * embedding * hidden if embedding != hidden else 0.0,
      dense=layers * 2.0 * (4 * hidden * hidden + feed_forward_matrices * hidden * intermediate),
      attention=layers * 2.0 * 2 * length * hidden,  # scores and weighted values
  )


def step_flops(config: ml_collections.ConfigDict) -> dict[str, float]:
  """Model FLOPs of one train step of `config` (forward + backward), by part and in total.

  ELECTRA's parts: generator, discriminator (their stacks; of which attention
  is listed apart), generator_head (at the masked positions only),
  discriminator_head. MLM's (objective "mlm"): discriminator (the full-size
  encoder), its attention, and mlm_head (at the masked positions only).
  """
  m = config.model
  batch, length = config.train.batch_size, config.data.max_seq_length
  tokens = batch * length
  predictions = batch * config_lib.max_predictions_per_seq(config)
  mlm_head = lambda hidden: predictions * 2.0 * (hidden * m.embedding_size +
                                                 m.embedding_size * m.vocab_size)
  disc_stack = encoder_forward_flops(m.hidden_size, m.intermediate_size, m.num_layers,
                                     m.embedding_size, length, m.feed_forward)
  forward = dict(discriminator=tokens * sum(disc_stack.values()),
                 discriminator_attention=tokens * disc_stack["attention"])
  if config.objective == "mlm":
    forward["mlm_head"] = mlm_head(m.hidden_size)
  else:
    gen = config_lib.generator_dims(config)
    gen_stack = encoder_forward_flops(gen["hidden_size"], gen["intermediate_size"],
                                      gen["num_layers"], m.embedding_size, length,
                                      m.feed_forward)
    forward.update(
        generator=tokens * sum(gen_stack.values()),
        generator_attention=tokens * gen_stack["attention"],
        generator_head=mlm_head(gen["hidden_size"]),
        discriminator_head=tokens * 2.0 * (m.hidden_size * m.hidden_size + m.hidden_size))
  counted = {name: 3.0 * value for name, value in forward.items()}
  counted["total"] = sum(value for name, value in counted.items()
                         if not name.endswith("_attention"))
  return counted


def peak_flops(dtype: str, devices: list[jax.Device] | None = None) -> Peak | None:
  """The devices' peak FLOP/s in `dtype` ("float32" or "bfloat16"), or None when unknown.

  On CPU the devices share the host's cores, so the peak is the host's,
  measured (`measure_matmul_flops`), however many devices it is split into.
  """
  devices = list(devices or jax.devices())
  if target.platform_of(devices) == "cpu":
    return Peak(measure_matmul_flops(dtype), f"measured: best of {dtype} matmuls on this CPU")
  kind = devices[0].device_kind
  for name, bf16, fp32 in DEVICE_PEAKS:
    if name in kind:
      per_device = bf16 if dtype == "bfloat16" else fp32
      return Peak(per_device * len(devices), f"table: {name} ({kind}), {len(devices)} devices")
  return None


def remeasured(peak: Peak | None, dtype: str) -> Peak | None:
  """A measured `peak`, or the higher rate the same matmuls reach now.

  A shared or virtual host's speed drifts by 10-20% for seconds to minutes at
  a time, and one measurement can fall in a slow spell; a peak measured low
  would overstate the MFU. The benchmark measures again after its steps.
  """
  if peak is None or not peak.measured:
    return peak
  now = measure_matmul_flops.__wrapped__(dtype)  # past the cache
  return dataclasses.replace(peak, flops_per_s=max(peak.flops_per_s, now))


@functools.lru_cache
def measure_matmul_flops(dtype: str, sizes: tuple[int, ...] = (1024, 2048),
                         repeats: int = 5) -> float:
  """The highest FLOP/s of square matmuls of `sizes` in `dtype` on the default device.

  The best of several runs: the rate the hardware reaches, not what a busy
  machine happened to leave over during one of them (cached: training
  measures once; `remeasured` measures again).
  """
  best = 0.0
  for n in sizes:
    a = jnp.ones((n, n), jnp.dtype(dtype))
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(a, a).block_until_ready()
    for _ in range(repeats):
      start = time.perf_counter()
      matmul(a, a).block_until_ready()
      best = max(best, 2.0 * n**3 / (time.perf_counter() - start))
  return best


def mfu(flops_per_step: float, seconds_per_step: float, peak: Peak | None) -> float:
  """Model FLOPs utilisation in [0, 1]; NaN when the peak is unknown."""
  if peak is None or seconds_per_step <= 0:
    return float("nan")
  return flops_per_step / seconds_per_step / peak.flops_per_s


def describe(flops: dict[str, float]) -> str:
  """One line: the total and the share of each network."""
  total = flops["total"]
  parts = [name for name in ("generator", "generator_head", "discriminator",
                             "discriminator_head", "mlm_head") if name in flops]
  return f"{total:.3g} model FLOPs per step (" + ", ".join(
      f"{name} {100 * flops[name] / total:.1f}%" for name in parts) + ")"


def describe_peak(peak: Peak | None) -> str:
  return (f"{peak.flops_per_s:.3g} FLOP/s ({peak.source})" if peak else
          "unknown for this device (no MFU; the benchmark takes --peak_flops)")
