"""GLUE: the nine tasks' TSV files as GLUE's download lays them out, TFDS's `glue/*`, or
Hugging Face datasets' GLUE (`hf:nyu-mll/glue`, or a saved DatasetDict of one task).

`data_dir` is the GLUE root with one folder per task (CoLA/, SST-2/, MRPC/,
STS-B/, QQP/, MNLI/, QNLI/, RTE/, WNLI/), each with train.tsv and dev.tsv
(MNLI: dev_matched.tsv and dev_mismatched.tsv). The files' quirks are handled:
CoLA's train and dev have no header (columns: source, label, original label,
sentence); MRPC's header can start with a byte-order mark; QQP has rows cut
short by stray newlines, which are skipped and reported, as the original code
skips them. Files are read without quote processing (their texts contain
unmatched quotes). Columns are found by their header names, so the extra
columns of MNLI's dev files (five annotators' labels) change nothing.
"""

import csv
import dataclasses
import os

import ml_collections
import numpy as np
from absl import logging

from electra_jax import metrics as metrics_lib
from electra_jax.data import hf_datasets_source, tfds_source
from electra_jax.data.any_tokenizer import AnyTokenizer
from electra_jax.errors import DataError
from electra_jax.finetune import config as config_lib
from electra_jax.finetune import encoding, tasks
from electra_jax.runtime import fileio
from electra_jax.runtime.fileio import atomic_write

# STS-B's similarity scores lie in [0, 5]; the model regresses them divided by 5, as the
# original code does.
STSB_MAX = 5.0
_MALFORMED_SHOWN = 5  # line numbers of skipped rows named in the warning


@dataclasses.dataclass(frozen=True)
class GlueFormat:
  """Where a task's files are and which columns hold what.

  Columns are header names, or indices for CoLA's headerless files. `labels`
  lists the label strings in id order (None: a regression score).
  """

  folder: str
  text_columns: tuple[str | int, ...]
  label_column: str | int
  labels: tuple[str, ...] | None
  tfds_features: tuple[str, ...]  # the same texts in TFDS's glue/<task>
  dev_splits: tuple[str, ...] = ("dev",)
  tfds_dev_splits: tuple[str, ...] = ("validation",)
  has_header: bool = True


FORMATS: dict[str, GlueFormat] = {
    "cola": GlueFormat("CoLA", (3,), 1, ("0", "1"), ("sentence",), has_header=False),
    "sst2": GlueFormat("SST-2", ("sentence",), "label", ("0", "1"), ("sentence",)),
    "mrpc": GlueFormat("MRPC", ("#1 String", "#2 String"), "Quality", ("0", "1"),
                       ("sentence1", "sentence2")),
    "stsb": GlueFormat("STS-B", ("sentence1", "sentence2"), "score", None,
                       ("sentence1", "sentence2")),
    "qqp": GlueFormat("QQP", ("question1", "question2"), "is_duplicate", ("0", "1"),
                      ("question1", "question2")),
    "mnli": GlueFormat("MNLI", ("sentence1", "sentence2"), "gold_label",
                       ("contradiction", "entailment", "neutral"), ("premise", "hypothesis"),
                       dev_splits=("dev_matched", "dev_mismatched"),
                       tfds_dev_splits=("validation_matched", "validation_mismatched")),
    "qnli": GlueFormat("QNLI", ("question", "sentence"), "label", ("entailment", "not_entailment"),
                       ("question", "sentence")),
    "rte": GlueFormat("RTE", ("sentence1", "sentence2"), "label", ("entailment", "not_entailment"),
                      ("sentence1", "sentence2")),
    "wnli": GlueFormat("WNLI", ("sentence1", "sentence2"), "label", ("0", "1"),
                       ("sentence1", "sentence2")),
}
SYMMETRIC_TASKS = ("mrpc", "stsb")  # whose two sentences can be swapped (symmetric_pairs)


def is_hf_source(data_dir: str) -> bool:
  """Whether `data_dir` names Hugging Face datasets' GLUE rather than GLUE's files."""
  return (data_dir.startswith(hf_datasets_source.PREFIX) or
          hf_datasets_source.is_saved_dataset(data_dir))


