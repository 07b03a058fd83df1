"""Fine-tuned models leave the framework: each task kind exported to its transformers class,
loaded there with every weight, giving our outputs on dev rows (float32, within 1e-4)."""

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the export tests need torch and transformers: "
                            "pip install -e '.[hf]'")
transformers = pytest.importorskip("transformers", reason="the export tests need torch and "
                                   "transformers: pip install -e '.[hf]'")

import finetune_helpers as helpers  # pylint: disable=wrong-import-position
from electra_jax.convert.run_export import export_run
from electra_jax.errors import UserError
from electra_jax.finetune import model as model_lib
from electra_jax.finetune import saved_run, trainer
from electra_jax.runtime import workdir as workdir_files

TOLERANCE = 1e-4


def write_stsb(root, train=48, dev=16) -> None:
  rng = np.random.default_rng(0)
  for split, count in (("train", train), ("dev", dev)):
    rows = []
    for i in range(count):
      a, b = (" ".join(rng.choice(helpers.WORDS, 4)) for _ in range(2))
      rows.append(f"{i}\t{a}\t{b}\t{rng.uniform(0, 5):.2f}")
    helpers.write(os.path.join(root, "STS-B", f"{split}.tsv"),
                  "index\tsentence1\tsentence2\tscore\n" + "\n".join(rows) + "\n")


DATA = {"sst2": lambda d: helpers.write_sst2(d), "stsb": write_stsb,
        "conll": lambda d: helpers.write_conll(d, sentences=16),
        "squad1": lambda d: helpers.write_squad(d, version=1, train=16, dev=8)}
CLASSES = {"sst2": "ElectraForSequenceClassification",
           "stsb": "ElectraForSequenceClassification",
           "conll": "ElectraForTokenClassification", "squad1": "ElectraForQuestionAnswering"}


@pytest.fixture(name="init", scope="module")
def fixture_init(tmp_path_factory):
  return helpers.export_model(tmp_path_factory.mktemp("model"), num_layers=1)


def fine_tuned(tmp_path, init: str, task: str):
  DATA[task](tmp_path / "data")
  config = helpers.config(task, init, str(tmp_path / "data"), epochs=1)
  trainer.finetune(config, str(tmp_path / "run"))
  return str(tmp_path / "run")


def dev_rows(run: saved_run.FineTunedRun, count=6):
  data = trainer.load_task(run.config, run.tokenizer)
  features = data.evals[0].features
  return features["input_ids"][:count], features["token_type_ids"][:count], data.num_outputs


@pytest.mark.parametrize("task", list(DATA))
def test_a_fine_tuned_run_exports_to_its_transformers_class_with_our_outputs(tmp_path, init,
                                                                             task):
  workdir = fine_tuned(tmp_path, init, task)
  out = tmp_path / "hf"
  export_run(workdir, "hf", str(out))
  model, info = getattr(transformers, CLASSES[task]).from_pretrained(out,
                                                                     output_loading_info=True)
  assert not any(info.values()), info
  model.eval()
  run = saved_run.read(workdir)
  ids, types, num_outputs = dev_rows(run)
  ours = np.asarray(model_lib.build_model(run.model, run.task.kind, num_outputs).apply(
      {"params": run.params}, ids, types))
  with torch.no_grad():
    output = model(torch.tensor(ids, dtype=torch.long),
                   attention_mask=torch.tensor(ids != 0, dtype=torch.long),
                   token_type_ids=torch.tensor(types, dtype=torch.long))
  if task == "squad1":
    theirs = np.stack([output.start_logits.numpy(), output.end_logits.numpy()], axis=-1)
    ours, theirs = ours[ids != 0], theirs[ids != 0]  # ours masks the padding out
  else:
    theirs = output.logits.numpy()
  if task == "stsb":
    ours = ours * 5.0  # transformers gets the score itself; fine-tuning regresses score / 5
  assert np.max(np.abs(ours - theirs)) <= TOLERANCE
  if task == "stsb":
    assert model.config.num_labels == 1 and model.config.problem_type == "regression"
  elif task != "squad1":
    assert [model.config.id2label[i] for i in range(num_outputs)] == list(run.labels)
  tokenizer = transformers.AutoTokenizer.from_pretrained(out)
  text = "the quick brown fox is good"
  assert tokenizer(text)["input_ids"] == [2, *run.tokenizer.encode([text])[0], 3]


def test_conll_tag_names_are_kept_with_the_run(tmp_path, init):
  workdir = fine_tuned(tmp_path, init, "conll")
  labels = json.loads((tmp_path / "run" / workdir_files.LABELS_FILE).read_text())
  assert labels == ["B-ANI", "I-ANI", "O"]
  # A run from before labels.json reads them again from its training file.
  (tmp_path / "run" / workdir_files.LABELS_FILE).unlink()
  assert saved_run.read(workdir).labels == tuple(labels)


def test_a_fine_tuned_run_exports_with_hf_only(tmp_path, init):
  workdir = fine_tuned(tmp_path, init, "sst2")
  with pytest.raises(UserError, match="exports with --format=hf only"):
    export_run(workdir, "flax", str(tmp_path / "out"))
  with pytest.raises(UserError, match="leave out --step"):
    export_run(workdir, "hf", str(tmp_path / "out"), step=4)
  assert not (tmp_path / "out").exists()
