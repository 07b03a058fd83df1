r"""Export a pre-trained or fine-tuned ELECTRA for Hugging Face transformers or Flax fine-tuning.

  python -m electra_jax.export --workdir=/tmp/electra --format=hf --out=/tmp/electra-hf
  python -m electra_jax.export --workdir=/tmp/ft-sst2 --out=/tmp/sst2-hf

reads a finished run (config.json, params.msgpack and the tokenizer in
--workdir) and writes
  --format=hf    OUT/discriminator and OUT/generator: folders that transformers loads
                 with ElectraForPreTraining / ElectraForMaskedLM / ElectraModel /
                 AutoTokenizer.from_pretrained (config.json, model.safetensors and the
                 tokenizer files); needs safetensors, tokenizers and protobuf (the `hf`
                 extra), not torch
  --format=flax  OUT/config.json, OUT/params.msgpack (the discriminator only) and the
                 tokenizer: what electra_jax's fine-tuning loads
OUT must be new or empty; it appears complete or not at all. --step=N exports
the parameters of the run's checkpoint of step N instead of its final ones
(keep such checkpoints with --config.checkpoint.keep_every when training).
An MLM run (--config.objective=mlm) exports with --format=flax only.

A fine-tuning workdir (electra_jax.finetune's) exports its best epoch, with the
task's head, as one transformers folder OUT: ElectraForSequenceClassification
(GLUE; STS-B as a regression that returns the 0-5 score), ElectraForTokenClassification
(CoNLL, with the tag names) or ElectraForQuestionAnswering (SQuAD).
"""

from absl import flags

from electra_jax import cli
from electra_jax.convert.run_export import export_run, FORMATS
from electra_jax.errors import UserError

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "The run to export: the --workdir of electra_jax.train (config.json, "
    "params.msgpack, the tokenizer) or of electra_jax.finetune (its best epoch).")
_FORMAT = flags.DEFINE_enum(
    "format", "hf", list(FORMATS),
    "hf: Hugging Face transformers folders OUT/discriminator and OUT/generator. "
    "flax: the discriminator's parameters, config and tokenizer for electra_jax fine-tuning.")
_OUT = flags.DEFINE_string("out", None, "The directory to create (it must be new or empty).")
_STEP = flags.DEFINE_integer(
    "step", None, "Export the checkpoint of this step (in WORKDIR/checkpoints) instead of the "
    "final parameters (params.msgpack).", lower_bound=1)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}; see --help")
  for flag in (_WORKDIR, _OUT):
    if not flag.value:
      raise UserError(f"--{flag.name} is required; see --help")
  export_run(_WORKDIR.value, _FORMAT.value, _OUT.value, _STEP.value)


if __name__ == "__main__":
  cli.run(main)
