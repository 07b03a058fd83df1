"""The step compiled for a TPU slice on this CPU host (libtpu), and the compile CLI's report.

The compile tests need libtpu (`pip install -e ".[tpu]"`; CI installs it) and
skip without it; the topology names, the HLO reading and the batch search are
tested without.
"""

import dataclasses
import importlib.util
import json
import subprocess
import sys

import jax
import pytest

from conftest import REPO, load_config
from electra_jax.cpu import SCOPE
from electra_jax.errors import UserError
from electra_jax.models import electra
from electra_jax.performance import compile_report, program_cost, reference_model, tpu
from electra_jax.pretraining import train_step as train_step_lib
from electra_jax.runtime import sharding

needs_libtpu = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                  reason='needs libtpu: pip install -e ".[tpu]"')


def tiny_on_eight_chips():
  config = load_config("tiny")
  config.train.batch_size = 64  # 8 sequences per chip of a v5e-8
  return config


@pytest.fixture(scope="module")
def tpu_step_hlo():
  topology = tpu.parse_topology("v5e:2x4")
  mesh = compile_report.topology_mesh(tiny_on_eight_chips(), topology)
  return train_step_lib.compile_training(tiny_on_eight_chips(), mesh).train_step.as_text()


@needs_libtpu
def test_the_step_compiled_for_a_tpu_has_no_cpu_form(tpu_step_hlo):
  assert "TPU" in tpu_step_hlo or "tpu" in tpu_step_hlo.lower()
  assert SCOPE not in tpu_step_hlo
  # The data-parallel gradient is summed over the chips.
  assert "all-reduce" in program_cost.collectives(tpu_step_hlo)


def test_the_step_compiled_for_a_cpu_has_the_cpu_forms():
  """The check above can fail: the marker survives into a compiled program's text."""
  config = load_config("tiny")
  config.model.num_layers, config.train.batch_size = 1, 4
  mesh = sharding.create_mesh(config.mesh)
  assert SCOPE in train_step_lib.compile_training(config, mesh).train_step.as_text()


@needs_libtpu
def test_the_compile_cli_reports_what_the_step_costs_a_chip(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "electra_jax.compile", "--config=configs/tiny.py",
       "--config.train.batch_size=64", "--topology=v5e-8", f"--json={tmp_path / 'r.json'}"],
      cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.splitlines()
  assert lines[-1].startswith("fits: ")
  for label in ("train step memory", "eval step memory", "train FLOPs", "train bytes",
                "roofline bound", "collectives", "compile time"):
    assert any(line.startswith(label) for line in lines), label
  assert "libtpu" not in result.stderr.lower()  # no warnings from libtpu about this host
  report = json.loads((tmp_path / "r.json").read_text())
  assert report["chips"] == 8 and report["mesh"] == {"data": 8, "fsdp": 1, "tensor": 1}
  assert report["fits"] and 0 < report["train"]["memory"]["total"] < 16 * 2**30
  # XLA's FLOPs per chip: the model FLOPs per chip plus elementwise work and the optimizer.
  assert 1 <= report["train"]["flops"] / report["model_flops_per_chip"] < 1.5
  assert 0 < report["mfu_bound"] <= 1
  assert report["train"]["collectives"]["all-reduce"]["bytes"] > 0


@pytest.mark.slow  # ~40 s; the verdict's arithmetic is tested below without compiling
@needs_libtpu
def test_a_step_that_does_not_fit_exits_1(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "electra_jax.compile", "--config=configs/tiny.py",
       "--config.train.batch_size=65536", "--topology=v5e-8"],
      cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 1, result.stderr[-3000:]
  assert result.stdout.splitlines()[-1].startswith("does not fit: ")


def test_without_libtpu_one_line_says_what_to_install(monkeypatch):
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
  with pytest.raises(UserError, match=r'pip install -e "\.\[tpu\]"'):
    tpu.topology_devices(tpu.parse_topology("v5e:2x4"))


