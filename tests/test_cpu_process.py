"""The process settings of a CPU run (electra_jax/cpu/): applied to CPU runs only.

oneDNN's matmuls (onednn.py) and huge pages (huge_pages.py) are turned on by
the command-line tools when the run will use the CPU, never on a host with a
GPU or TPU, and not at all with ELECTRA_JAX_CPU_SETTINGS=off (process.py).
"""

import json
import os
import platform
import subprocess
import sys

import pytest

from conftest import REPO, TINY_SHAPE
from electra_jax.cpu import huge_pages, onednn, process

WITHOUT_TUNABLES = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
needs_restart = pytest.mark.skipif(
    huge_pages.environment_with_huge_pages(WITHOUT_TUNABLES) is None,
    reason="needs Linux, glibc >= 2.35 and transparent huge pages not set to 'never'")
x86_only = pytest.mark.skipif(not onednn.runs_on_x86(),
                              reason="oneDNN's matmuls are turned on for x86 CPUs only")


# ---------------------------------------------------------------------------
# When: CPU runs only, and a switch
# ---------------------------------------------------------------------------


def test_jax_platforms_decides_where_set_and_the_host_where_not():
  assert process.run_uses_cpu({"JAX_PLATFORMS": "cpu"}, has_accelerator=True)
  assert process.run_uses_cpu({"JAX_PLATFORMS": " cpu,tpu"}, has_accelerator=True)
  assert not process.run_uses_cpu({"JAX_PLATFORMS": "tpu,cpu"}, has_accelerator=False)
  assert not process.run_uses_cpu({"JAX_PLATFORMS": "cuda"}, has_accelerator=False)
  assert process.run_uses_cpu({}, has_accelerator=False)
  assert not process.run_uses_cpu({"JAX_PLATFORMS": ""}, has_accelerator=True)


def test_the_switch_turns_the_settings_off():
  for value in ("off", "0", "false", "OFF"):
    assert not process.wanted({process.SWITCH: value, "JAX_PLATFORMS": "cpu"}, False)
  assert process.wanted({process.SWITCH: "on"}, False)


def fake_pci_device(root, name, vendor, device_class):
  device = root / name
  device.mkdir(parents=True)
  (device / "vendor").write_text(vendor + "\n")
  (device / "class").write_text(device_class + "\n")


def test_a_tpu_or_gpu_on_the_pci_bus_is_an_accelerator(tmp_path):
  fake_pci_device(tmp_path, "0000:00:00.0", "0x8086", "0x060000")  # a host bridge
  fake_pci_device(tmp_path, "0000:00:03.0", "0x15b3", "0x020000")  # a network card
  fake_pci_device(tmp_path, "0000:00:04.0", "0x10de", "0x068000")  # an NVIDIA switch, no GPU
  no_driver = str(tmp_path / "no_nvidia0")
  assert not process.host_has_accelerator(str(tmp_path), no_driver)
  fake_pci_device(tmp_path, "0000:00:05.0", "0x10de", "0x030200")  # an NVIDIA 3D controller
  assert process.host_has_accelerator(str(tmp_path), no_driver)
  tpu_host = tmp_path / "tpu"
  fake_pci_device(tpu_host, "0000:00:05.0", "0x1ae0", "0x120000")  # a Google TPU
  assert process.host_has_accelerator(str(tpu_host), no_driver)
  # A container that shows NVIDIA's device node but no PCI bus.
  assert process.host_has_accelerator(str(tmp_path / "empty"), str(tmp_path / "0000:00:05.0"))


@pytest.mark.parametrize("environ, has_accelerator, applied, platforms", [
    ({}, False, True, "cpu"),  # a CPU-only host: no plugin is tried
    ({}, True, False, None),  # a GPU or TPU host
    ({"JAX_PLATFORMS": "cpu"}, True, True, "cpu"),  # told to use the CPU
    ({"JAX_PLATFORMS": "tpu,cpu"}, False, False, "tpu,cpu"),  # the user's choice is kept
    ({process.SWITCH: "off"}, False, False, "cpu"),  # switched off
])
def test_the_settings_are_applied_only_to_cpu_runs(monkeypatch, environ, has_accelerator,
                                                  applied, platforms):
  monkeypatch.setattr(os, "environ", dict(environ))
  monkeypatch.setattr(process, "host_has_accelerator", lambda: has_accelerator)
  restarts = []
  monkeypatch.setattr(huge_pages, "restart_with_huge_pages", lambda: restarts.append(1))
  monkeypatch.setattr(onednn, "runs_on_x86", lambda: True)
  process.apply_settings()
  assert bool(restarts) == applied
  assert (onednn.FLAG in os.environ.get("XLA_FLAGS", "")) == applied
  assert os.environ.get("JAX_PLATFORMS") == platforms


# ---------------------------------------------------------------------------
# oneDNN's matmuls
# ---------------------------------------------------------------------------


@x86_only
def test_the_onednn_flag_is_added_to_the_users_xla_flags():
  assert onednn.xla_flags_with_onednn({}) == "--xla_cpu_use_onednn=true"
  assert onednn.xla_flags_with_onednn(
      {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}) == (
          "--xla_force_host_platform_device_count=8 --xla_cpu_use_onednn=true")


def test_a_users_own_onednn_choice_is_kept():
  for flags in ("--xla_cpu_use_onednn=false", "--xla_dump_to=/tmp/d --xla_cpu_use_onednn=true"):
    assert onednn.xla_flags_with_onednn({"XLA_FLAGS": flags}) is None


def test_cpus_other_than_x86_keep_xlas_matmuls(monkeypatch):
  monkeypatch.setattr(platform, "machine", lambda: "aarch64")
  assert onednn.xla_flags_with_onednn({}) is None


# ---------------------------------------------------------------------------
# Huge pages
# ---------------------------------------------------------------------------


@needs_restart
def test_the_huge_page_tunable_is_added_to_what_the_user_set():
  assert huge_pages.environment_with_huge_pages({})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
  other = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "HOME": "/h"}
  assert huge_pages.environment_with_huge_pages(other) == {
      "GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1", "HOME": "/h"}


def test_a_users_own_huge_page_choice_is_kept():
  for value in ("glibc.malloc.hugetlb=0", "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"):
    assert huge_pages.environment_with_huge_pages({"GLIBC_TUNABLES": value}) is None


def run_benchmark(tmp_path, **environ):
  result = subprocess.run(
      [sys.executable, "-m", "electra_jax.benchmark", *TINY_SHAPE, "--steps=1", "--warmup=0",
       f"--json={tmp_path / 'out.json'}"],
      cwd=REPO, env=dict(WITHOUT_TUNABLES, **environ), capture_output=True, text=True,
      timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  return result.stdout, json.loads((tmp_path / "out.json").read_text())["environment"]


@needs_restart
def test_a_cpu_run_started_without_the_tunable_runs_with_it(tmp_path):
  """The benchmark records whether huge pages were on; started without, it restarted with them."""
  stdout, environment = run_benchmark(tmp_path, JAX_PLATFORMS="cpu")
  assert "huge pages on" in stdout and environment["huge_pages"]


@pytest.mark.slow  # ~20 s; the switch itself is tested above
def test_a_cpu_run_with_the_switch_off_keeps_the_process_as_it_is(tmp_path):
  stdout, environment = run_benchmark(tmp_path, JAX_PLATFORMS="cpu", **{process.SWITCH: "off"})
  assert "huge pages off" in stdout and not environment["huge_pages"]
  assert onednn.FLAG not in environment["xla_flags"]
