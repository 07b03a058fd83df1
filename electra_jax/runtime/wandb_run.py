"""Weights & Biases as a third home for a run's metrics, beside metrics.jsonl and TensorBoard.

Optional (`pip install -e ".[wandb]"`), on when `train.wandb_project` names a
project. The W&B run's id is kept in the workdir, so a run continued from its
checkpoint logs into the same W&B run; the steps it repeats after an
interruption are ones W&B already has, and W&B keeps the first values it got.
Credentials, the entity and offline mode come from W&B's own settings
(`wandb login`, WANDB_ENTITY, WANDB_MODE=offline).
"""

import importlib
import os
import uuid
from typing import Any, Mapping

from electra_jax.errors import UserError
from electra_jax.runtime import fileio
from electra_jax.runtime.workdir import WANDB_RUN_ID_FILE


def start(workdir: str, project: str, config: Mapping[str, Any]):
  """The W&B run of `workdir` in `project`: a new one, or the one an earlier start made."""
  try:
    wandb = importlib.import_module("wandb")
  except ImportError:
    raise UserError(f"train.wandb_project is '{project}', but wandb is not installed: pip install "
                    "wandb (or pip install -e '.[wandb]'), or leave train.wandb_project empty"
                    ) from None
  id_path = os.path.join(workdir, WANDB_RUN_ID_FILE)
  if fileio.exists(id_path):
    with fileio.open_text(id_path) as f:
      run_id = f.read().strip()
  else:
    run_id = uuid.uuid4().hex[:12]  # W&B's ids are lower-case letters and digits
    fileio.atomic_write(id_path, run_id + "\n")
  # W&B keeps its own files in a local directory: the workdir's, or its default one
  # (./wandb) for a workdir at a URL.
  return wandb.init(project=project, id=run_id, resume="allow",
                    dir=None if fileio.is_url(workdir) else workdir,
                    name=os.path.basename(fileio.absolute(workdir)), config=dict(config))


def log(run, step: int, split: str, metrics: Mapping[str, float]) -> None:
  run.log({f"{split}/{name}": value for name, value in metrics.items()}, step=step)
