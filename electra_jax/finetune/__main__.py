r"""Fine-tune a pre-trained ELECTRA discriminator on GLUE, CoNLL tagging or SQuAD.

  python -m electra_jax.finetune --config=configs/finetune/glue.py --config.task=sst2 \
      --config.init=/tmp/electra --config.data_dir=/data/glue --workdir=/tmp/sst2

--config.init is a pre-training workdir, an export (--format=flax or --format=hf)
or a Hugging Face ELECTRA folder. --config.data_dir is, for GLUE, the root
with one folder per task as GLUE's download lays them out (SST-2/train.tsv,
SST-2/dev.tsv, ...), `tfds` for TensorFlow Datasets' glue/*, or hf:nyu-mll/glue (or a
folder where a task's DatasetDict was saved) for Hugging Face datasets' GLUE; for
configs/finetune/tagging.py a folder of CoNLL files (train.txt, dev.txt); for
configs/finetune/qa.py a folder with SQuAD's train-v1.1.json and dev-v1.1.json
(--config.task=squad2: the v2.0 files).

Trains for the task's epochs with the paper's recipe (layer-wise learning-rate
decay, 10% warmup then linear decay), evaluates on the dev split after every
epoch, and writes to --workdir: config.json, model_config.json, the tokenizer,
metrics.jsonl and tensorboard/, checkpoints/ (every --config.checkpoint.every_steps
steps and after every epoch; on SIGTERM or Ctrl-C it saves and exits, and the same
command continues the run), best/ (params.msgpack, metrics.json and the
dev predictions of the best epoch) and results.json. --config.random_init=True
trains the same architecture from random weights instead.

Tasks: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli, conll, squad1, squad2.
Multi-host runs find each other by themselves on Cloud TPU VMs and under
SLURM; elsewhere give --coordinator_address, --num_processes and --process_id
(or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID), as for
pre-training.
"""

import os

from absl import flags, logging
from ml_collections import config_flags

from electra_jax import cli
from electra_jax.errors import UserError
from electra_jax.finetune import config as config_lib
from electra_jax.finetune import resume
from electra_jax.finetune import trainer
from electra_jax.runtime import cluster_flags, fileio

_CONFIG = config_flags.DEFINE_config_file(
    "config", None,
    "A fine-tuning config file, or a shipped one by name: glue, tagging or qa. Override any field "
    "with --config.<field>=<value>, e.g. --config.task=mrpc --config.train.epochs=5.")
_WORKDIR = flags.DEFINE_string(
    "workdir", None,
    "Directory for this run's outputs (config, metrics, best params and predictions). "
    "Must not hold another run. Default: runs/finetune/<task> under the current directory.")
flags.adopt_module_key_flags(cluster_flags)  # --coordinator_address and the rest


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}; see --help")
  config = cli.resolved_config(_CONFIG, validate=config_lib.validate)
  cluster_flags.join_processes()
  workdir = _WORKDIR.value or os.path.join("runs", "finetune", config.task)
  resume.refuse_pretraining_workdir(workdir)
  logging.info("Writing to %s", fileio.absolute(workdir))
  with resume.RunCheckpoints(config, workdir) as checkpointer:
    trainer.finetune(config, workdir, checkpointer)


if __name__ == "__main__":
  cli.run(main)