@dataclasses.dataclass(frozen=True)
class Examples:
  """A split's texts and targets: label ids, or STS-B scores in [0, 5]."""

  ids: list[str]  # the row's index column, or its number in the file
  first: list[str]
  second: list[str] | None
  targets: np.ndarray


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


def _numbered_rows(path: str, folder: str) -> list[tuple[int, list[str]]]:
  """A TSV file's non-empty rows with their line numbers; one DataError for a file that cannot
  be used."""
  try:
    with fileio.open_text(path) as f:  # a BOM dropped
      rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
  except FileNotFoundError:
    raise DataError(f"{path} does not exist; the data directory must be the GLUE root with a "
                    f"{folder}/ folder as GLUE's download lays it out") from None
  except UnicodeDecodeError as error:
    raise DataError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
  except (OSError, csv.Error) as error:
    raise DataError(f"cannot read {path}: {error}") from None
  numbered = [(number, row) for number, row in enumerate(rows, start=1) if row]
  if not numbered:
    raise DataError(f"{path} is empty")
  return numbered


def read_tsv(path: str, task: str) -> Examples:
  """A GLUE TSV file's examples; one DataError for a file that cannot be used."""
  fmt = FORMATS[task]
  numbered = _numbered_rows(path, fmt.folder)
  if fmt.has_header:
    (_, header), numbered = numbered[0], numbered[1:]
    header = [name.strip() for name in header]
    missing = [c for c in (*fmt.text_columns, fmt.label_column) if c not in header]
    if missing:
      raise DataError(f"{path} has no column {', '.join(map(repr, missing))} (its header has "
                      f"{', '.join(map(repr, header))}); is it the {fmt.folder} file of GLUE?")
    width = len(header)
    text_at = [header.index(c) for c in fmt.text_columns]
    label_at = header.index(fmt.label_column)
    index_at = header.index("index") if "index" in header else None
  else:
    width = 4
    text_at, label_at, index_at = list(fmt.text_columns), fmt.label_column, None
  if not numbered:
    raise DataError(f"{path} has a header but no examples")

  ids, texts, targets, malformed = [], [], [], []
  for number, row in numbered:
    if len(row) != width:
      malformed.append(number)
      continue
    ids.append(row[index_at] if index_at is not None else str(len(ids)))
    texts.append([row[i] for i in text_at])
    targets.append(_target(row[label_at], fmt, f"{path}, line {number}"))
  if malformed:
    shown = ", ".join(map(str, malformed[:_MALFORMED_SHOWN]))
    logging.warning("%s: skipped %d row(s) without the %d columns of the %s (lines %s%s)", path,
                    len(malformed), width, "header" if fmt.has_header else "format", shown,
                    "..." if len(malformed) > _MALFORMED_SHOWN else "")
  if not ids:
    raise DataError(f"{path} has no row with the {width} columns expected")
  return _examples(ids, texts, targets, fmt)


def test_files(task: str, data_dir: str) -> dict[str, str]:
  """The unlabelled test files of `task` under the GLUE root `data_dir`, by the name GLUE's
  server wants their predictions under (MNLI: matched, mismatched and, where the download has
  it, the diagnostic set AX, which MNLI's model predicts)."""
  folder = os.path.join(data_dir, FORMATS[task].folder)
  if task != "mnli":
    return {FORMATS[task].folder: os.path.join(folder, "test.tsv")}
  files = {"MNLI-m": os.path.join(folder, "test_matched.tsv"),
           "MNLI-mm": os.path.join(folder, "test_mismatched.tsv")}
  diagnostic = os.path.join(data_dir, "diagnostic", "diagnostic.tsv")
  if fileio.exists(diagnostic):
    files["AX"] = diagnostic
  return files


def hf_test_splits(task: str) -> dict[str, str]:
  """The test splits of Hugging Face datasets' GLUE, by the submission file's name."""
  if task == "mnli":
    return {"MNLI-m": "test_matched", "MNLI-mm": "test_mismatched"}
  return {FORMATS[task].folder: "test"}


