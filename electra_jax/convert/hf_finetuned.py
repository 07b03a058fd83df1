"""A fine-tuned model as a transformers folder, its task head included.

  GLUE classification  ElectraForSequenceClassification, id2label GLUE's label names
  STS-B                ElectraForSequenceClassification, one output, the 0-5 score itself
  CoNLL tagging        ElectraForTokenClassification, id2label the tag names
  SQuAD spans          ElectraForQuestionAnswering (start and end logits)

The encoder's weights are named as in ElectraForPreTraining (hf_params.py).
The tagging and span heads are one linear layer in both libraries and map
one to one. ELECTRA's classification head is one linear layer on [CLS] (ours,
as the original code), but transformers' is dense -> GELU -> out_proj; the
export writes ours into that shape exactly, with the identity
GELU(z) - GELU(-z) = z: `dense` computes z and -z for each output (its other
rows are zero), `out_proj` subtracts the second from the first. STS-B's head
is scaled by 5 on the way, so transformers returns the score rather than
fine-tuning's score / 5. `read` takes such a folder back (for predictions).
"""

import json
import os

import numpy as np

from electra_jax import config as config_lib
from electra_jax.convert import flax_format, hf, hf_params, hf_tokenizer, import_optional
from electra_jax.errors import DataError
from electra_jax.finetune import config as finetune_config
from electra_jax.finetune import glue, tasks
from electra_jax.finetune.model import PRETRAINED
from electra_jax.finetune.saved_run import FineTunedRun
from electra_jax.runtime.fileio import atomic_write

ARCHITECTURES = {tasks.CLASSIFICATION: "ElectraForSequenceClassification",
                 tasks.REGRESSION: "ElectraForSequenceClassification",
                 tasks.TAGGING: "ElectraForTokenClassification",
                 tasks.SPAN: "ElectraForQuestionAnswering"}


def head_tensors(kind: str, kernel: np.ndarray, bias: np.ndarray) -> dict[str, np.ndarray]:
  """transformers' head weights computing what our head (kernel [hidden, outputs]) computes."""
  kernel, bias = np.asarray(kernel, np.float32), np.asarray(bias, np.float32)
  if kind == tasks.TAGGING:
    return {"classifier.weight": kernel.T, "classifier.bias": bias}
  if kind == tasks.SPAN:
    return {"qa_outputs.weight": kernel.T, "qa_outputs.bias": bias}
  if kind == tasks.REGRESSION:
    kernel, bias = kernel * glue.STSB_MAX, bias * glue.STSB_MAX
  hidden, outputs = kernel.shape
  if 2 * outputs > hidden:
    raise DataError(f"a classification head of {outputs} outputs needs a hidden size of at least "
                    f"{2 * outputs} to be written as transformers' (it has {hidden})")
  dense = np.zeros((hidden, hidden), np.float32)
  dense[:outputs], dense[outputs:2 * outputs] = kernel.T, -kernel.T
  dense_bias = np.zeros(hidden, np.float32)
  dense_bias[:outputs], dense_bias[outputs:2 * outputs] = bias, -bias
  out_proj = np.zeros((outputs, hidden), np.float32)
  out_proj[:, :outputs], out_proj[:, outputs:2 * outputs] = np.eye(outputs), -np.eye(outputs)
  return {"classifier.dense.weight": dense, "classifier.dense.bias": dense_bias,
          "classifier.out_proj.weight": out_proj,
          "classifier.out_proj.bias": np.zeros(outputs, np.float32)}


def hf_config(run: FineTunedRun) -> dict:
  """transformers' config.json for the fine-tuned model."""
  config = config_lib.default_config()
  config.model = run.model
  settings = hf.hf_config(config, "discriminator")
  kind = run.task.kind
  settings["architectures"] = [ARCHITECTURES[kind]]
  if kind == tasks.REGRESSION:
    settings.update(num_labels=1, problem_type="regression")
  elif kind == tasks.SPAN:
    settings.update(num_labels=2)
  else:
    settings.update(id2label=dict(enumerate(run.labels)),
                    label2id={label: i for i, label in enumerate(run.labels)})
    if kind == tasks.CLASSIFICATION:
      settings["problem_type"] = "single_label_classification"
  settings["finetuning_task"] = run.config.task
  return settings


