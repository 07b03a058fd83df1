"""The fine-tuning config: every field, its default, the values it may take, and the recipe.

`configs/finetune/{glue,tagging,qa}.py` start from `default_config()`; any field
can be overridden with `--config.field=value`. Fields left unset take the
paper's recipe (ELECTRA.md, "Fine-tuning") for the task and the model size:
see `resolve`. The mesh and checkpoint sections are pre-training's, with the
same meanings.
"""

import ml_collections
from ml_collections import config_dict

from electra_jax import config as config_lib
from electra_jax.config import validation
from electra_jax.errors import ConfigError
from electra_jax.finetune import tasks

TFDS = "tfds"  # data_dir's value that reads GLUE from TensorFlow Datasets


def default_config(task: str = "") -> ml_collections.ConfigDict:
  """The defaults for `task`: 128 tokens, or the paper's 512 for SQuAD."""
  span = task in tasks.TASKS and tasks.TASKS[task].kind == tasks.SPAN
  c = ml_collections.ConfigDict()
  c.task = task  # a name from tasks.TASKS
  # A pre-training workdir, a `--format=flax` or `--format=hf` export, or a Hugging Face
  # ELECTRA folder: the discriminator, its config and its tokenizer.
  c.init = ""
  # True: `init`'s architecture and tokenizer with freshly initialized weights (the control
  # for what pre-training brings).
  c.random_init = False
  # GLUE: the root with one folder per task (SST-2/, MNLI/, ...), "tfds", or Hugging Face
  # datasets' GLUE: "hf:nyu-mll/glue" (by name) or a saved DatasetDict's folder. CoNLL: the folder
  # with train.txt and dev.txt (or valid.txt). SQuAD: the folder with train-v1.1.json and
  # dev-v1.1.json (2.0: -v2.0).
  c.data_dir = ""
  c.max_seq_length = 512 if span else 128
  # MRPC and STS-B: add each training pair again with its sentences swapped (the original
  # code's `double_unordered`).
  c.symmetric_pairs = False
  c.tag_column = -1  # CoNLL: the column holding the tags (-1: the last)
  c.doc_stride = 128  # SQuAD: tokens between the starts of a long context's windows
  c.max_query_length = 64  # SQuAD: question tokens kept
  c.max_answer_length = 30  # SQuAD: longest answer predicted, in tokens
  c.n_best_size = 20  # SQuAD: start and end candidates considered per window
  # SQuAD 2.0: answer "no answer" when its score beats the best span's by more than this.
  c.null_score_threshold = 0.0

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 32
  c.train.eval_batch_size = 32 if span else 64
  c.train.epochs = config_dict.placeholder(int)  # unset: the task's (tasks.TASKS)
  # Draws the head's initial weights (every weight's, with random_init), dropout and the order.
  c.train.seed = 0
  c.train.log_every = 100
  c.train.wandb_project = ""  # as pre-training's: a Weights & Biases project, or empty
  # Train on this many examples, drawn once (independently of the seed); 0: all of them.
  c.train.max_examples = 0

  c.optim = ml_collections.ConfigDict()
  # Unset: the paper's for the model's size: 3e-4 up to hidden size 256 (Small),
  # 1e-4 up to 768 (Base), 5e-5 above (Large).
  c.optim.learning_rate = config_dict.placeholder(float)
  # Layer i of L (1 = lowest) learns at learning_rate * layer_decay^(L - i), the embeddings at
  # learning_rate * layer_decay^L, the head at learning_rate. Unset: 0.8, 0.9 for Large.
  c.optim.layer_decay = config_dict.placeholder(float)
  c.optim.warmup_fraction = 0.1  # of all steps; then linear decay to 0
  c.optim.weight_decay = 0.01
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.eps = 1e-6
  c.optim.max_grad_norm = 1.0

  c.mesh = config_lib.default_config().mesh
  # Checkpoints in <workdir>/checkpoints, also after every epoch and on SIGTERM or Ctrl-C;
  # the same command started again continues from the newest. Pre-training's fields.
  c.checkpoint = config_lib.default_config().checkpoint
  return c


