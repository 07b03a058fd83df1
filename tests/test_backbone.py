"""The backbone's choices (model.position_embedding, .feed_forward, .norm_position, .use_bias):
each computes what its paper says, and every combination exports, fine-tunes, counts its
FLOPs and compiles for a TPU slice; transformers' ELECTRA export refuses what it cannot hold.
"""

import importlib.util
import itertools
import math
import os

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_config
from convert_helpers import random_params, tiny_config, write_run
from electra_jax import config as config_lib
from electra_jax.convert import pretrained
from electra_jax.convert.run_export import export_run
from electra_jax.cpu import SCOPE
from electra_jax.errors import UserError
from electra_jax.finetune import model as finetune_model
from electra_jax.finetune import optimizer as finetune_optimizer
from electra_jax.finetune import tasks
from electra_jax.models import electra
from electra_jax.models.encoder import EncoderSizes, ModelSettings, TransformerLayer, rotary
from electra_jax.performance import compile_report, flops, tpu
from electra_jax.pretraining import train_step as train_step_lib
from electra_jax.runtime import sharding

MODERN = {"position_embedding": "rotary", "feed_forward": "geglu", "norm_position": "pre",
          "use_bias": False}
CHOICES = {field: (classic, MODERN[field])
           for field, classic in config_lib.CLASSIC_BACKBONE.items()}
EVERY_COMBINATION = [dict(zip(CHOICES, values)) for values in itertools.product(*CHOICES.values())]
TOLERANCE = 1e-5


def combination_id(backbone: dict) -> str:
  return "-".join(str(value) for value in backbone.values())


def test_rotary_scores_depend_only_on_how_far_apart_query_and_key_are():
  rng = np.random.default_rng(0)
  query, key = (np.broadcast_to(rng.normal(size=8), (1, 12, 1, 8)).astype(np.float32)
                for _ in range(2))
  rotated_query, rotated_key = np.asarray(rotary(jnp.asarray(query))), np.asarray(
      rotary(jnp.asarray(key)))
  np.testing.assert_allclose(rotated_query[0, 0], query[0, 0])  # position 0 does not turn
  score = lambda m, n: rotated_query[0, m, 0] @ rotated_key[0, n, 0]
  for m, n, shift in ((3, 1, 5), (0, 7, 4), (9, 9, 2)):
    assert score(m, n) == pytest.approx(score(m + shift, n + shift), abs=1e-4)
  assert score(3, 1) != pytest.approx(score(1, 3), abs=1e-3)  # but the offset's sign matters


def reference_layer(params: dict, x: np.ndarray, mask: np.ndarray, backbone: dict,
                    heads: int) -> np.ndarray:
  """One Transformer layer in numpy, from its papers: BERT's post-LayerNorm block, or
  pre-LayerNorm; GELU or GeGLU; rotary positions on queries and keys; biases where kept."""
  x = x.astype(np.float64)
  bias = lambda p, shape: np.asarray(p["bias"]).reshape(shape) if "bias" in p else 0.0

  def norm(v, p):
    mean, var = v.mean(-1, keepdims=True), v.var(-1, keepdims=True)
    return (v - mean) / np.sqrt(var + 1e-12) * p["scale"] + p["bias"]

  def turn(v):  # [batch, length, heads, size]: pair i with i + size/2
    half = v.shape[-1] // 2
    angle = np.arange(v.shape[1])[:, None] * 10_000.0**(-np.arange(half) / half)
    cos, sin = np.cos(angle)[None, :, None], np.sin(angle)[None, :, None]
    return np.concatenate([v[..., :half] * cos - v[..., half:] * sin,
                           v[..., half:] * cos + v[..., :half] * sin], -1)

  def attention(h):
    a = params["attention"]
    q, k, v = (np.einsum("bld,dnk->blnk", h, a[name]["kernel"]) + bias(a[name], (heads, -1))
               for name in ("query", "key", "value"))
    if backbone["position_embedding"] == "rotary":
      q, k = turn(q), turn(k)
    scores = np.einsum("bqnk,bpnk->bnqp", q, k) / math.sqrt(q.shape[-1])
    scores = np.where(mask[:, None, None, :], scores, -1e30)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    context = np.einsum("bnqp,bpnk->bqnk", weights, v)
    return (np.einsum("bqnk,nkd->bqd", context, a["output"]["kernel"]) +
            bias(a["output"], (-1,)))

  gelu = np.vectorize(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))))
  dense = lambda h, name: h @ params[name]["kernel"] + bias(params[name], (-1,))

  def feed_forward(h):
    hidden = gelu(dense(h, "intermediate"))
    if backbone["feed_forward"] == "geglu":
      hidden = hidden * dense(h, "intermediate_gate")
    return dense(hidden, "output")

  for sublayer, norm_name in ((attention, "attention_layer_norm"),
                              (feed_forward, "output_layer_norm")):
    if backbone["norm_position"] == "pre":
      x = x + sublayer(norm(x, params[norm_name]))
    else:
      x = norm(x + sublayer(x), params[norm_name])
  return x


