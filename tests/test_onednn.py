"""The command-line tools turn on XLA's oneDNN matmuls on x86 CPUs (onednn.py)."""

import platform

import pytest

from electra_jax import onednn

x86_only = pytest.mark.skipif(not onednn.runs_on_x86(),
                              reason="oneDNN's matmuls are turned on for x86 CPUs only")


@x86_only
def test_the_flag_is_added_to_the_users_xla_flags():
  assert onednn.xla_flags_with_onednn({}) == "--xla_cpu_use_onednn=true"
  assert onednn.xla_flags_with_onednn(
      {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}) == (
          "--xla_force_host_platform_device_count=8 --xla_cpu_use_onednn=true")


def test_a_users_own_choice_is_kept():
  for flags in ("--xla_cpu_use_onednn=false", "--xla_dump_to=/tmp/d --xla_cpu_use_onednn=true"):
    assert onednn.xla_flags_with_onednn({"XLA_FLAGS": flags}) is None


def test_other_cpus_are_left_alone(monkeypatch):
  monkeypatch.setattr(platform, "machine", lambda: "aarch64")
  assert onednn.xla_flags_with_onednn({}) is None
