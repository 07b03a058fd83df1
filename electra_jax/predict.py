r"""Predict a test set with a fine-tuned ELECTRA, in the files GLUE, CoNLL and SQuAD score.

  python -m electra_jax.predict --workdir=/tmp/ft-sst2
  python -m electra_jax.predict --workdir=/tmp/sst2-hf --input=/data/glue --out=/tmp/sst2-test

--workdir is a fine-tuning run's workdir (electra_jax.finetune's; its best
epoch predicts) or the transformers folder that electra_jax.export made of one.
It writes into --out (default: WORKDIR/predictions):
  GLUE   <Task>.tsv from <data_dir>/<Task>/test.tsv: `index<TAB>prediction` with GLUE's
         label names (STS-B: the score in [0, 5]); MNLI writes MNLI-m.tsv and MNLI-mm.tsv,
         and AX.tsv where <data_dir>/diagnostic/diagnostic.tsv exists. Zip them for GLUE's
         server.
  CoNLL  <file>.tagged.txt from test.txt (or eng.testb): `word gold predicted` per line,
         as conlleval reads it (`word predicted` for a file of words alone); the entity
         scores are printed when the file has gold tags.
  SQuAD  predictions.json ({question id: answer}) and, for 2.0, null_odds.json (the
         no-answer score minus the best span's, for the official script's
         --na-prob-file), from the dev file in SQuAD's layout; scored when it has answers.
--input replaces the run's data: a GLUE root, or a CoNLL or SQuAD file. A
transformers folder knows no data directory, so it needs --input.
"""

import os

from absl import flags, logging

from electra_jax import cli
from electra_jax.convert import hf_finetuned
from electra_jax.errors import UserError
from electra_jax.finetune import predict, saved_run

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "The fine-tuned model: a fine-tuning run's --workdir, or the transformers "
    "folder that electra_jax.export wrote from one.")
_INPUT = flags.DEFINE_string(
    "input", None, "The data to predict, instead of the run's data_dir: a GLUE root (with "
    "<Task>/test.tsv), a CoNLL file or a SQuAD JSON file.")
_OUT = flags.DEFINE_string("out", None, "Directory for the prediction files. Default: "
                           "WORKDIR/predictions.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Rows per forward pass.", lower_bound=1)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}; see --help")
  if not _WORKDIR.value:
    raise UserError("--workdir is required; see --help")
  if saved_run.is_finetuning_run(_WORKDIR.value):
    run = saved_run.read(_WORKDIR.value)
  else:
    run = hf_finetuned.read(_WORKDIR.value)
    if not _INPUT.value:
      raise UserError(f"{_WORKDIR.value} is a transformers folder, which knows no data "
                      "directory; give the data to predict with --input")
  out = _OUT.value or os.path.join(_WORKDIR.value, "predictions")
  written = predict.write_predictions(run, out, _INPUT.value, _BATCH_SIZE.value)
  logging.info("Predicted %s with %s: wrote %s", run.config.task, _WORKDIR.value,
               ", ".join(written))


if __name__ == "__main__":
  cli.run(main)