@pytest.mark.parametrize("backbone", EVERY_COMBINATION, ids=combination_id)
def test_each_layer_computes_what_its_choices_say(backbone):
  sizes = EncoderSizes(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=24)
  layer = TransformerLayer(sizes, ModelSettings(**backbone))
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 6, 16)).astype(np.float32)
  mask = np.ones((2, 6), bool)
  mask[1, 4:] = False
  params = nn.unbox(layer.init(jax.random.PRNGKey(0), x, mask, True)["params"])
  # Random values everywhere (not the initial zeros and ones), so every parameter counts.
  params = jax.tree_util.tree_map(
      lambda p: (p + rng.normal(0, 0.2, p.shape)).astype(np.float32), params)
  ours = layer.apply({"params": params}, x, mask, True)
  theirs = reference_layer(jax.tree_util.tree_map(np.asarray, params), x, mask, backbone, 2)
  np.testing.assert_allclose(np.asarray(ours), theirs, atol=TOLERANCE, rtol=TOLERANCE)


def modern_config():
  config = tiny_config()
  config.model.update(MODERN)
  config_lib.validate(config)
  return config


def test_without_biases_only_the_layer_norms_and_the_vocabulary_bias_have_one():
  shapes = flax.traverse_util.flatten_dict(
      electra.init_params(electra.build_pretrainer(modern_config()), jax.random.PRNGKey(0), 8, 2))
  with_bias = {"/".join(path) for path in shapes if path[-1] in ("bias", "output_bias")}
  assert with_bias and all("layer_norm" in name or name.endswith("output_bias")
                           for name in with_bias), with_bias
  assert not any("position_embeddings" in path for path in shapes)  # rotary: no table
  assert any(path[-2] == "final_layer_norm" for path in shapes)


@pytest.mark.parametrize("field", MODERN)
def test_transformers_export_refuses_a_choice_it_cannot_hold_naming_the_field(tmp_path, field):
  config = tiny_config()
  config.model[field] = MODERN[field]
  write_run(tmp_path / "run", config, random_params(config))
  with pytest.raises(UserError, match=f"model.{field} is {MODERN[field]!r}, which "
                                      "transformers' ELECTRA cannot express"):
    export_run(str(tmp_path / "run"), "hf", str(tmp_path / "hf"))
  assert not os.path.exists(tmp_path / "hf")


def test_a_modern_backbone_exports_for_flax_fine_tuning(tmp_path):
  config = modern_config()
  params = random_params(config)
  write_run(tmp_path / "run", config, params)
  export_run(str(tmp_path / "run"), "flax", str(tmp_path / "flax"))
  discriminator = pretrained.load_discriminator(str(tmp_path / "flax"))
  assert {field: discriminator.model[field] for field in MODERN} == MODERN
  model = finetune_model.build_model(discriminator.model, tasks.CLASSIFICATION, 2)
  fresh = nn.unbox(finetune_model.init_partitioned_params(model, jax.random.PRNGKey(0), 16))
  for name in finetune_model.PRETRAINED:  # the pre-trained subtrees drop in as they are
    assert (jax.tree_util.tree_map(np.shape, fresh[name]) ==
            jax.tree_util.tree_map(np.shape, discriminator.params[name]))
  # Layer-wise decay places every parameter, the final LayerNorm with the last layer.
  scales = flax.traverse_util.flatten_dict(finetune_optimizer.layer_scales(
      fresh, discriminator.model.num_layers, 0.8))
  assert scales[("discriminator", "final_layer_norm", "scale")] == scales[
      ("discriminator", f"layer_{discriminator.model.num_layers - 1}", "output_layer_norm",
       "scale")] == 1.0
  merged = {**fresh, **{name: discriminator.params[name] for name in finetune_model.PRETRAINED}}
  ids = np.full((2, 16), 7, np.int32)
  ids[:, 0] = 2
  outputs = model.apply({"params": merged}, ids, np.zeros_like(ids))
  assert outputs.shape == (2, 2) and np.all(np.isfinite(outputs))


def test_geglu_flops_count_the_gate_as_xla_does():
  config = load_config("small")
  config.model.num_layers, config.train.batch_size, config.data.max_seq_length = 2, 8, 64
  config.model.update(MODERN)
  counted = flops.step_flops(config)
  classic = load_config("small")
  classic.model.num_layers, classic.train.batch_size, classic.data.max_seq_length = 2, 8, 64
  assert counted["discriminator"] > flops.step_flops(classic)["discriminator"]
  xla = train_step_lib.compile_training(config, sharding.create_mesh(config.mesh)).cost["flops"]
  assert counted["total"] <= xla <= 1.25 * counted["total"], (counted["total"], xla)


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                    reason='needs libtpu: pip install -e ".[tpu]"')
def test_the_modern_backbone_compiles_for_a_tpu_slice_with_tensor_parallelism():
  config = load_config("tiny")
  config.model.update(MODERN)
  config.train.batch_size = 32
  config.mesh.data, config.mesh.tensor = 4, 2
  mesh = compile_report.topology_mesh(config, tpu.parse_topology("v5e:2x4"))
  hlo = train_step_lib.compile_training(config, mesh).train_step.as_text()
  assert SCOPE not in hlo
