"""A CPU's forms of the layers (electra_jax/cpu/) compute what the plain forms compute.

Each form against its plain counterpart, then the whole model: the loss and
every gradient of a pre-training step, with every CPU form in place against
the plain model, on the same parameters.
"""

import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model_helpers import batch, tiny_setup
from electra_jax import target
from electra_jax.cpu import layers as cpu_layers
from electra_jax.cpu import matmul, SCOPE, update
from electra_jax.cpu.layer_norm import LayerNorm
from electra_jax.models import encoder
from electra_jax.models.ops import Ops
from electra_jax.pretraining import objective, train_step as train_step_lib


def loss_and_gradients(model, params, config, deterministic):
  settings = train_step_lib.objective_settings(config)
  loss = lambda p: objective.pretraining_loss(model.apply, p, batch(), jax.random.PRNGKey(3),
                                              settings, deterministic)[0]
  return jax.jit(jax.value_and_grad(loss))(params)


def assert_close(a, b, rtol):
  (loss_a, grads_a), (loss_b, grads_b) = a, b
  np.testing.assert_allclose(loss_a, loss_b, rtol=rtol)
  scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads_a))
  for x, y in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)):
    np.testing.assert_allclose(x, y, atol=rtol * scale)


# Without dropout (~23 s) in the slow set: the default run compares them with dropout.
@pytest.mark.parametrize("dropout", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_the_cpu_model_has_the_plain_models_loss_and_gradients(dropout, monkeypatch):
  """Tolerance: 1e-5 of the loss and of the largest gradient (float32 rounding).

  With dropout on, the batch runs whole (each slice of a batch draws its own
  masks); with it off, the layers and attention run in slices.
  """
  if dropout:
    monkeypatch.setattr(cpu_layers, "BATCH_SLICES", 1)
  else:
    monkeypatch.setattr(cpu_layers, "MIN_TOKENS_PER_LAYER_SLICE", 1)
  config, plain, params = tiny_setup()
  _, cpu, cpu_params = tiny_setup(cpu_layers.OPS)
  jax.tree.map(np.testing.assert_array_equal, params, cpu_params)  # the same parameters
  assert_close(loss_and_gradients(plain, params, config, not dropout),
               loss_and_gradients(cpu, params, config, not dropout), 1e-5)
  program = jax.jit(jax.grad(lambda p: loss_and_gradients(cpu, p, config, True)[0])).lower(
      params).as_text(debug_info=True)
  assert SCOPE in program  # the CPU forms ran


def test_a_cpu_mesh_gets_the_cpu_forms_and_others_the_plain_ones():
  device = lambda platform: type("Device", (), {"platform": platform})()
  cpu = target.choices([device("cpu")] * 2, "float32")
  assert cpu.ops is cpu_layers.OPS and cpu.update_if is update.update_in_branch
  for platform in ("tpu", "gpu"):
    chosen = target.choices([device(platform)], "float32")
    assert chosen.ops == Ops() and chosen.update_if is target.update_where
  assert target.choices([device("gpu")], "bfloat16").ops.fused_attention == "cudnn"
  assert target.choices([device("tpu")], "bfloat16").ops.fused_attention is None
  with pytest.raises(ValueError, match="one platform"):
    target.platform_of([device("cpu"), device("tpu")])


@pytest.mark.parametrize("update_if", [update.update_in_branch, target.update_where])
def test_both_forms_of_the_update_update_or_leave_both_as_they_were(update_if):
  params, opt_state = {"w": jnp.arange(3.0)}, {"mu": jnp.ones(3)}
  step = lambda p, o: (jax.tree.map(lambda x: x + 1, p), jax.tree.map(lambda x: x * 2, o))
  run = jax.jit(lambda condition: update_if(condition, step, params, opt_state))
  (new_params, new_state), (kept_params, kept_state) = run(True), run(False)
  np.testing.assert_array_equal(new_params["w"], [1, 2, 3])
  np.testing.assert_array_equal(new_state["mu"], [2, 2, 2])
  np.testing.assert_array_equal(kept_params["w"], params["w"])
  np.testing.assert_array_equal(kept_state["mu"], opt_state["mu"])


@pytest.mark.parametrize("slices", [2, 3, 4])  # 4 does not divide the batch of 6
def test_attention_in_batch_slices_equals_attention_in_one_piece(slices):
  rng = np.random.default_rng(0)
  query, key, value = (jnp.asarray(rng.normal(size=(6, 8, 2, 4)), jnp.float32) for _ in range(3))
  attention_mask = jnp.asarray(rng.random((6, 8)) > 0.3)
  attend = lambda *inputs: encoder.einsum_attention(*inputs, jax.nn.softmax, lambda w: w)
  np.testing.assert_allclose(
      cpu_layers.in_batch_slices(attend, slices, query, key, value, attention_mask),
      attend(query, key, value, attention_mask), rtol=1e-6, atol=1e-6)


def test_batch_slices_draw_their_own_dropout_masks(monkeypatch):
  """Row i runs in the layers' slice i mod 2 and, in there, in attention's slice
  i // 2 mod 2: each of 4 alike rows comes first in its slice of attention, so
  with one mask for all slices they would come out equal. (Attention's dropout
  alone: the embeddings' would tell the rows apart before the layers.)"""
  assert cpu_layers.BATCH_SLICES == 2
  monkeypatch.setattr(cpu_layers, "MIN_TOKENS_PER_LAYER_SLICE", 1)
  _, model, params = tiny_setup(cpu_layers.OPS, model__dropout_rate=0.0,
                                model__attention_dropout_rate=0.5)
  ids = jnp.tile(batch()["input_ids"][1:2], (4, 1))
  logits = model.apply({"params": params}, ids, jnp.zeros_like(ids), False,
                       rngs={"dropout": jax.random.PRNGKey(0)}, method="discriminator_logits")
  for i, j in itertools.combinations(range(4), 2):
    assert not np.allclose(logits[i], logits[j]), (i, j)
  deterministic = model.apply({"params": params}, ids, jnp.zeros_like(ids), True,
                              method="discriminator_logits")
  np.testing.assert_allclose(deterministic, np.broadcast_to(deterministic[0], deterministic.shape),
                             rtol=1e-6)


def test_layers_in_batch_slices_give_the_outputs_and_gradients_of_one_piece(monkeypatch):
  monkeypatch.setattr(cpu_layers, "MIN_TOKENS_PER_LAYER_SLICE", 1)
  _, model, params = tiny_setup(cpu_layers.OPS)
  inputs = batch()

  def outputs_and_gradients():
    def total(params):
      logits = model.apply({"params": params}, inputs["input_ids"], inputs["token_type_ids"],
                           True, method="discriminator_logits")
      return jnp.sum(logits * jnp.arange(logits.size).reshape(logits.shape) / logits.size), logits
    return jax.grad(total, has_aux=True)(params)

  sliced_gradients, sliced = outputs_and_gradients()
  monkeypatch.setattr(cpu_layers, "BATCH_SLICES", 1)
  whole_gradients, whole = outputs_and_gradients()
  np.testing.assert_allclose(sliced, whole, rtol=1e-5, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               sliced_gradients, whole_gradients)


def test_layers_run_in_slices_only_when_each_holds_enough_tokens(monkeypatch):
  _, model, params = tiny_setup(cpu_layers.OPS)
  inputs = batch()  # 4 x 16 tokens

  def products() -> int:
    logits = jax.jit(functools.partial(model.apply, method="discriminator_logits"),
                     static_argnums=3)
    return logits.lower({"params": params}, inputs["input_ids"], inputs["token_type_ids"],
                        True).as_text().count("dot_general")

  whole = products()
  monkeypatch.setattr(cpu_layers, "MIN_TOKENS_PER_LAYER_SLICE", 32)
  sliced = products()
  monkeypatch.setattr(cpu_layers, "MIN_TOKENS_PER_LAYER_SLICE", 33)  # 64 tokens: 2 slices of 32
  assert products() == whole
  assert sliced > whole  # each layer's products appear once per slice


def test_layer_norm_equals_flax_layer_norm_and_its_gradient():
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 32)) * 3 + 1
  theirs = nn.LayerNorm(epsilon=1e-12)
  params = jax.tree_util.tree_map(lambda p: p + jax.random.normal(jax.random.PRNGKey(1), p.shape),
                                  theirs.init(jax.random.PRNGKey(2), x))
  weights = jax.random.normal(jax.random.PRNGKey(3), x.shape)
  loss = lambda m: lambda p, x: (m.apply(p, x) * weights).sum()
  np.testing.assert_allclose(LayerNorm(1e-12).apply(params, x), theirs.apply(params, x),
                             atol=1e-5)
  for ours, expected in zip(
      jax.tree_util.tree_leaves(jax.grad(loss(LayerNorm(1e-12)), argnums=(0, 1))(params, x)),
      jax.tree_util.tree_leaves(jax.grad(loss(theirs), argnums=(0, 1))(params, x))):
    np.testing.assert_allclose(ours, expected, atol=1e-4)


