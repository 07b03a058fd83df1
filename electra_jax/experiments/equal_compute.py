r"""ELECTRA against masked language modelling at equal pre-training compute, end to end.

  python -m electra_jax.experiments.equal_compute --budget_minutes=20 --out=runs/equal_compute

pre-trains an ELECTRA model (--config, default configs/tiny.py with the generator
sampling at temperature 1) and an MLM model (the same config with
objective=mlm: the same encoder, BERT's 80/10/10 masking) for the same model
FLOPs (electra_jax.performance.flops), keeps the parameters of both at --fractions of the
budget, fine-tunes each of those, and the encoder with random weights, on
--tasks with --seeds (electra_jax/experiments/comparison.py), and writes

  OUT/results.json      every setting, the FLOPs and steps of each point, every score
  OUT/results.md        per task, model and FLOPs point: the median and min - max over seeds
  OUT/score_vs_flops.png  score against pre-training FLOPs per task (needs matplotlib:
                        pip install 'electra_jax[experiments]')

The budget is --budget_flops, or --budget_minutes of ELECTRA pre-training on
this machine: ELECTRA's step is timed here first and the minutes converted to
FLOPs (both recorded). Each objective's steps are the budget over its model
FLOPs per step, rounded so that every fraction falls on a checkpoint.

Everything goes under OUT: data/ (the corpus prepared once, for both),
pretrain/{electra,mlm} (training workdirs), models/<objective>-<fraction>
(exported encoders), finetune/ (the fine-tuning runs). Run the same command again
after a stop and it continues: training resumes from its checkpoints, finished
parts are skipped.
"""

import os

import jax
from absl import flags, logging
from ml_collections import config_flags

from electra_jax import cli
from electra_jax.errors import UserError
from electra_jax.experiments import comparison, electra_vs_mlm, grid_flags

_TEMPERATURE = flags.DEFINE_float(
    "electra_temperature", 1.0,
    "The generator's sampling temperature (config electra.temperature) for ELECTRA: the paper's "
    "1 by default, where configs/tiny.py has 2 for its quick demo.")
_BUDGET_FLOPS = flags.DEFINE_float(
    "budget_flops", None,
    "Pre-training budget of each model in model FLOPs (electra_jax.performance.flops).")
_BUDGET_MINUTES = flags.DEFINE_float(
    "budget_minutes", None,
    "Pre-training budget as minutes of ELECTRA training on this machine, measured now and "
    "converted to FLOPs; give this or --budget_flops.")
_FRACTIONS = flags.DEFINE_list(
    "fractions", "0.25,0.5,1", "Fractions of the budget at which both models are fine-tuned.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/tiny.py",
    "The pre-training config of both models (each gets its own objective), relative to the "
    "working directory. Override any field with --config.<section>.<field>=<value>; "
    "--config.data.source is the corpus.")
_GRID = grid_flags.define(
    out_help="The directory of everything this experiment writes.",
    glue_dir="../shared/data", conll_dir="../shared/data/conll2003",
    set_help=" The experiment applies, before these: --set=" +
             " --set=".join(electra_vs_mlm.FINETUNE_DEFAULTS) + ".")
flags.adopt_module_key_flags(grid_flags)  # --tasks and the rest, in --help


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}; see --help")
  out = _GRID.out.value
  if not out:
    raise UserError("--out is required: the directory this experiment writes to")
  if (_BUDGET_FLOPS.value is None) == (_BUDGET_MINUTES.value is None):
    raise UserError("give exactly one of --budget_flops and --budget_minutes")
  try:
    budget_fractions = sorted({float(f) for f in _FRACTIONS.value})
  except ValueError:
    raise UserError("--fractions must be numbers") from None
  if not budget_fractions or not all(0 < f <= 1 for f in budget_fractions):
    raise UserError(f"--fractions={','.join(_FRACTIONS.value)} must be numbers in (0, 1]")
  base = cli.resolved_config(_CONFIG)
  os.makedirs(out, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", os.path.join(out, "compilation_cache"))
  measured = None
  budget_flops = _BUDGET_FLOPS.value
  if budget_flops is None:
    electra_config = electra_vs_mlm.objective_config(base, "electra", _TEMPERATURE.value)
    per_second = electra_vs_mlm.measure_flops_per_second(electra_config)
    budget_flops = _BUDGET_MINUTES.value * 60 * per_second
    measured = dict(budget_minutes=_BUDGET_MINUTES.value, electra_flops_per_second=per_second)
    logging.info("ELECTRA trains at %.4g model FLOPs/s here: %g minutes are %.4g FLOPs",
                 per_second, _BUDGET_MINUTES.value, budget_flops)
  tasks = _GRID.tasks.value
  defaults = [o for o in electra_vs_mlm.FINETUNE_DEFAULTS
              if comparison.scoped(o)[0] in (None, *tasks)]
  electra_vs_mlm.run(base, budget_flops, budget_fractions, tasks, _GRID.seed_values(),
                     _GRID.data_dirs(), [*defaults, *_GRID.overrides.value], out,
                     _TEMPERATURE.value, measured)


if __name__ == "__main__":
  cli.run(main)
