"""Fine-tuned models leave the framework: each task kind exported to its transformers class,
loaded there with every weight, giving our outputs on dev rows (float32, within 1e-4); and
predictions for test sets, from a fine-tuning workdir or such an export, in the files that
GLUE's server, conlleval and SQuAD's evaluation read."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the export tests need torch and transformers: "
                            "pip install -e '.[hf]'")
transformers = pytest.importorskip("transformers", reason="the export tests need torch and "
                                   "transformers: pip install -e '.[hf]'")

import finetune_helpers as helpers  # pylint: disable=wrong-import-position
from conftest import REPO
from electra_jax.convert import hf_finetuned
from electra_jax.convert.run_export import export_run
from electra_jax.errors import DataError, UserError
from electra_jax.finetune import model as model_lib
from electra_jax.finetune import encoding, predict, saved_run, trainer
from electra_jax.runtime import workdir as workdir_files

TOLERANCE = 1e-4


def write_stsb(root, train=48, dev=16, test=10) -> None:
  rng = np.random.default_rng(0)
  for split, count in (("train", train), ("dev", dev), ("test", test)):
    rows = []
    for i in range(count):
      a, b = (" ".join(rng.choice(helpers.WORDS, 4)) for _ in range(2))
      score = "" if split == "test" else f"\t{rng.uniform(0, 5):.2f}"
      rows.append(f"{i}\tmain\t{a}\t{b}{score}")
    header = "index\tgenre\tsentence1\tsentence2" + ("" if split == "test" else "\tscore")
    helpers.write(os.path.join(root, "STS-B", f"{split}.tsv"),
                  header + "\n" + "\n".join(rows) + "\n")


def write_sst2(root) -> None:
  helpers.write_sst2(root)
  rows = "".join(f"{i + 100}\t{s}\n" for i, (s, _) in enumerate(helpers.sentiment_rows(7, 2)))
  helpers.write(os.path.join(root, "SST-2", "test.tsv"), "index\tsentence\n" + rows)


MNLI_LABELS = ("contradiction", "entailment", "neutral")


def write_mnli(root) -> None:
  rng = np.random.default_rng(0)
  pair = lambda: [" ".join(rng.choice(helpers.WORDS, 4)) for _ in range(2)]
  files = {"MNLI/train.tsv": 32, "MNLI/dev_matched.tsv": 8, "MNLI/dev_mismatched.tsv": 8,
           "MNLI/test_matched.tsv": 5, "MNLI/test_mismatched.tsv": 6,
           "diagnostic/diagnostic.tsv": 4}
  for name, count in files.items():
    test = "test" in name or "diagnostic" in name
    rows = ["\t".join([str(i), "g", *pair(), *([] if test else [MNLI_LABELS[i % 3]])])
            for i in range(count)]
    header = "index\tgenre\tsentence1\tsentence2" + ("" if test else "\tgold_label")
    helpers.write(os.path.join(root, name), header + "\n" + "\n".join(rows) + "\n")


DATA = {"sst2": write_sst2, "stsb": write_stsb, "mnli": write_mnli,
        "conll": lambda d: helpers.write_conll(d, sentences=16),
        "squad1": lambda d: helpers.write_squad(d, version=1, train=16, dev=8),
        "squad2": lambda d: helpers.write_squad(d, version=2, train=16, dev=8)}
CLASSES = {"sst2": "ElectraForSequenceClassification",
           "stsb": "ElectraForSequenceClassification",
           "conll": "ElectraForTokenClassification", "squad1": "ElectraForQuestionAnswering"}


@pytest.fixture(name="init", scope="module")
def fixture_init(tmp_path_factory):
  return helpers.export_model(tmp_path_factory.mktemp("model"), num_layers=1)


@pytest.fixture(name="runs", scope="module")
def fixture_runs(tmp_path_factory, init):
  """runs(task): the workdir of a one-epoch fine-tuning run of `task`, made once per module."""
  made = {}

  def run(task: str) -> str:
    if task not in made:
      directory = tmp_path_factory.mktemp(task)
      DATA[task](directory / "data")
      config = helpers.config(task, init, str(directory / "data"), epochs=1)
      trainer.finetune(config, str(directory / "run"))
      made[task] = str(directory / "run")
    return made[task]

  return run


def dev_rows(run: saved_run.FineTunedRun, count=6):
  data = trainer.load_task(run.config, run.tokenizer)
  features = data.evals[0].features
  return features["input_ids"][:count], features["token_type_ids"][:count], data.num_outputs


@pytest.mark.parametrize("task", list(CLASSES))
def test_a_fine_tuned_run_exports_to_its_transformers_class_with_our_outputs(tmp_path, runs,
                                                                             task):
  workdir = runs(task)
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


def test_conll_tag_names_are_kept_with_the_run(runs):
  labels_file = os.path.join(runs("conll"), workdir_files.LABELS_FILE)
  with open(labels_file, encoding="utf-8") as f:
    labels = json.load(f)
  assert labels == ["B-ANI", "I-ANI", "O"]
  # A run from before labels.json reads them again from its training file.
  os.rename(labels_file, labels_file + ".kept")
  try:
    assert saved_run.read(runs("conll")).labels == tuple(labels)
  finally:
    os.rename(labels_file + ".kept", labels_file)


def test_a_fine_tuned_run_exports_with_hf_only(tmp_path, runs):
  workdir = runs("sst2")
  with pytest.raises(UserError, match="exports with --format=hf only"):
    export_run(workdir, "flax", str(tmp_path / "out"))
  with pytest.raises(UserError, match="leave out --step"):
    export_run(workdir, "hf", str(tmp_path / "out"), step=4)
  assert not (tmp_path / "out").exists()


def read_tsv(path) -> list[list[str]]:
  with open(path, encoding="utf-8") as f:
    return [line.rstrip("\n").split("\t") for line in f]


def our_outputs(workdir: str, features) -> np.ndarray:
  return predict.model_outputs(saved_run.read(workdir), features, 8)


def test_glue_submission_files_hold_every_test_row_with_glue_label_names(tmp_path, runs):
  written = predict.write_predictions(saved_run.read(runs("sst2")), str(tmp_path / "out"))
  assert written == [str(tmp_path / "out" / "SST-2.tsv")]
  rows = read_tsv(written[0])
  assert rows[0] == ["index", "prediction"]
  assert [r[0] for r in rows[1:]] == [str(i + 100) for i in range(7)]
  # The same labels as the model's own argmax on those sentences.
  run = saved_run.read(runs("sst2"))
  texts = [s for s, _ in helpers.sentiment_rows(7, 2)]
  features = encoding.encode_texts(run.tokenizer, texts, None, run.config.max_seq_length, "test")
  predicted = our_outputs(runs("sst2"), features).argmax(-1)
  assert [r[1] for r in rows[1:]] == [str(p) for p in predicted]


def test_mnli_writes_matched_mismatched_and_the_diagnostic_set(tmp_path, runs):
  written = predict.write_predictions(saved_run.read(runs("mnli")), str(tmp_path / "out"))
  assert [os.path.basename(p) for p in written] == ["MNLI-m.tsv", "MNLI-mm.tsv", "AX.tsv"]
  for path, count in zip(written, (5, 6, 4)):
    rows = read_tsv(path)
    assert len(rows) == count + 1 and all(r[1] in MNLI_LABELS for r in rows[1:])


def test_stsb_submission_is_the_score_in_range(tmp_path, runs):
  (path,) = predict.write_predictions(saved_run.read(runs("stsb")), str(tmp_path / "out"))
  scores = [float(r[1]) for r in read_tsv(path)[1:]]
  assert len(scores) == 10 and all(0 <= s <= 5 for s in scores)


def test_conll_test_file_is_tagged_in_conlleval_format(tmp_path, runs):
  run = saved_run.read(runs("conll"))
  data = tmp_path / "data"
  helpers.write_conll(data, sentences=8, seed=3)
  os.rename(data / "dev.txt", data / "test.txt")
  (path,) = predict.write_predictions(run, str(tmp_path / "out"), str(data / "test.txt"))
  assert os.path.basename(path) == "test.tagged.txt"
  with open(path, encoding="utf-8") as f:
    sentences = f.read().split("\n\n")
  assert len(sentences) == 4
  lines = [line.split() for s in sentences for line in s.splitlines()]
  assert all(len(line) == 3 and line[2] in run.labels for line in lines)
  # Words alone (one column): `word predicted`.
  words = tmp_path / "words.txt"
  words.write_text("the\nlazy\ndog\n\nfox\n")
  (path,) = predict.write_predictions(run, str(tmp_path / "words"), str(words))
  with open(path, encoding="utf-8") as f:
    assert [line.split()[0] for line in f.read().split()[::2]] == ["the", "lazy", "dog", "fox"]


def test_squad2_predictions_and_null_odds_for_every_question(tmp_path, runs):
  run = saved_run.read(runs("squad2"))
  document = helpers.squad_document(2, 6, seed=5)
  for paragraph in document["data"][0]["paragraphs"]:  # a test file: no answers
    for qa in paragraph["qas"]:
      del qa["answers"], qa["is_impossible"]
  (tmp_path / "test.json").write_text(json.dumps(document))
  answers_path, odds_path = predict.write_predictions(run, str(tmp_path / "out"),
                                                      str(tmp_path / "test.json"))
  answers = json.loads(open(answers_path, encoding="utf-8").read())
  odds = json.loads(open(odds_path, encoding="utf-8").read())
  assert sorted(answers) == sorted(odds) == [f"q{i}" for i in range(6)]
  threshold = run.config.null_score_threshold
  assert all((answers[q] == "") == (odds[q] > threshold) for q in answers)


def test_predictions_from_an_export_equal_the_workdirs(tmp_path, runs):
  export_run(runs("sst2"), "hf", str(tmp_path / "hf"))
  data_dir = saved_run.read(runs("sst2")).config.data_dir
  from_workdir = predict.write_predictions(saved_run.read(runs("sst2")), str(tmp_path / "a"))
  from_export = predict.write_predictions(hf_finetuned.read(str(tmp_path / "hf")),
                                          str(tmp_path / "b"), data_dir)
  assert read_tsv(from_workdir[0]) == read_tsv(from_export[0])


def test_transformers_own_classification_head_is_refused(tmp_path, runs):
  export_run(runs("sst2"), "hf", str(tmp_path / "hf"))
  model = transformers.ElectraForSequenceClassification.from_pretrained(tmp_path / "hf")
  with torch.no_grad():
    model.classifier.dense.weight.normal_()
  model.save_pretrained(tmp_path / "theirs")
  for name in ("vocab.txt", "tokenizer_config.json"):
    (tmp_path / "theirs" / name).write_bytes((tmp_path / "hf" / name).read_bytes())
  with pytest.raises(DataError, match="dense -> GELU -> out_proj, which ELECTRA's one-layer head"):
    hf_finetuned.read(str(tmp_path / "theirs"))


def test_predict_cli(tmp_path, runs):
  result = subprocess.run([sys.executable, "-m", "electra_jax.predict", f"--workdir={runs('stsb')}",
                           f"--out={tmp_path / 'out'}"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"wrote {tmp_path / 'out' / 'STS-B.tsv'}" in result.stderr
  export_run(runs("stsb"), "hf", str(tmp_path / "hf"))
  result = subprocess.run([sys.executable, "-m", "electra_jax.predict",
                           f"--workdir={tmp_path / 'hf'}"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      f"error: {tmp_path / 'hf'} is a transformers folder, which knows no data directory; give "
      "the data to predict with --input")


SHARED = REPO.parent / "shared" / "data"


@pytest.mark.skipif(not (SHARED / "SST-2" / "test.tsv").exists(),
                    reason="GLUE's SST-2 and STS-B test files are not in ../shared/data")
@pytest.mark.parametrize("task, rows", [("sst2", 1821), ("stsb", 1379)])
def test_glue_real_test_files_are_read_whole(tmp_path, runs, task, rows):
  (path,) = predict.write_predictions(saved_run.read(runs(task)), str(tmp_path), str(SHARED))
  predicted = read_tsv(path)
  assert [r[0] for r in predicted[1:]] == [str(i) for i in range(rows)]


@pytest.mark.skipif(not (SHARED / "conll2003" / "test.txt").exists(),
                    reason="CoNLL-2003's test file is not in ../shared/data")
def test_conll_real_test_file_is_tagged_whole(tmp_path, runs):
  source = SHARED / "conll2003" / "test.txt"
  (path,) = predict.write_predictions(saved_run.read(runs("conll")), str(tmp_path), str(source))
  ours = [line.split() for line in open(path, encoding="utf-8").read().splitlines() if line]
  theirs = [line.split() for line in open(source, encoding="utf-8").read().splitlines()
            if line.strip() and not line.startswith("-DOCSTART-")]
  assert [(w[0], w[1]) for w in ours] == [(t[0], t[-1]) for t in theirs]
