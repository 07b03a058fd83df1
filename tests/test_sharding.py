"""Sharding: the mesh from the config, parameter and batch layouts, and equal losses on 8 devices.

The 8-device checks run this file as a script in a subprocess, where
XLA_FLAGS gives the CPU 8 devices before jax starts; the rest of the suite
keeps its one device.
"""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest

from conftest import REPO, load_config
from electra_jax import config as config_lib
from electra_jax.errors import ConfigError
from electra_jax.models import electra
from electra_jax.pretraining import loop
from electra_jax.pretraining import train_step as train_step_lib
from electra_jax.runtime import sharding

MESHES = [(1, 1, 1), (8, 1, 1), (2, 4, 1), (2, 2, 2), (1, 2, 4)]
STEPS = 20
BATCH_SIZE = 8  # the smallest that (8, 1, 1) can split
# The bound: sharded runs differ from one device only in the order of reductions.
RELATIVE_TOLERANCE = 1e-5


def mesh_config(data=-1, fsdp=1, tensor=1):
  config = load_config("tiny")
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = data, fsdp, tensor
  return config


# ---------------------------------------------------------------------------
# The mesh and the rules (one device)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("sizes, devices, expected", [
    ((-1, 1, 1), 8, (8, 1, 1)),
    ((2, -1, 1), 8, (2, 4, 1)),
    ((1, 2, -1), 8, (1, 2, 4)),
    ((2, 2, 2), 8, (2, 2, 2)),
    ((-1, 1, 1), 1, (1, 1, 1)),
])
def test_mesh_shape_fills_the_remaining_devices(sizes, devices, expected):
  assert sharding.mesh_shape(mesh_config(*sizes).mesh, devices) == expected


@pytest.mark.parametrize("sizes, devices", [((3, -1, 1), 8), ((2, 2, 1), 8), ((2, 1, 1), 1)])
def test_a_mesh_that_does_not_fit_the_devices_is_refused(sizes, devices):
  with pytest.raises(ConfigError, match=f"does not fit the {devices} device"):
    sharding.mesh_shape(mesh_config(*sizes).mesh, devices)


def test_mesh_config_is_validated():
  config = mesh_config(-1, -1, 1)
  with pytest.raises(ConfigError, match="more than one -1"):
    config_lib.validate(config)
  config = mesh_config(0, 1, 1)
  with pytest.raises(ConfigError, match="'mesh.data' = 0 is not allowed"):
    config_lib.validate(config)
  config = mesh_config()
  config.mesh.rules.mlp = "tensor,model"
  with pytest.raises(ConfigError, match="'mesh.rules.mlp' = 'tensor,model' is not allowed"):
    config_lib.validate(config)
  config.mesh.rules.mlp = "tensor,tensor"
  with pytest.raises(ConfigError, match="each at most once"):
    config_lib.validate(config)


def test_axis_rules_come_from_the_config_in_precedence_order():
  config = mesh_config()
  config.mesh.rules.mlp = ""
  config.mesh.rules.embed = "fsdp, tensor"
  rules = dict(sharding.axis_rules(config.mesh))
  assert rules["batch"] == ("data", "fsdp") and rules["vocab"] == "tensor"
  assert rules["mlp"] is None and rules["embed"] == ("fsdp", "tensor")
  assert [name for name, _ in sharding.axis_rules(config.mesh)] == [
      name for name, _ in config_lib.DEFAULT_AXIS_RULES]


def test_every_parameter_has_a_logical_name_per_dimension():
  config = load_config("tiny")
  model = electra.build_pretrainer(config)
  boxed = jax.eval_shape(lambda: electra.init_partitioned_params(model, jax.random.PRNGKey(0),
                                                                 16, 3))
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  known = {name for name, _ in config_lib.DEFAULT_AXIS_RULES}
  for leaf in leaves:
    assert isinstance(leaf, nn.Partitioned), leaf
    assert len(leaf.names) == len(leaf.value.shape)
    assert {name for name in leaf.names if name} <= known
  # The largest matrices are split along both mesh axes that parameters use.
  words = boxed["embeddings"]["word_embeddings"]["embedding"]
  assert words.names == ("vocab", "embed")