@pytest.mark.parametrize("name, expected, chips, accelerator_type", [
    ("v5e:2x4", "v5e:2x4", 8, "v5litepod-8"),
    ("v5e-8", "v5e:2x4", 8, "v5litepod-8"),
    ("v5litepod-16", "v5e:4x4", 16, "v5litepod-16"),
    ("v4-8", "v4:2x2x1", 4, "v4-8"),
    ("v5p-8", "v5p:2x2x1", 4, "v5p-8"),
    ("v4:2x2x2", "v4:2x2x2", 8, "v4-16"),
    ("v6e-8", "v6e:2x4", 8, "v6e-8"),
])
def test_topology_names(name, expected, chips, accelerator_type):
  topology = tpu.parse_topology(name)
  assert (topology.name, topology.num_chips, topology.accelerator_type) == (
      expected, chips, accelerator_type)


@pytest.mark.parametrize("name, message", [
    ("v9x:2x2", "unknown TPU generation"), ("v5e", "is not a TPU topology"),
    ("v4-6", "counts TensorCores"), ("v4:2x2", "3 dimensions"), ("v5e:2x2x2", "2 dimensions"),
])
def test_bad_topology_names_say_what_to_give(name, message):
  with pytest.raises(UserError, match=message):
    tpu.parse_topology(name)


def test_collectives_are_read_from_the_hlo_once_per_operation():
  hlo = """
  %all-reduce.1 = (f32[256]{0}, bf16[4,8]{1,0}) all-reduce(f32[256]{0} %a, bf16[4,8]{1,0} %b), to_apply=%add
  %all-gather-start = (f32[8]{0}, f32[64]{0}) all-gather-start(f32[8]{0} %c), dimensions={0}
  %all-gather-done = f32[64]{0:T(256)} all-gather-done((f32[8]{0}, f32[64]{0}) %all-gather-start)
  ROOT %reduce-scatter = s32[2,3]{1,0} reduce-scatter(s32[4,3]{1,0} %d), dimensions={0}
  %fusion = f32[256]{0} fusion(f32[256]{0} %all-reduce.1), kind=kLoop, calls=%fused
  """
  found = program_cost.collectives(hlo)
  assert found == {"all-reduce": program_cost.Collective(1, 256 * 4 + 32 * 2),
                   "all-gather": program_cost.Collective(1, 64 * 4),
                   "reduce-scatter": program_cost.Collective(1, 6 * 4)}


def fake_report(total_bytes: int, batch_per_chip: int = 8,
                temporaries: int = 0) -> compile_report.Report:
  memory = program_cost.Memory(arguments=total_bytes - temporaries, outputs=0, aliased=0,
                               temporaries=temporaries, generated_code=0)
  step = compile_report.CompiledStep(1.0, memory, 4e12, 1e11, {})
  return compile_report.Report(
      topology=tpu.parse_topology("v5e-8"), num_slices=1,
      mesh={"data": 8, "fsdp": 1, "tensor": 1}, batch_size=8 * batch_per_chip, length=128,
      dtype="bfloat16", model_flops=8 * 3e12, train=step, eval=step, state_bytes=total_bytes)


def test_a_step_the_compiler_refuses_does_not_fit_and_says_what_it_needs():
  error = jax.errors.JaxRuntimeError(
      "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
      "temporaries (41.95G) exceeds available HBM (15.75G).")
  refused = compile_report._refused(error, 3.0)  # pylint: disable=protected-access
  assert refused.needed_bytes == pytest.approx(41.95 * 2**30)
  assert "41.95 GiB" in refused.refusal and "15.75 GiB" in refused.refusal
  assert compile_report._refused(jax.errors.JaxRuntimeError("INTERNAL: other"), 1.0) is None
  report = dataclasses.replace(fake_report(1), train=refused)
  assert not report.fits
  lines = compile_report.describe(report)
  assert lines[-1].startswith("does not fit: 41.95 GiB")
  assert any("does not fit: XLA's compiler" in line for line in lines)
  assert compile_report.to_json(report)["train"]["memory"] is None


