r"""Pre-train an ELECTRA generator and discriminator (or, --config.objective=mlm, a BERT-style MLM).

  python -m electra_jax.train --config=configs/tiny.py --workdir=/tmp/electra

trains the tiny config on the built-in corpus (Python's own documentation) in
a few minutes on a CPU. Any config field can be overridden, for example
  --config.train.steps=2000 --config.train.batch_size=64
  --config.data.source='/data/books/*.txt' --config.data.max_seq_length=256
The first run prepares the corpus (tokenizer, packed examples in shards under
<workdir>/data, or --config.data.dir) and later runs reuse it. The workdir
receives the resolved config (config.json), metrics (metrics.jsonl and
TensorBoard files under tensorboard/), the tokenizer (tokenizer.model),
checkpoints (checkpoints/, every --config.checkpoint.every_steps steps) and the
final parameters (params.msgpack).

A run stopped at any moment continues where its newest checkpoint left it, as
if it had never stopped, when the same command is run again; on SIGTERM (what
TPU VMs and SLURM send before preempting) or Ctrl-C it saves at the next step
and exits (a second Ctrl-C exits at once).

The same command runs on any number of devices and hosts: the device mesh is
`--config.mesh.*`, and on Cloud TPU VMs and under SLURM the processes find each
other by themselves (elsewhere: --coordinator_address, --num_processes,
--process_id). --config.train.dry_run=True compiles the step, reports its
memory per device and FLOPs, and exits.
"""

from absl import flags
from ml_collections import config_flags

from electra_jax import cli
from electra_jax.errors import UserError
from electra_jax.pretraining import loop
from electra_jax.runtime import cluster_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None,
    "A config file, or a shipped config by name: tiny, small, base, large. Override any "
    "field with --config.<section>.<field>=<value>, e.g. --config.train.steps=1000.")
_WORKDIR = flags.DEFINE_string(
    "workdir", None,
    "Directory for this run's outputs: config.json, metrics.jsonl, tensorboard/, "
    "tokenizer.model, checkpoints/, params.msgpack, and the prepared data (data/, unless "
    "--config.data.dir is set). Created if missing; a workdir with checkpoints is continued. "
    "Process 0 writes the files, every process its share of the checkpoints; "
    "in a multi-host run it should be a directory every host can read.")
flags.adopt_module_key_flags(cluster_flags)  # --coordinator_address and the rest


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}; see --help")
  config = cli.resolved_config(_CONFIG)
  if not _WORKDIR.value and not config.train.dry_run:
    raise UserError("--workdir is required: the directory that receives this run's outputs")
  cluster_flags.join_processes()
  loop.train_and_evaluate(config, _WORKDIR.value or "")


if __name__ == "__main__":
  cli.run(main)
