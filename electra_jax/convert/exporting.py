"""A finished run's model, written for Hugging Face transformers or for Flax fine-tuning."""

import os

from electra_jax.convert import flax_format, hf, hf_params
from electra_jax.fileio import staged_directory

FORMATS = ("hf", "flax")


def export_run(workdir: str, format_: str, out: str) -> None:
  """Writes the run in `workdir` to the new directory `out`, complete or not at all.

  'hf': out/discriminator and out/generator, Hugging Face ELECTRA folders.
  'flax': out/config.json, out/params.msgpack (the discriminator only), the tokenizer.
  """
  networks = list(hf_params.NETWORKS) if format_ == "hf" else ["discriminator"]
  saved = flax_format.read(workdir, networks)
  with staged_directory(out) as staging:
    if format_ == "hf":
      for network in networks:
        hf.write_network(os.path.join(staging, network), saved.config, saved.params, network,
                         saved.tokenizer)
    else:
      flax_format.write(staging, saved)
