"""The command-line tools restart once with glibc advising huge pages (huge_pages.py)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from electra_jax import huge_pages
from test_benchmark import TINY_SHAPE

WITHOUT_TUNABLES = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
needs_restart = pytest.mark.skipif(
    huge_pages.environment_with_huge_pages(WITHOUT_TUNABLES) is None,
    reason="needs Linux, glibc >= 2.35 and transparent huge pages not set to 'never'")


@needs_restart
def test_the_tunable_is_added_to_what_the_user_set():
  assert huge_pages.environment_with_huge_pages({})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
  other = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "HOME": "/h"}
  assert huge_pages.environment_with_huge_pages(other) == {
      "GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1", "HOME": "/h"}


def test_a_users_own_choice_is_kept():
  for value in ("glibc.malloc.hugetlb=0", "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"):
    assert huge_pages.environment_with_huge_pages({"GLIBC_TUNABLES": value}) is None


@needs_restart
def test_a_cli_started_without_the_tunable_runs_with_it(tmp_path):
  """The benchmark records whether huge pages were on; started without, it restarted with them."""
  result = subprocess.run(
      [sys.executable, "-m", "electra_jax.benchmark", *TINY_SHAPE, "--steps=1", "--warmup=0",
       f"--json={tmp_path / 'out.json'}"],
      cwd=REPO, env=WITHOUT_TUNABLES, capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "huge pages on" in result.stdout
  assert json.loads((tmp_path / "out.json").read_text())["environment"]["huge_pages"]