def test_main_activations_are_constrained_when_a_mesh_is_in_scope():
  config = load_config("tiny")
  model = electra.build_pretrainer(config)
  params = jax.eval_shape(lambda: electra.init_params(model, jax.random.PRNGKey(0), 16, 3))
  ids = np.zeros((2, 16), np.int32)
  apply = jax.jit(lambda p: model.apply({"params": p}, ids, ids,
                                        method="discriminator_logits"))
  mesh = sharding.create_mesh(config.mesh)
  with sharding.activate(mesh, sharding.axis_rules(config.mesh)):
    constrained = apply.lower(params).as_text().count("sharding_constraint")
  unconstrained = apply.lower(params).as_text().count("sharding_constraint")
  # Per layer: query, key, value, context, feed-forward, output; plus embeddings and logits.
  layers = config.model.num_layers
  assert unconstrained == 0 and constrained >= 6 * layers + 2


def test_batch_that_the_mesh_cannot_split_is_refused():
  mesh = jax.sharding.AbstractMesh((2, 4, 1), config_lib.MESH_AXES)
  with pytest.raises(ConfigError, match="'train.batch_size' = 12 must be divisible by the 8 "
                     r"batch slices of the mesh \(data x fsdp = 2 x 4\)"):
    sharding.batch_sharding(mesh, 12)
  assert sharding.batch_sharding(mesh, 16).spec == jax.sharding.PartitionSpec(("data", "fsdp"))


def test_one_process_holds_all_rows_and_builds_the_global_batch():
  mesh = sharding.create_mesh(mesh_config().mesh)
  batch_sharding = sharding.batch_sharding(mesh, 4)
  assert sharding.host_rows(batch_sharding, 4) == slice(0, 4)
  batch = {"input_ids": np.arange(12, dtype=np.int32).reshape(4, 3)}
  global_batch = sharding.global_batch(batch, batch_sharding, 4)
  np.testing.assert_array_equal(global_batch["input_ids"], batch["input_ids"])
  assert global_batch["input_ids"].sharding == batch_sharding
  with pytest.raises(ValueError, match="neither the global batch"):
    sharding.global_batch({"input_ids": batch["input_ids"][:3]}, batch_sharding, 4)


def test_dry_run_compiles_reports_and_writes_nothing(tmp_path, caplog):
  config = load_config("tiny")
  config.train.dry_run = True
  config.train.batch_size = 4
  config.data.max_seq_length = 32
  config.model.num_layers = 1  # compiles faster
  with caplog.at_level("INFO"):
    cost = loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()
  assert cost["flops"] > 1e8 and cost["peak_bytes"] > cost["argument_bytes"] > 0
  # The state is donated: all of the input but the batch is overwritten by the new state.
  batch_bytes = 2 * 4 * 32 * np.dtype(np.int32).itemsize
  assert cost["alias_bytes"] == cost["argument_bytes"] - batch_bytes
  assert "FLOPs per step" in caplog.text and "GiB peak" in caplog.text