def read_test_tsv(path: str, task: str) -> Examples:
  """A test file's examples (no labels): its columns found by their header names, which every
  GLUE test file has (CoLA's included), its index in `index` (QQP: `id`)."""
  fmt = FORMATS[task]
  (_, header), *numbered = _numbered_rows(path, fmt.folder)
  header = [name.strip() for name in header]
  text_columns = ("sentence",) if task == "cola" else fmt.text_columns
  index_column = next((name for name in ("index", "id") if name in header), None)
  missing = [c for c in (*text_columns, index_column) if c not in header]
  if missing or index_column is None:
    raise DataError(f"{path} has no column {', '.join(map(repr, missing or ['index']))} (its "
                    f"header has {', '.join(map(repr, header))}); is it the {fmt.folder} test "
                    "file of GLUE?")
  text_at = [header.index(c) for c in text_columns]
  ids, texts = [], []
  for number, row in numbered:
    if len(row) != len(header):
      raise DataError(f"{path}, line {number}: {len(row)} columns where the header has "
                      f"{len(header)}; every test row needs a prediction")
    ids.append(row[header.index(index_column)])
    texts.append([row[i] for i in text_at])
  return _examples(ids, texts, [], fmt)


def submission(task: str, examples: Examples, outputs: np.ndarray) -> str:
  """GLUE's submission file: `index<TAB>prediction`, a label name or STS-B's score in [0, 5]."""
  fmt = FORMATS[task]
  outputs = np.asarray(outputs)
  if fmt.labels is None:
    shown = [f"{p:.3f}" for p in np.clip(outputs.reshape(-1) * STSB_MAX, 0, STSB_MAX)]
  else:
    shown = [fmt.labels[p] for p in outputs.argmax(axis=-1)]
  return "".join(["index\tprediction\n"] + [f"{i}\t{p}\n" for i, p in zip(examples.ids, shown)])


def _target(value: str, fmt: GlueFormat, where: str) -> float:
  if fmt.labels is not None:
    if value not in fmt.labels:
      raise DataError(f"{where}: unknown label {value!r}; {fmt.folder}'s labels are "
                      f"{', '.join(fmt.labels)}")
    return fmt.labels.index(value)
  try:
    score = float(value)
  except ValueError:
    raise DataError(f"{where}: the score {value!r} is not a number") from None
  if not 0 <= score <= STSB_MAX:
    raise DataError(f"{where}: the score {score} is outside STS-B's range [0, {STSB_MAX:g}]")
  return score


def _examples(ids: list[str], texts: list[list[str]], targets: list[float],
              fmt: GlueFormat) -> Examples:
  pair = len(fmt.text_columns) == 2
  return Examples(ids, [t[0] for t in texts], [t[1] for t in texts] if pair else None,
                  np.asarray(targets, np.float32 if fmt.labels is None else np.int32))


def read_tfds(task: str, split: str) -> Examples:
  """A split of TFDS's glue/<task>; its integer labels mapped to GLUE's label strings' ids."""
  tfds = tfds_source.import_tfds("GLUE from TFDS (--config.data_dir=tfds)")
  dataset = f"glue/{task}"
  builder = tfds_source.open_builder(tfds, dataset)
  builder.download_and_prepare()
  names = builder.info.features["label"].names if FORMATS[task].labels is not None else None
  records = tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))
  return _labelled_records(task, records, names, f"the TFDS split {dataset}:{split}")


def read_hf(task: str, split: str, data_dir: str, labelled: bool = True) -> Examples:
  """A split of Hugging Face datasets' GLUE: `hf:NAME` (loaded with the task as its config,
  e.g. hf:nyu-mll/glue) or the directory of a DatasetDict that save_to_disk wrote. Records
  have TFDS's fields (sentence, label, idx, ...) and class names. Without `labelled` (a test
  split, whose labels are -1), only the texts and their idx are read."""
  datasets = hf_datasets_source.import_datasets(
      f"GLUE from Hugging Face datasets (--config.data_dir={data_dir})")
  where = f"the split '{split}' of {data_dir}"
  try:
    if data_dir.startswith(hf_datasets_source.PREFIX):
      name = data_dir[len(hf_datasets_source.PREFIX):]
      dataset = datasets.load_dataset(name, task, split=split)
    else:
      dataset = datasets.load_from_disk(data_dir)[split]
  except Exception as error:  # pylint: disable=broad-except  # datasets raises many kinds
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    raise DataError(f"cannot read {where}: {first_line}") from None
  if not labelled:
    fmt = FORMATS[task]
    texts = [[_text(record[f]) for f in fmt.tfds_features] for record in dataset]
    return _examples([str(i) for i in dataset["idx"]], texts, [], fmt)
  label = dataset.features.get("label")
  names = getattr(label, "names", None) if FORMATS[task].labels is not None else None
  return _labelled_records(task, iter(dataset), names, where)


