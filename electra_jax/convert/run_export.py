"""A finished run's model, written for Hugging Face transformers or for Flax fine-tuning.

A pre-training run exports its discriminator and generator; a fine-tuning run
its best epoch's model with the task's head (hf_finetuned.py).
"""

import os

from absl import logging

from electra_jax.convert import flax_format, hf, hf_finetuned, hf_params
from electra_jax.errors import UserError
from electra_jax.finetune import saved_run
from electra_jax.runtime import workdir as workdir_files
from electra_jax.runtime.fileio import staged_directory

FORMATS = ("hf", "flax")


def export_run(workdir: str, format_: str, out: str, step: int | None = None) -> None:
  """Writes the run in `workdir` to the new directory `out`, complete or not at all.

  'hf': out/discriminator and out/generator, Hugging Face ELECTRA folders.
  'flax': out/config.json, out/params.msgpack (the discriminator only), the tokenizer.
  The parameters are the run's final ones, or with `step` its checkpoint's of that step.
  A fine-tuning run's workdir exports as one 'hf' folder (export_finetuned).
  """
  if saved_run.is_finetuning_run(workdir):
    export_finetuned(workdir, format_, out, step)
    return
  networks = list(hf_params.NETWORKS) if format_ == "hf" else ["discriminator"]
  if format_ == "hf" and flax_format.read_config(
      os.path.join(workdir, workdir_files.CONFIG_FILE)).objective == "mlm":
    raise UserError(f"{workdir} is an MLM run, which has no ELECTRA discriminator and generator "
                    "for Hugging Face; export its encoder with --format=flax")
  saved = flax_format.read(workdir, networks, step)
  with staged_directory(out) as staging:
    if format_ == "hf":
      for network in networks:
        hf.write_network(os.path.join(staging, network), saved.config, saved.params, network,
                         saved.tokenizer)
    else:
      flax_format.write(staging, saved)
  source = f"the checkpoint of step {step}" if step else "the final parameters"
  wrote = (", ".join(f"{os.path.join(out, network)} ({hf.ARCHITECTURES[network]})"
                     for network in networks) if format_ == "hf" else
           f"{out} (config.json, params.msgpack, the tokenizer; for electra_jax.finetune)")
  logging.info("Exported %s of %s: wrote %s", source, workdir, wrote)


def export_finetuned(workdir: str, format_: str, out: str, step: int | None = None) -> None:
  """The best epoch of the fine-tuning run in `workdir` as the transformers folder `out`."""
  if format_ != "hf":
    raise UserError(f"{workdir} is a fine-tuning run, which exports with --format=hf only "
                    "(electra_jax.predict reads the workdir itself)")
  if step is not None:
    raise UserError(f"{workdir} is a fine-tuning run, which exports its best epoch; leave out "
                    "--step")
  run = saved_run.read(workdir)
  with staged_directory(out) as staging:
    hf_finetuned.write(staging, run)
  logging.info("Exported the best epoch of the %s run %s: wrote %s (%s)", run.config.task,
               workdir, out, hf_finetuned.ARCHITECTURES[run.task.kind])
