"""The package's shape: libraries define no command-line flags, and no module grows too large."""

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO

# The modules behind each command: importing one defines no flag of electra_jax's, so
# that scripts and experiments can call them with configs (each CLI is a thin module).
LIBRARIES = ("electra_jax.pretraining.loop", "electra_jax.finetune.trainer",
             "electra_jax.convert.run_export", "electra_jax.data.dataset",
             "electra_jax.data.shard_writer", "electra_jax.performance.timing",
             "electra_jax.performance.compile_report", "electra_jax.experiments.comparison",
             "electra_jax.experiments.electra_vs_mlm", "electra_jax.probes.curves")
MOST_LINES = 420  # "about 400"


def test_importing_a_library_defines_no_flag_of_ours():
  code = ("import importlib, json, sys; from absl import flags; "
          f"[importlib.import_module(m) for m in {list(LIBRARIES)!r}]; "
          "print(json.dumps({m: [f.name for f in fs] for m, fs in "
          "flags.FLAGS.flags_by_module_dict().items() if m.startswith('electra_jax')}))")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert json.loads(result.stdout.splitlines()[-1]) == {}


def test_no_module_is_over_about_400_lines():
  sizes = {str(path.relative_to(REPO)): len(path.read_text().splitlines())
           for path in Path(REPO, "electra_jax").rglob("*.py")}
  assert {path: n for path, n in sizes.items() if n > MOST_LINES} == {}


def test_the_models_and_the_objective_do_not_import_the_data_pipeline():
  """Special-token ids live in vocabulary.py: the models need not load grain and data/."""
  code = ("import sys; import electra_jax.models.electra, electra_jax.pretraining.objective; "
          "print(sorted(m for m in sys.modules if m.startswith(('electra_jax.data', 'grain'))))")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.splitlines()[-1] == "[]"
