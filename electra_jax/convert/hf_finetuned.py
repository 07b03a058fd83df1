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
fine-tuning's score / 5.
"""

import json
import os

import numpy as np

from electra_jax import config as config_lib
from electra_jax.convert import hf, hf_params, hf_tokenizer, import_optional
from electra_jax.errors import DataError
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
