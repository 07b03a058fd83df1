"""The paper's fine-tuning recipe: layer-wise learning rates, warmup, defaults per task and size."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import finetune_helpers as helpers
from conftest import load_config
from electra_jax.convert import pretrained
from electra_jax.errors import ConfigError
from electra_jax.finetune import config as finetune_config
from electra_jax.finetune import model as model_lib
from electra_jax.finetune import optimizer as optimizer_lib
from electra_jax.finetune import tasks
from electra_jax.runtime import sharding


def params_of(num_layers: int, embedding_size=16, hidden_size=32):
  c = load_config("tiny").model
  c.update(num_layers=num_layers, embedding_size=embedding_size, hidden_size=hidden_size,
           num_heads=2, intermediate_size=16, vocab_size=50)
  model = model_lib.build_model(c, tasks.CLASSIFICATION, 2)
  return jax.eval_shape(lambda: sharding.unbox(model_lib.init_partitioned_params(
      model, jax.random.PRNGKey(0), 8)))


def test_layer_scales_give_the_top_layer_and_head_the_full_rate():
  scales = optimizer_lib.layer_scales(params_of(3), num_layers=3, decay=0.5)
  assert scales["head"]["kernel"] == 1.0
  assert scales["discriminator"]["layer_2"]["attention"]["query"]["kernel"] == 1.0  # top
  assert scales["discriminator"]["layer_1"]["output"]["bias"] == 0.5
  assert scales["discriminator"]["layer_0"]["output_layer_norm"]["scale"] == 0.25
  # The embeddings and their projection to the hidden size learn slowest: decay^L.
  assert scales["embeddings"]["word_embeddings"]["embedding"] == 0.125
  assert scales["discriminator"]["embeddings_project"]["kernel"] == 0.125


def test_updates_follow_the_schedule_and_the_layer_scales():
  """With warmup 10% of 20 steps and Adam's first step of +-lr, each update is lr_t * scale."""
  params = params_of(2)
  c = finetune_config.default_config("sst2")
  c.optim.update(learning_rate=1e-2, layer_decay=0.5, weight_decay=0.0, max_grad_norm=1e9)
  optimizer, schedule = optimizer_lib.build_optimizer(c, params, num_layers=2, total_steps=20)
  assert [float(schedule(s)) for s in (0, 1, 2, 11, 20)] == pytest.approx(
      [0, 5e-3, 1e-2, 5e-3, 0])
  zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), params)
  grads = jax.tree.map(lambda x: jnp.ones(x.shape, x.dtype), params)
  update = jax.jit(optimizer.update)  # one compile, not one per parameter shape
  state = optimizer.init(zeros)
  _, state = update(grads, state, zeros)  # step 0: learning rate 0
  updates, _ = update(grads, state, zeros)  # step 1: 5e-3, Adam's step is 1
  assert float(updates["head"]["kernel"][0, 0]) == pytest.approx(-5e-3, rel=1e-3)
  assert float(updates["discriminator"]["layer_0"]["output"]["bias"][0]) == pytest.approx(
      -2.5e-3, rel=1e-3)
  assert float(updates["embeddings"]["layer_norm"]["scale"][0]) == pytest.approx(-1.25e-3,
                                                                                 rel=1e-3)


def test_weight_decay_skips_layer_norms_and_biases():
  params = params_of(1)
  c = finetune_config.default_config("sst2")
  c.optim.update(learning_rate=1.0, layer_decay=1.0, weight_decay=0.5, warmup_fraction=0.0)
  optimizer, _ = optimizer_lib.build_optimizer(c, params, num_layers=1, total_steps=10)
  ones = jax.tree.map(lambda x: jnp.ones(x.shape, x.dtype), params)
  zeros = jax.tree.map(jnp.zeros_like, ones)
  updates, _ = jax.jit(optimizer.update)(zeros, optimizer.init(ones), ones)  # decay only
  assert float(updates["head"]["kernel"][0, 0]) == pytest.approx(-0.5)
  assert float(updates["head"]["bias"][0]) == 0.0
  assert float(updates["embeddings"]["layer_norm"]["scale"][0]) == 0.0


@pytest.mark.parametrize("hidden, layers, learning_rate, decay", [
    (256, 12, 3e-4, 0.8), (768, 12, 1e-4, 0.8), (1024, 24, 5e-5, 0.9)])
def test_unset_fields_take_the_papers_recipe_for_the_size_and_task(hidden, layers, learning_rate,
                                                                   decay):
  model = load_config("small").model
  model.update(hidden_size=hidden, num_layers=layers)
  for task, epochs in (("sst2", 3), ("stsb", 10), ("rte", 10), ("squad1", 2), ("conll", 3)):
    c = finetune_config.default_config(task)
    finetune_config.resolve(c, model)
    assert (c.optim.learning_rate, c.optim.layer_decay, c.train.epochs) == (
        learning_rate, decay, epochs)
  c = finetune_config.default_config("sst2")
  c.optim.learning_rate, c.train.epochs = 1e-3, 1
  finetune_config.resolve(c, model)
  assert (c.optim.learning_rate, c.train.epochs) == (1e-3, 1)  # set fields are kept


def test_sequence_longer_than_the_models_positions_is_refused():
  model = load_config("small").model
  model.max_position_embeddings = 64
  c = finetune_config.default_config("sst2")
  c.init = "runs/x"
  with pytest.raises(ConfigError, match="'max_seq_length' = 128 exceeds the 64 positions of the "
                     "model in runs/x; set --config.max_seq_length=64 or less"):
    finetune_config.resolve(c, model)


@pytest.mark.parametrize("field, value, message", [
    ("task", "squad3", "must be one of cola, sst2"),
    ("optim.layer_decay", 1.5, "a number in \\(0, 1\\]"),
    ("train.epochs", 0, "a positive integer, or unset"),
    ("data_dir", "tfds", "reads GLUE tasks only"),
])
def test_bad_config_values_name_the_field(field, value, message):
  c = finetune_config.default_config("conll")
  c.update(init="x", data_dir="y")
  *section, name = field.split(".")
  (c[section[0]] if section else c)[name] = value
  with pytest.raises(ConfigError, match=message):
    finetune_config.validate(c)


def test_pretrained_weights_fit_the_fine_tuning_model(tmp_path):
  """The encoder's parameters have pre-training's names and shapes; only the head is new."""
  discriminator = pretrained.load_discriminator(helpers.export_model(tmp_path))
  model = model_lib.build_model(discriminator.model, tasks.TAGGING, 5)
  shapes = jax.eval_shape(lambda: sharding.unbox(model_lib.init_partitioned_params(
      model, jax.random.PRNGKey(0), 8)))
  assert set(shapes) == {"embeddings", "discriminator", "head"}
  for name in model_lib.PRETRAINED:
    assert jax.tree.map(np.shape, discriminator.params[name]) == jax.tree.map(
        lambda x: x.shape, shapes[name])
  assert shapes["head"]["kernel"].shape == (32, 5)
  # Tagging outputs one score per token and tag; the loss skips unlabelled tokens.
  outputs = jnp.zeros((2, 4, 5)).at[0, 1, 3].set(10.0)
  batch = dict(targets=jnp.array([[-1, 3, -1, -1], [-1, -1, -1, -1]]))
  assert float(model_lib.loss(tasks.TAGGING, outputs, batch)) == pytest.approx(
      float(optax.softmax_cross_entropy_with_integer_labels(outputs[0, 1], 3)))
