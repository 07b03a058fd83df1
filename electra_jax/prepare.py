r"""Prepare a corpus for pre-training: train the tokenizer and write packed examples to shards.

  python -m electra_jax.prepare --config=configs/base.py --workdir=runs/base \
      --config.data.source='/data/wiki/*/wiki_*'

does what the first `python -m electra_jax.train` with the same flags does
before its first step, so a big corpus can be prepared ahead, on another
machine, or once for several runs (`--config.data.dir`). It uses every core
(`--config.data.num_workers`); if interrupted, run it again and it continues
where it stopped. It ends with a report of the counts and of every skipped file,
line or document. Sources (`--config.data.source`): paths or globs of plain
text (one sentence or paragraph per line, blank line between documents),
JSON lines (`--config.data.text_field`), WikiExtractor output, `.gz` of any of
these; `tfds:NAME` for a TensorFlow Datasets corpus; empty for the built-in one.
"""

from absl import flags, logging
from ml_collections import config_flags

from electra_jax import cli
from electra_jax.data import dataset
from electra_jax.errors import UserError
from electra_jax.runtime.fileio import prepare_workdir

_CONFIG = config_flags.DEFINE_config_file(
    "config", None,
    "The config the training run will use (a file, or tiny, small, base or "
    "large): its data section and model.vocab_size decide the preparation. Override fields "
    "with --config.<section>.<field>=<value>.")
_WORKDIR = flags.DEFINE_string(
    "workdir", None,
    "The training run's directory: receives tokenizer.model and, unless --config.data.dir is "
    "set, the prepared data in data/. Created if missing.")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}; see --help")
  config = cli.resolved_config(_CONFIG)
  if not _WORKDIR.value:
    raise UserError("--workdir is required: the directory of the run that will use the data")
  data = dataset.prepare(config, prepare_workdir(_WORKDIR.value))
  splits = data.manifest["splits"]
  logging.info("Ready in %s: %s training and %s eval examples of %d tokens", data.directory,
               f"{splits['train']['examples']:,}", f"{splits['eval']['examples']:,}",
               data.max_seq_length)


if __name__ == "__main__":
  cli.run(main)