def test_cpu_devices_split_the_host_into_a_data_parallel_mesh():
  """--cpu_devices=2 gives the train CLI two CPU devices, each with half the batch."""
  result = subprocess.run(
      [sys.executable, "-m", "electra_jax.train", "--config=configs/tiny.py", "--cpu_devices=2",
       "--config.train.dry_run=True", "--config.train.batch_size=4",
       "--config.data.max_seq_length=32", "--config.model.num_layers=1"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "mesh of data 2 x fsdp 1 x tensor 1 (2 devices)" in result.stderr


# ---------------------------------------------------------------------------
# Eight simulated devices (a subprocess)
# ---------------------------------------------------------------------------


def fixed_batches(config, count: int) -> list[dict[str, np.ndarray]]:
  """Random token ids with [CLS], [SEP] and some padding: the same for every mesh."""
  rng = np.random.default_rng(0)
  shape = (config.train.batch_size, config.data.max_seq_length)
  batches = []
  for _ in range(count):
    ids = rng.integers(5, config.model.vocab_size, size=shape).astype(np.int32)
    lengths = rng.integers(shape[1] // 2, shape[1] + 1, size=shape[0])
    ids[np.arange(shape[1])[None, :] >= lengths[:, None]] = 0
    ids[:, 0], ids[np.arange(shape[0]), lengths - 1] = 2, 3
    batches.append({"input_ids": ids, "token_type_ids": np.zeros_like(ids)})
  return batches


def run_on_mesh(mesh_shape: tuple[int, ...]) -> dict:
  """20 steps of the tiny config on the first devices, and how its arrays are laid out."""
  config = mesh_config(*mesh_shape)
  config.train.batch_size, config.data.max_seq_length = BATCH_SIZE, 32
  mesh = sharding.create_mesh(config.mesh, jax.devices()[:int(np.prod(mesh_shape))])
  training = train_step_lib.compile_training(config, mesh)
  init = training.init_state.lower().compile()
  state = init()
  first = state
  losses = []
  for batch in fixed_batches(config, STEPS):
    batch = sharding.global_batch(batch, training.batch_sharding, config.train.batch_size)
    state, stats = training.train_step(state, batch)
    losses.append(float(stats["loss"]))
  spec = lambda x: [list(a) if isinstance(a, tuple) else a for a in x.sharding.spec]
  params = state.params
  return dict(
      losses=losses,
      donated=all(x.is_deleted() for x in jax.tree.leaves(first)),
      init_has_collectives=any(op in init.as_text() for op in ("all-gather", "all-reduce")),
      init_bytes_per_device=init.memory_analysis().output_size_in_bytes,
      state_bytes=sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state)),
      word_embeddings=spec(params["embeddings"]["word_embeddings"]["embedding"]),
      intermediate=spec(params["discriminator"]["layer_0"]["intermediate"]["kernel"]),
      query=spec(params["discriminator"]["layer_0"]["attention"]["query"]["kernel"]),
      batch=spec(batch["input_ids"]),
      batch_shard_rows=batch["input_ids"].addressable_shards[0].data.shape[0],
  )


@pytest.fixture(scope="module")
def eight_devices() -> dict[str, dict]:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO),
             # Faster compiles; every mesh, one device included, is compiled alike.
             XLA_FLAGS="--xla_force_host_platform_device_count=8 "
                       "--xla_backend_optimization_level=0")
  result = subprocess.run([sys.executable, __file__], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_mesh_gives_the_one_device_losses(eight_devices):
  expected = np.asarray(eight_devices["1x1x1"]["losses"])
  assert len(expected) == STEPS and np.all(np.isfinite(expected))
  assert expected[-1] < expected[0]  # it trains
  for mesh, run in eight_devices.items():
    np.testing.assert_allclose(run["losses"], expected, rtol=RELATIVE_TOLERANCE, atol=0,
                               err_msg=f"mesh {mesh}")


def test_parameters_follow_the_rules_and_are_created_in_their_shards(eight_devices):
  run = eight_devices["1x2x4"]
  assert run["word_embeddings"] == ["tensor", "fsdp"]  # (vocab, embed)
  assert run["intermediate"] == ["fsdp", "tensor"]  # (hidden, mlp)
  # 2 heads do not split over 4 tensor devices: that dimension stays whole.
  assert run["query"] == ["fsdp", None, None]
  assert eight_devices["2x2x2"]["query"] == ["fsdp", "tensor", None]
  for mesh, run in eight_devices.items():
    assert not run["init_has_collectives"], mesh  # each device draws only its own shards
  # With parameters split 8 ways, a device creates about an eighth of the state.
  run = eight_devices["2x2x2"]
  assert run["init_bytes_per_device"] < 0.3 * run["state_bytes"]
  assert eight_devices["8x1x1"]["init_bytes_per_device"] >= run["state_bytes"]


def test_batches_split_over_data_and_fsdp_and_state_is_donated(eight_devices):
  for mesh, run in eight_devices.items():
    data, fsdp, _ = map(int, mesh.split("x"))
    assert run["batch"] == [["data", "fsdp"]], mesh  # rows split, the rest whole
    assert run["batch_shard_rows"] == BATCH_SIZE // (data * fsdp), mesh
    assert run["donated"], mesh


if __name__ == "__main__":
  print(json.dumps({"x".join(map(str, shape)): run_on_mesh(shape) for shape in MESHES}))