def _labelled_records(task: str, records, names: list[str] | None, where: str) -> Examples:
  """Examples from records with TFDS's GLUE fields; integer labels named by `names`."""
  fmt = FORMATS[task]
  ids, texts, targets = [], [], []
  for record in records:
    texts.append([_text(record[feature]) for feature in fmt.tfds_features])
    ids.append(str(record["idx"]))
    label = record["label"]
    if fmt.labels is None:
      targets.append(float(label))
    elif label < 0:
      raise DataError(f"{where} has no labels (a test split)")
    else:
      # The names; where GLUE's files use the same words (MNLI, QNLI, RTE) they map by
      # name, elsewhere GLUE's "0"/"1" are the integer labels.
      name = names[label] if names else str(label)
      targets.append(fmt.labels.index(name if name in fmt.labels else str(label)))
  if not ids:
    raise DataError(f"{where} is empty")
  return _examples(ids, texts, targets, fmt)


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_split(config: ml_collections.ConfigDict, split: str) -> Examples:
  """`split` ("train" or one of the format's dev splits) from the files or from TFDS."""
  fmt = FORMATS[config.task]
  named_split = "train" if split == "train" else fmt.tfds_dev_splits[fmt.dev_splits.index(split)]
  if config.data_dir == config_lib.TFDS:
    return read_tfds(config.task, named_split)
  if is_hf_source(config.data_dir):
    return read_hf(config.task, named_split, config.data_dir)
  return read_tsv(os.path.join(config.data_dir, fmt.folder, f"{split}.tsv"), config.task)


# ---------------------------------------------------------------------------
# Encoding, metrics and predictions
# ---------------------------------------------------------------------------


def load(config: ml_collections.ConfigDict, tokenizer: AnyTokenizer) -> tasks.TaskData:
  """The task's training rows and dev splits, encoded for the model."""
  task, fmt = tasks.TASKS[config.task], FORMATS[config.task]
  train = read_split(config, "train")
  first, second, targets = train.first, train.second, train.targets
  if config.symmetric_pairs and config.task in SYMMETRIC_TASKS:
    first, second = first + second, second + first
    targets = np.concatenate([targets, targets])
  train_rows = encoding.encode_texts(tokenizer, first, second, config.max_seq_length, "train")
  train_rows["targets"] = targets / STSB_MAX if fmt.labels is None else targets
  evals = []
  for split in fmt.dev_splits:
    examples = read_split(config, split)
    features = encoding.encode_texts(tokenizer, examples.first, examples.second,
                                     config.max_seq_length, split)
    evals.append(tasks.EvalSet(split, features,
                               lambda outputs, e=examples: _evaluate(task, fmt, e, outputs)))
  return tasks.TaskData(train_rows, tuple(evals),
                        num_outputs=1 if fmt.labels is None else len(fmt.labels),
                        labels=fmt.labels)


def _evaluate(task: tasks.Task, fmt: GlueFormat, examples: Examples, outputs: np.ndarray):
  """The task's metrics from the model's outputs (logits, or scores / 5)."""
  outputs = np.asarray(outputs)
  if fmt.labels is None:
    predictions = outputs.reshape(-1) * STSB_MAX
    metric = {"pearson": metrics_lib.pearson, "spearman": metrics_lib.spearman}
    shown = [f"{p:.3f}" for p in predictions]
    gold = [f"{t:g}" for t in examples.targets]
  else:
    predictions = outputs.argmax(axis=-1)
    metric = {"accuracy": metrics_lib.accuracy, "f1": metrics_lib.f1_binary,
              "matthews_corrcoef": metrics_lib.matthews_corrcoef}
    shown = [fmt.labels[p] for p in predictions]
    gold = [fmt.labels[t] for t in examples.targets]
  scores = {name: metric[name](predictions, examples.targets) for name in task.metrics}

  def write(path: str) -> None:
    lines = ["index\tprediction\tlabel"] + [f"{i}\t{p}\t{g}"
                                           for i, p, g in zip(examples.ids, shown, gold)]
    atomic_write(path + ".tsv", "\n".join(lines) + "\n")

  return scores, write