# The rule primitives are config.py's, so that both configs word their messages alike.
_RULES: dict[str, validation.Rule] = {
    "task": (lambda v: v in tasks.TASKS, f"one of {', '.join(tasks.TASKS)}"),
    "init": (lambda v: isinstance(v, str) and v != "",
             "a pre-training workdir, an export (--format=flax or hf) or a Hugging Face folder"),
    "random_init": (lambda v: isinstance(v, bool), "True or False"),
    "data_dir": (lambda v: isinstance(v, str) and v != "",
                 f"the folder holding the task's files ({TFDS!r} or hf:NAME for GLUE)"),
    "max_seq_length": (lambda v: isinstance(v, int) and v >= 8, "an integer >= 8"),
    "symmetric_pairs": (lambda v: isinstance(v, bool), "True or False"),
    "tag_column": (lambda v: isinstance(v, int), "an integer (a column index; -1: the last)"),
    "doc_stride": validation.POSITIVE_INT,
    "max_query_length": validation.POSITIVE_INT,
    "max_answer_length": validation.POSITIVE_INT,
    "n_best_size": validation.POSITIVE_INT,
    "null_score_threshold": (lambda v: isinstance(v, (int, float)), "a number"),
    "train.batch_size": validation.POSITIVE_INT,
    "train.eval_batch_size": validation.POSITIVE_INT,
    "train.epochs": (lambda v: v is None or (isinstance(v, int) and v > 0),
                     "a positive integer, or unset for the task's"),
    "train.seed": validation.NON_NEGATIVE_INT,
    "train.log_every": validation.POSITIVE_INT,
    "train.wandb_project": validation.WANDB_PROJECT,
    "train.max_examples": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0 (0: all)"),
    "optim.learning_rate": (lambda v: v is None or validation.POSITIVE[0](v),
                            "a positive number, or unset for the paper's"),
    "optim.layer_decay": (lambda v: v is None or 0 < v <= 1,
                          "a number in (0, 1] (1: no decay), or unset for the paper's"),
    "optim.warmup_fraction": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "optim.weight_decay": validation.NON_NEGATIVE,
    "optim.b1": validation.BETA,
    "optim.b2": validation.BETA,
    "optim.eps": validation.POSITIVE,
    "optim.max_grad_norm": validation.POSITIVE,
    **{name: rule for name, rule in validation.RULES.items()
       if name.startswith(("mesh.", "checkpoint."))},
}


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first unknown field or disallowed value."""
  validation.check_fields(config, _RULES, "electra_jax.finetune.config.default_config()")
  if ((config.data_dir == TFDS or config.data_dir.startswith("hf:")) and
      tasks.TASKS[config.task].kind not in (tasks.CLASSIFICATION, tasks.REGRESSION)):
    raise ConfigError(f"config field 'data_dir' = {config.data_dir!r} reads GLUE tasks only; "
                      f"give the folder with the {config.task} files")
  sizes = [config.mesh[axis] for axis in config_lib.MESH_AXES]
  if sizes.count(-1) > 1:
    raise ConfigError(f"config fields 'mesh.{{data,fsdp,tensor}}' = {tuple(sizes)} have more "
                      "than one -1; give all but one axis a size")


def resolve(config: ml_collections.ConfigDict, model: ml_collections.ConfigDict) -> None:
  """Fills the unset fields with the recipe for the task and `model` (the pre-trained config).

  Also refuses a sequence length the model has no positions for.
  """
  if config.max_seq_length > model.max_position_embeddings:
    raise ConfigError(f"config field 'max_seq_length' = {config.max_seq_length} exceeds the "
                      f"{model.max_position_embeddings} positions of the model in {config.init}; "
                      f"set --config.max_seq_length={model.max_position_embeddings} or less")
  large = model.hidden_size > 768
  if config.optim.learning_rate is None:
    config.optim.learning_rate = 3e-4 if model.hidden_size <= 256 else 5e-5 if large else 1e-4
  if config.optim.layer_decay is None:
    config.optim.layer_decay = 0.9 if large else 0.8
  if config.train.epochs is None:
    config.train.epochs = tasks.TASKS[config.task].epochs
