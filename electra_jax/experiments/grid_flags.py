"""The flags of the experiments' command lines that fine-tune models over tasks and seeds.

Defined by `define`, once per command, with that command's defaults and words.
"""

import dataclasses

from absl import flags

from electra_jax.errors import UserError
from electra_jax.finetune import tasks


@dataclasses.dataclass(frozen=True)
class GridFlags:
  """The flag holders `define` returns."""

  tasks: flags.FlagHolder
  seeds: flags.FlagHolder
  glue_dir: flags.FlagHolder
  conll_dir: flags.FlagHolder
  squad_dir: flags.FlagHolder
  overrides: flags.FlagHolder
  out: flags.FlagHolder

  def seed_values(self) -> list[int]:
    try:
      return [int(s) for s in self.seeds.value]
    except ValueError:
      raise UserError(f"--seeds={','.join(self.seeds.value)} must be integers") from None

  def data_dirs(self) -> dict[str, str | None]:
    return dict(glue=self.glue_dir.value, conll=self.conll_dir.value, squad=self.squad_dir.value)


def define(out_help: str, glue_dir: str | None = None, conll_dir: str | None = None,
           set_help: str = "") -> GridFlags:
  """--tasks, --seeds, --glue_dir, --conll_dir, --squad_dir, --set and --out."""
  return GridFlags(
      tasks=flags.DEFINE_list("tasks", "sst2,stsb,conll",
                              f"Tasks, comma-separated, from: {', '.join(tasks.TASKS)}."),
      seeds=flags.DEFINE_list("seeds", "0,1,2",
                              "Fine-tuning seeds (train.seed), comma-separated."),
      glue_dir=flags.DEFINE_string(
          "glue_dir", glue_dir, "The GLUE root (SST-2/, STS-B/, ...), or 'tfds'; for GLUE tasks."),
      conll_dir=flags.DEFINE_string(
          "conll_dir", conll_dir, "The folder of CoNLL train.txt and dev.txt; for the conll task."),
      squad_dir=flags.DEFINE_string("squad_dir", None, "The folder of the SQuAD JSON files."),
      overrides=flags.DEFINE_multi_string(
          "set", [], "A fine-tuning config override, FIELD=VALUE for every task or "
          "TASK:FIELD=VALUE for one, e.g. --set=max_seq_length=64 "
          "--set=sst2:train.max_examples=20000. Repeatable." + set_help),
      out=flags.DEFINE_string("out", None, out_help))