@pytest.mark.parametrize("features_in, features_out",
                         [(24, 8), (8, 24), (16, 16), (8, 8 * 17), (8 * 17, 8)])
def test_dense_matmul_and_its_gradients_equal_xlas(features_in, features_out):
  # Both orientations of the weight gradient (wider input, wider output), square,
  # and both again past the width ratio where XLA's own product takes over.
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 5, features_in))
  params = nn.Dense(features_out).init(jax.random.PRNGKey(1), x)
  weights = jax.random.normal(jax.random.PRNGKey(2), (3, 5, features_out))
  loss = lambda dense: lambda p, x: (jnp.tanh(dense.apply(p, x)) * weights).sum()
  ours, xlas = nn.Dense(features_out, dot_general=matmul.dot_general), nn.Dense(features_out)
  np.testing.assert_allclose(ours.apply(params, x), xlas.apply(params, x), atol=1e-6)
  gradients = [jax.tree_util.tree_leaves(jax.grad(loss(dense), argnums=(0, 1))(params, x))
               for dense in (ours, xlas)]
  for a, b in zip(*gradients):
    np.testing.assert_allclose(a, b, atol=1e-5)
  # The custom gradient is what ran: its barrier is in the program.
  assert "optimization_barrier" in str(jax.make_jaxpr(jax.grad(loss(ours)))(params, x))