def write(directory: str, run: FineTunedRun) -> None:
  """config.json, model.safetensors and the tokenizer files of the fine-tuned model."""
  safetensors_numpy = import_optional("safetensors.numpy", package="safetensors")
  os.makedirs(directory, exist_ok=True)
  atomic_write(os.path.join(directory, hf.CONFIG_FILE), json.dumps(hf_config(run), indent=2))
  tensors = hf_params.subtrees_to_hf(run.params, PRETRAINED)
  tensors.update(head_tensors(run.task.kind, run.params["head"]["kernel"],
                              run.params["head"]["bias"]))
  atomic_write(os.path.join(directory, hf.WEIGHTS_FILE),
               safetensors_numpy.save({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                                      metadata={"format": "pt"}))
  hf_tokenizer.write_tokenizer(directory, run.tokenizer, run.model.max_position_embeddings)


def read(directory: str) -> FineTunedRun:
  """A folder that `write` made, back as a fine-tuned run (without a data_dir of its own)."""
  network = hf.read_network(directory)
  settings = network.config
  kind = next((kind for kind, name in ARCHITECTURES.items()
               if name in (settings.get("architectures") or [])), None)
  task_name = settings.get("finetuning_task")
  if kind is None or task_name not in tasks.TASKS:
    raise DataError(f"{directory} is not a fine-tuned model that electra_jax exported (its "
                    f"config.json has no {', '.join(sorted(set(ARCHITECTURES.values())))} "
                    "architecture with a finetuning_task of electra_jax's tasks)")
  model = hf.model_config(network)
  vocabulary = hf_tokenizer.read_tokenizer(directory, model.vocab_size)
  if vocabulary.reordered:
    raise DataError(f"{vocabulary.path} does not have the special tokens at ids 0-4, as every "
                    "electra_jax export has; was the folder made by electra_jax.export?")
  config = config_lib.default_config()
  config.model = model
  head_names = [name for name in network.tensors if name.startswith(_HEAD_PREFIXES)]
  params = hf_params.from_hf({k: v for k, v in network.tensors.items() if k not in head_names},
                             flax_format.param_shapes(config), "discriminator",
                             network.weights_path,
                             names=PRETRAINED)
  task = tasks.TASKS[task_name]
  params["head"] = _head_params(task.kind, network.tensors, network.weights_path)
  labels = None
  if "id2label" in settings and task.kind in (tasks.CLASSIFICATION, tasks.TAGGING):
    labels = tuple(settings["id2label"][str(i)] for i in range(len(settings["id2label"])))
  run_config = finetune_config.default_config(task_name)
  run_config.max_seq_length = min(run_config.max_seq_length, model.max_position_embeddings)
  return FineTunedRun(directory, run_config, model, params, vocabulary.tokenizer, labels)


_HEAD_PREFIXES = ("classifier.", "qa_outputs.")


def _head_params(kind: str, tensors: dict[str, np.ndarray], origin: str) -> dict:
  """Our head from transformers' weights: the inverse of `head_tensors`."""
  name = {tasks.TAGGING: "classifier", tasks.SPAN: "qa_outputs"}.get(kind)
  if name is not None:
    return {"kernel": tensors[f"{name}.weight"].T, "bias": tensors[f"{name}.bias"]}
  outputs = tensors["classifier.out_proj.weight"].shape[0]
  scale = glue.STSB_MAX if kind == tasks.REGRESSION else 1.0
  head = {"kernel": tensors["classifier.dense.weight"][:outputs].T / scale,
          "bias": tensors["classifier.dense.bias"][:outputs] / scale}
  written = head_tensors(kind, head["kernel"], head["bias"])
  if any(not np.allclose(tensors[k], v, atol=1e-6) for k, v in written.items()):
    raise DataError(f"{origin}: its classification head is transformers' own dense -> GELU -> "
                    "out_proj, which ELECTRA's one-layer head cannot compute; only heads that "
                    "electra_jax.export wrote read back")
  return head