def test_the_largest_batch_is_estimated_from_the_temporaries_per_sequence():
  # 2 GiB of state and code, 1 GiB of temporaries for 8 sequences: 14 GiB hold 112.
  assert fake_report(3 * 2**30, temporaries=2**30).estimated_largest_batch == 112
  # Refused at 8 sequences with 41.95 GiB of temporaries, beside 2 GiB of state.
  refused = compile_report.CompiledStep(1.0, None, refusal="x", needed_bytes=41.95 * 2**30)
  report = dataclasses.replace(fake_report(2 * 2**30), train=refused)
  assert report.estimated_largest_batch == int(14 / (41.95 / 8))
  assert fake_report(2**30).estimated_largest_batch is None  # no temporaries to go by


def test_the_verdict_and_the_roofline_bound():
  assert fake_report(15 * 2**30).fits and not fake_report(17 * 2**30).fits
  report = fake_report(1)
  # 1e11 bytes at 819 GB/s (0.122 s) bound the step more than 4e12 FLOPs at 197 TFLOP/s.
  assert report.roofline_seconds == pytest.approx(1e11 / 819e9)
  assert report.mfu_bound == pytest.approx(3e12 / 197e12 / (1e11 / 819e9))


@pytest.mark.parametrize("start, fixed, per_sequence", [
    (1, 2, 0.117), (8, 2, 0.117), (40, 2, 0.117), (300, 2, 0.117),  # 118 fit
    (16, 0.05, 0.004),  # the tiny config: thousands fit
])
def test_the_largest_batch_is_compiled_and_the_next_one_is_too_large(monkeypatch, start, fixed,
                                                                      per_sequence):
  """Memory = fixed + per_sequence x batch (GiB), and a little more: not quite linear."""
  used = lambda b: int((fixed + per_sequence * b + 1e-5 * b * b * per_sequence) * 2**30)
  largest = max(b for b in range(1, 10_000) if used(b) <= 16 * 2**30)
  compiled = []

  def fake_compile(config, mesh, reference):
    """A compile; XLA refuses a step too large, naming its temporaries only."""
    per_chip = config.train.batch_size // 8
    compiled.append(per_chip)
    if used(per_chip) > 16 * 2**30:
      return compile_report.CompiledStep(1.0, None, refusal="too large",
                                         needed_bytes=used(per_chip) - 2 * 2**30), None
    return fake_report(used(per_chip)).train, None

  monkeypatch.setattr(compile_report, "topology_mesh", lambda *args: None)
  monkeypatch.setattr(compile_report, "compile_train_step", fake_compile)
  search = compile_report.largest_batch_per_chip(
      load_config("tiny"), fake_report(used(start), batch_per_chip=start))
  assert search.fits <= largest < search.too_large  # never wrong, whether exact or not
  assert search.fits in compiled + [start] and search.too_large in compiled + [start]
  if fixed == 2:  # nearly linear: found exactly, in a few compiles
    assert (search.fits, search.too_large) == (largest, largest + 1) and search.compiles <= 6
  else:  # thousands: within 2%
    assert search.too_large - search.fits <= 0.02 * largest


@pytest.mark.parametrize("name", ["tiny", "base"])
def test_the_reference_model_has_our_parameter_count(name):
  config = load_config(name)
  count = lambda model: sum(x.size for x in jax.tree.leaves(jax.eval_shape(
      lambda: electra.init_params(model, jax.random.PRNGKey(0), 16, 3))))
  assert count(reference_model.build(config)) == count(electra.build_pretrainer(config))


def test_no_batch_is_found_where_one_sequence_does_not_fit(monkeypatch):
  refused = compile_report.CompiledStep(1.0, None, refusal="too large", needed_bytes=20 * 2**30)
  monkeypatch.setattr(compile_report, "topology_mesh", lambda *args: None)
  monkeypatch.setattr(compile_report, "compile_train_step", lambda *args: (refused, None))
  report = dataclasses.replace(fake_report(1, batch_per_chip=8), train=refused)
  assert compile_report.largest_batch_per_chip(
      load_config("tiny"), report) == compile_report.BatchSearch(None, 1, 3)