@pytest.mark.parametrize("vocab_size", [40, 8 * 17])
def test_folded_vocabulary_logits_and_their_gradients_equal_the_plain_ones(vocab_size):
  # Tied output embeddings: a [vocab, embed] table (a real vocabulary is far past
  # the matmul's width ratio; a small one is not).
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 8))
  table = jax.random.normal(jax.random.PRNGKey(1), (vocab_size, 8))
  bias = jax.random.normal(jax.random.PRNGKey(2), (vocab_size,))
  loss = lambda logits: lambda *args: jnp.tanh(logits(*args, jnp.float32)).sum()
  plain = Ops().vocabulary_logits
  np.testing.assert_allclose(cpu_layers.folded_vocabulary_logits(x, table, bias, jnp.float32),
                             plain(x, table, bias, jnp.float32), atol=1e-5)
  for ours, theirs in zip(
      jax.grad(loss(cpu_layers.folded_vocabulary_logits), argnums=(0, 1, 2))(x, table, bias),
      jax.grad(loss(plain), argnums=(0, 1, 2))(x, table, bias)):
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_gelu_and_its_gradient_equal_the_plain_ones():
  x = jnp.linspace(-8, 8, 2001)
  plain = Ops().gelu
  np.testing.assert_allclose(cpu_layers.gelu(x), plain(x), atol=1e-6)
  np.testing.assert_allclose(jax.vmap(jax.grad(cpu_layers.gelu))(x),
                             jax.vmap(jax.grad(plain))(x), atol=1e-6)


@pytest.mark.parametrize("heads", [1, 4])
def test_softmax_equals_the_plain_one(heads):
  scores = jax.random.normal(jax.random.PRNGKey(0), (2, heads, 8, 8))
  np.testing.assert_allclose(cpu_layers.softmax(scores), jax.nn.softmax(scores), rtol=1e-6)
