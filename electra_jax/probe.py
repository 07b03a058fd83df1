r"""Score a pre-trained encoder with frozen-encoder probes, beside random weights.

  python -m electra_jax.probe --model=/tmp/electra --glue_dir=../shared/data \
      --conll_dir=../shared/data/conll2003

--model is a pre-training workdir (with --step, one of its checkpoints), an
export of electra_jax or a Hugging Face ELECTRA folder. Each probe trains a
ridge head on the frozen encoder's features (electra_jax/probes/signals.py
lists them; --stsb_finetune adds a short STS-B fine-tune) and is printed
beside the same architecture with random weights, whose lexical features are a
strong baseline: a probe says something about pre-training only where the
model is above that column. Seconds per model for the tiny config on a CPU
(the fine-tune: tens of seconds).
"""

import json

import numpy as np
from absl import flags, logging

from electra_jax import cli
from electra_jax.convert import pretrained
from electra_jax.errors import UserError
from electra_jax.probes import features, signals
from electra_jax.runtime import fileio

_MODEL = flags.DEFINE_string(
    "model", None, "The encoder: a pre-training workdir, an export, or a Hugging Face folder.")
_STEP = flags.DEFINE_integer(
    "step", None, "Probe the workdir's checkpoint of this step instead of its final parameters.",
    lower_bound=1)
_GLUE_DIR = flags.DEFINE_string(
    "glue_dir", "", "GLUE root with SST-2/ (and STS-B/ for --stsb_finetune), each with "
    "train.tsv and dev.tsv; those probes are skipped without it.")
_CONLL_DIR = flags.DEFINE_string(
    "conll_dir", "", "Folder of CoNLL-2003's train and dev files; that probe is skipped "
    "without it.")
_MAX_EXAMPLES = flags.DEFINE_integer(
    "max_examples", 2000, "Training examples per probe head (the same sample for every model).",
    lower_bound=10)
_MAX_SEQ_LENGTH = flags.DEFINE_integer("max_seq_length", 64, "Tokens per sentence.",
                                       lower_bound=8)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the training examples drawn for the heads.")
_STSB_FINETUNE = flags.DEFINE_bool(
    "stsb_finetune", False, "Also fine-tune on STS-B with docs/results.md's short recipe (the "
    "signal where the frozen probes see nothing; tens of seconds per model for tiny).")
_RANDOM_SEEDS = flags.DEFINE_list(
    "random_seeds", ["0", "1", "2"], "Seeds of the random-weight baselines (their median and "
    "range are printed).")
_JSON = flags.DEFINE_string("json", None, "Also write the scores to this JSON file.")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}; see --help")
  if not _MODEL.value:
    raise UserError("--model is required; see --help")
  data = signals.load(_GLUE_DIR.value, _CONLL_DIR.value, _MAX_EXAMPLES.value,
                      _MAX_SEQ_LENGTH.value, _SEED.value, _STSB_FINETUNE.value)
  discriminator = pretrained.load_discriminator(_MODEL.value, _STEP.value)
  rows = signals.tokenize(data, discriminator.tokenizer)
  model = signals.run(discriminator, rows)
  if not model:
    raise UserError("no probe has its data: give --glue_dir (with SST-2/) or --conll_dir")
  random = [signals.run(features.random_discriminator(discriminator, int(seed)), rows)
            for seed in _RANDOM_SEEDS.value]
  lines = ["probe | model | random weights (median, min-max)", "---|---|---"]
  for name, score in model.items():
    baseline = [scores[name] for scores in random]
    lines.append(f"{name} | {score:.4f} | {np.median(baseline):.4f} "
                 f"({min(baseline):.4f}-{max(baseline):.4f})")
  print("\n".join(lines))
  if _JSON.value:
    fileio.atomic_write(_JSON.value, json.dumps(
        dict(model=_MODEL.value, step=_STEP.value, seed=_SEED.value, scores=model,
             random={seed: scores for seed, scores in zip(_RANDOM_SEEDS.value, random)}),
        indent=2))
    logging.info("Wrote %s", _JSON.value)


if __name__ == "__main__":
  cli.run(main)
