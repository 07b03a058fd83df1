r"""Fine-tune pre-trained models, and a random-weight control, on several tasks and seeds.

  python -m electra_jax.experiments.downstream --init=runs/electra,runs/mlm,random \
      --tasks=sst2,stsb,conll --seeds=0,1,2 --glue_dir=../shared/data \
      --conll_dir=../shared/data/conll2003 --out=runs/downstream

Each (task, init, seed) is one fine-tuning run with the task's recipe
(electra_jax.finetune), in its own workdir OUT/<task>/<init>/seed<k>. `random`
is the architecture and tokenizer of the first other init with freshly
initialized weights (`random:DIR` names the model to copy). `--set` changes
the fine-tuning config of every run (`--set=train.epochs=2`) or of one task's
(`--set=sst2:train.max_examples=20000`). `--learning_rates=3e-4,1e-3` makes
every run at each rate and reports each task and model at the rate with the
best median dev score (OUT/<task>/<init>/lr<rate>/seed<k>).

OUT/results.json holds every run's metrics; OUT/results.md a table of each
task's score (the metric the ELECTRA paper reports for it) per init: the
median and the range over the seeds. A run whose results.json exists is read
back, not repeated, so an interrupted sweep continues where it stopped.
"""

import os

import jax
from absl import flags

from electra_jax import cli
from electra_jax.errors import UserError
from electra_jax.experiments import comparison, grid_flags

_INIT = flags.DEFINE_list(
    "init", None, "The models to fine-tune, comma-separated: pre-training workdirs, exports or "
    "Hugging Face folders, and 'random' (the first model's architecture with random weights) "
    "or 'random:DIR'.")
_LEARNING_RATES = flags.DEFINE_list(
    "learning_rates", [], "Fine-tuning learning rates to choose from, comma-separated (e.g. "
    "3e-4,1e-3): every run is made at each, and each task and model is reported at the one "
    "with the best median dev score over the seeds. Empty: each task's recipe.")
_GRID = grid_flags.define(out_help="The directory for the runs and the results table.")
flags.adopt_module_key_flags(grid_flags)  # --tasks and the rest, in --help


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}; see --help")
  if not _INIT.value or not _GRID.out.value:
    raise UserError("--init and --out are required; see --help")
  try:
    learning_rates = [float(rate) for rate in _LEARNING_RATES.value]
  except ValueError:
    raise UserError(f"--learning_rates={','.join(_LEARNING_RATES.value)} must be numbers") from None
  out = _GRID.out.value
  os.makedirs(out, exist_ok=True)
  # The runs of a task compile the same steps: XLA's cache on disk compiles them once.
  jax.config.update("jax_compilation_cache_dir", os.path.join(out, "compilation_cache"))
  summary = comparison.run_all(comparison.parse_inits(_INIT.value), _GRID.tasks.value,
                               _GRID.seed_values(), _GRID.data_dirs(), _GRID.overrides.value, out,
                               learning_rates)
  print(comparison.markdown(summary))


if __name__ == "__main__":
  cli.run(main)
