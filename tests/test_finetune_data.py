"""Fine-tuning data: GLUE's TSV quirks and TFDS, CoNLL files, SQuAD windows, and bad input."""

import json
import os
import types

import numpy as np
import pytest

import finetune_helpers as helpers
from convert_helpers import TRICKY
from electra_jax.data import tfds_source
from electra_jax.errors import ConfigError, DataError
from electra_jax.finetune import config as finetune_config
from electra_jax.finetune import conll, encoding, glue, squad
from electra_jax.vocabulary import CLS_ID, SEP_ID

# ---------------------------------------------------------------------------
# GLUE files as GLUE's download writes them
# ---------------------------------------------------------------------------

MNLI_TRAIN = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
              "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label")
MNLI_DEV = MNLI_TRAIN.replace("label1\t", "label1\tlabel2\tlabel3\tlabel4\tlabel5\t")


def mnli_row(index, premise, hypothesis, label, dev=False):
  labels = [label] * (5 if dev else 1)
  return "\t".join([str(index), "1", "1e", "fiction", "( x )", "( y )", "(S x)", "(S y)",
                    premise, hypothesis, *labels, label])


# task -> {split: file text}; each train file's examples: (first, second, target).
GLUE_FILES = {
    "cola": {"train": "gj04\t1\t\tThe fox jumped .\ngj04\t0\t*\tFox the jumped .\n",
             "dev": "cj99\t1\t\tIt \"quoted it .\n"},
    "sst2": {"train": "sentence\tlabel\nit 's a charming journey . \t1\nbleak \"and desperate\t0\n",
             "dev": "sentence\tlabel\nfine\t1\n"},
    "mrpc": {"train": "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
                      "1\t702876\t702977\tAmrozi accused .\tReferring to him .\n"
                      "0\t2108705\t2108831\tYucaipa owned .\tYucaipa bought .\n",
             "dev": "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tA .\tB .\n"},
    "stsb": {"train": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\t"
                      "sentence2\tscore\n0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\t"
                      "A plane is taking off.\tAn air plane is taking off.\t5.000\n"
                      "1\tmain-captions\tMSRvid\t2012test\t0004\tnone\tnone\tA man plays.\t"
                      "A man sings.\t0.5\n",
             "dev": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\t"
                    "sentence2\tscore\n7\tg\tf\ty\to\ts\ts\tA.\tB.\t2.5\n"},
    "qqp": {"train": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
                     "0\t1\t2\tHow do I learn?\tHow can I learn?\t1\n"
                     "1\t3\t4\tWhat is\n"  # a question cut by a stray newline: skipped
                     "a cat?\tWhat is a dog?\t0\n"
                     "2\t5\t6\tWhy?\tWhy not?\t0\n",
            "dev": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n9\t1\t2\tA?\tB?\t1\n"},
    "mnli": {"train": "\n".join([MNLI_TRAIN, mnli_row(0, "P one .", "H one .", "neutral"),
                                 mnli_row(1, "P two .", "H two .", "contradiction")]) + "\n",
             "dev_matched": "\n".join([MNLI_DEV, mnli_row(5, "P .", "H .", "entailment", True)]),
             "dev_mismatched": "\n".join([MNLI_DEV, mnli_row(6, "Q .", "G .", "neutral", True),
                                          mnli_row(7, "R .", "F .", "contradiction", True)])},
    "qnli": {"train": "index\tquestion\tsentence\tlabel\n0\tWho?\tHe did .\tentailment\n"
                      "1\tWhen?\tNo .\tnot_entailment\n",
             "dev": "index\tquestion\tsentence\tlabel\n0\tWhat?\tThat .\tentailment\n"},
    "rte": {"train": "index\tsentence1\tsentence2\tlabel\n0\tA b .\tA .\tentailment\n"
                     "1\tC .\tD .\tnot_entailment\n",
            "dev": "index\tsentence1\tsentence2\tlabel\n0\tE .\tF .\tnot_entailment\n"},
    "wnli": {"train": "index\tsentence1\tsentence2\tlabel\n0\tI saw it .\tIt saw .\t0\n"
                      "1\tThe cup fell .\tIt fell .\t1\n",
             "dev": "index\tsentence1\tsentence2\tlabel\n0\tX .\tY .\t1\n"},
}

EXPECTED_TRAIN = {
    "cola": (["The fox jumped .", "Fox the jumped ."], None, [1, 0]),
    "sst2": (["it 's a charming journey . ", 'bleak "and desperate'], None, [1, 0]),
    "mrpc": (["Amrozi accused .", "Yucaipa owned ."], ["Referring to him .", "Yucaipa bought ."],
             [1, 0]),
    "stsb": (["A plane is taking off.", "A man plays."],
             ["An air plane is taking off.", "A man sings."], [5.0, 0.5]),
    "qqp": (["How do I learn?", "Why?"], ["How can I learn?", "Why not?"], [1, 0]),
    "mnli": (["P one .", "P two ."], ["H one .", "H two ."], [2, 0]),
    "qnli": (["Who?", "When?"], ["He did .", "No ."], [0, 1]),
    "rte": (["A b .", "C ."], ["A .", "D ."], [0, 1]),
    "wnli": (["I saw it .", "The cup fell ."], ["It saw .", "It fell ."], [0, 1]),
}


def write_glue(root, task):
  for split, text in GLUE_FILES[task].items():
    helpers.write(os.path.join(root, glue.FORMATS[task].folder, f"{split}.tsv"), text)


@pytest.mark.parametrize("task", sorted(GLUE_FILES))
def test_every_glue_task_reads_its_files_with_their_quirks(tmp_path, task):
  write_glue(tmp_path, task)
  c = finetune_config.default_config(task)
  c.data_dir = str(tmp_path)
  train = glue.read_split(c, "train")
  first, second, targets = EXPECTED_TRAIN[task]
  assert train.first == first and train.second == second
  np.testing.assert_allclose(train.targets, targets)
  dev_sizes = {"dev_mismatched": 2} if task == "mnli" else {}
  for split in glue.FORMATS[task].dev_splits:
    assert len(glue.read_split(c, split).first) == dev_sizes.get(split, 1)


def test_mnli_evaluates_matched_and_mismatched_and_stsb_scores_are_scaled(tmp_path):
  write_glue(tmp_path, "mnli")
  write_glue(tmp_path, "stsb")
  tokenizer = helpers.tokenizer()
  c = finetune_config.default_config("mnli")
  c.update(data_dir=str(tmp_path), max_seq_length=16)
  data = glue.load(c, tokenizer)
  assert [e.name for e in data.evals] == ["dev_matched", "dev_mismatched"]
  assert data.num_outputs == 3
  logits = np.eye(3)[[2, 2]]  # mismatched: predicts neutral (right), then neutral (wrong)
  scores, write = data.evals[1].evaluate(logits)
  assert scores == {"accuracy": 0.5}
  write(str(tmp_path / "pred"))
  assert (tmp_path / "pred.tsv").read_text().splitlines() == [
      "index\tprediction\tlabel", "6\tneutral\tneutral", "7\tneutral\tcontradiction"]
  c = finetune_config.default_config("stsb")
  c.update(data_dir=str(tmp_path), max_seq_length=16, symmetric_pairs=True)
  data = glue.load(c, tokenizer)
  np.testing.assert_allclose(data.train["targets"], [1.0, 0.1, 1.0, 0.1])  # scores / 5, doubled
  first, second, _ = EXPECTED_TRAIN["stsb"]
  swapped = encoding.encode_texts(tokenizer, second[:1], first[:1], 16, "swapped")
  np.testing.assert_array_equal(data.train["input_ids"][2], swapped["input_ids"][0])


@pytest.mark.parametrize("text, message", [
    ("", "is empty"),
    ("sentence\tlabel\n", "has a header but no examples"),
    ("text\tlabel\nfine\t1\n", "has no column 'sentence' (its header has 'text', 'label')"),
    ("sentence\tlabel\nfine\tpositive\n",
     "line 2: unknown label 'positive'; SST-2's labels are 0, 1"),
    ("sentence\tlabel\nonly one column\n", "has no row with the 2 columns expected"),
])
def test_bad_glue_files_get_one_clear_error(tmp_path, text, message):
  helpers.write(str(tmp_path / "SST-2" / "train.tsv"), text)
  c = finetune_config.default_config("sst2")
  c.data_dir = str(tmp_path)
  with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
    glue.read_split(c, "train")


def test_missing_glue_folder_and_bad_stsb_scores(tmp_path):
  c = finetune_config.default_config("stsb")
  c.data_dir = str(tmp_path)
  with pytest.raises(DataError, match="STS-B/ folder as GLUE's download lays it out"):
    glue.read_split(c, "train")
  header = GLUE_FILES["stsb"]["dev"].splitlines()[0]
  for score, message in (("7.5", "outside STS-B's range"), ("high", "is not a number")):
    helpers.write(str(tmp_path / "STS-B" / "train.tsv"),
                  f"{header}\n0\tg\tf\ty\to\ts\ts\tA.\tB.\t{score}\n")
    with pytest.raises(DataError, match=message):
      glue.read_split(c, "train")


class FakeBuilder:
  """What glue.read_tfds uses of a TFDS builder, over records given in memory."""

  def __init__(self, records, label_names):
    self.records = records
    feature = types.SimpleNamespace(names=label_names)
    self.info = types.SimpleNamespace(features={"label": feature})

  def download_and_prepare(self):
    pass

  def as_dataset(self, split, shuffle_files):
    return self.records[split]


def test_glue_from_tfds_maps_label_names_and_ids(monkeypatch):
  mnli = FakeBuilder({"train": [dict(premise=b"P", hypothesis=b"H", label=2, idx=0),
                                dict(premise=b"Q", hypothesis=b"G", label=0, idx=1)],
                      "validation_mismatched": [dict(premise=b"R", hypothesis=b"F", label=1,
                                                     idx=0)]},
                     ["entailment", "neutral", "contradiction"])
  sst2 = FakeBuilder({"train": [dict(sentence=b"good", label=1, idx=0)],
                      "test": [dict(sentence=b"x", label=-1, idx=0)]}, ["negative", "positive"])
  builders = {"glue/mnli": mnli, "glue/sst2": sst2}
  fake = types.SimpleNamespace(as_numpy=lambda records: records)
  monkeypatch.setattr(tfds_source, "import_tfds", lambda user: fake)
  monkeypatch.setattr(tfds_source, "open_builder", lambda tfds, name: builders[name])
  c = finetune_config.default_config("mnli")
  c.data_dir = finetune_config.TFDS
  train = glue.read_split(c, "train")
  assert train.first == ["P", "Q"] and train.second == ["H", "G"]
  # GLUE's files order MNLI's labels contradiction, entailment, neutral.
  assert list(train.targets) == [0, 1]
  assert list(glue.read_split(c, "dev_mismatched").targets) == [2]
  assert list(glue.read_tfds("sst2", "train").targets) == [1]
  with pytest.raises(DataError, match="has no labels"):
    glue.read_tfds("sst2", "test")


def test_glue_through_tfds_itself(tmp_path, monkeypatch):
  """TFDS's own glue/mnli builder, its records replaced by TFDS's mock data."""
  tfds = pytest.importorskip("tensorflow_datasets", reason="the tfds extra is not installed")
  pytest.importorskip("tensorflow", reason="the tfds extra (tensorflow) is not installed")
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
  c = finetune_config.default_config("mnli")
  c.data_dir = finetune_config.TFDS
  with tfds.testing.mock_data(num_examples=6, data_dir=str(tmp_path)):
    train = glue.read_split(c, "train")
    dev = glue.read_split(c, "dev_mismatched")
  assert len(train.first) == len(train.second) == len(dev.first) == 6
  assert all(isinstance(text, str) for text in train.first + dev.second)
  assert set(train.targets) <= {0, 1, 2} and train.targets.dtype == np.int32


def test_glue_from_tfds_without_tfds_says_how_to_install(monkeypatch):
  import builtins
  real_import = builtins.__import__

  def without_tfds(name, *args, **kwargs):
    if name.startswith("tensorflow"):
      raise ImportError(name=name)
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", without_tfds)
  with pytest.raises(DataError, match=r"GLUE from TFDS .* pip install 'electra_jax\[tfds\]'"):
    glue.read_tfds("sst2", "train")


def test_pairs_are_truncated_longest_first_and_packed_with_segments():
  first, second, cut = encoding.truncate_pair([1, 2, 3, 4, 5], [6, 7], 5)
  assert (first, second, cut) == ([1, 2, 3], [6, 7], True)
  first, second, cut = encoding.truncate_pair([1, 2], [6, 7, 8], 4)
  assert (first, second, cut) == ([1, 2], [6, 7], True)
  ids, token_types = encoding.pack([10, 11], [12], 8)
  assert list(ids) == [CLS_ID, 10, 11, SEP_ID, 12, SEP_ID, 0, 0]
  assert list(token_types) == [0, 0, 0, 0, 1, 1, 0, 0]


# ---------------------------------------------------------------------------
# CoNLL
# ---------------------------------------------------------------------------


def test_conll_rows_label_first_tokens_and_split_long_sentences(tmp_path):
  path = tmp_path / "train.txt"
  helpers.write(str(path), "-DOCSTART- -X- -X- O\n\nthe DT B-NP O\nunaffable JJ I-NP B-ANI\n\n"
                "dog NN B-NP B-ANI\nis VBZ B-VP O\nlazy JJ B-ADJP O\n")
  sentences = conll.read_conll(str(path), tag_column=-1)
  assert [s.words for s in sentences] == [["the", "unaffable"], ["dog", "is", "lazy"]]
  assert sentences[0].tags == ["O", "B-ANI"]
  assert conll.read_conll(str(path), tag_column=2)[1].tags == ["B-NP", "B-VP", "B-ADJP"]
  tokenizer = helpers.tokenizer()
  tag_ids = {"B-ANI": 0, "O": 1}
  unaffable = tokenizer.encode(["unaffable"])[0]
  assert [tokenizer.id_to_piece(i) for i in unaffable] == ["un", "##aff", "##able"]
  rows = conll.encode(sentences, tokenizer, tag_ids, max_seq_length=6)  # room for 4 tokens
  features = rows.features
  assert list(features["input_ids"][0]) == [CLS_ID, *tokenizer.encode(["the"])[0], *unaffable,
                                            SEP_ID]
  assert list(features["targets"][0]) == [-1, 1, 0, -1, -1, -1]  # only first tokens count
  assert rows.sentence == [0, 1] and rows.first_token == [[1, 2], [1, 2, 3]]
  # Room for 2 tokens: "unaffable" starts a row of its own (cut to 2 pieces), "lazy" too.
  split = conll.encode(sentences, tokenizer, tag_ids, max_seq_length=4)
  assert split.sentence == [0, 0, 1, 1] and split.first_token == [[1], [1], [1, 2], [1]]
  assert list(split.features["input_ids"][1]) == [CLS_ID, *unaffable[:2], SEP_ID]


def test_conll_scores_predictions_put_back_together(tmp_path):
  helpers.write_conll(str(tmp_path), sentences=8)
  c = finetune_config.default_config("conll")
  c.update(data_dir=str(tmp_path), max_seq_length=8)
  data = conll.load(c, helpers.tokenizer())
  eval_set = data.evals[0]
  dev = conll.read_conll(str(tmp_path / "dev.txt"), -1)
  rows = conll.encode(dev, helpers.tokenizer(), {"B-ANI": 0, "I-ANI": 1, "O": 2}, 8)
  assert len(rows.sentence) > len(dev)  # some sentences took two rows
  perfect = np.full(eval_set.features["input_ids"].shape, 2)
  for row, firsts in enumerate(rows.first_token):
    sentence = dev[rows.sentence[row]]
    before = sum(len(f) for r, f in enumerate(rows.first_token[:row])
                 if rows.sentence[r] == rows.sentence[row])
    perfect[row, firsts] = [{"B-ANI": 0, "I-ANI": 1, "O": 2}[t]
                            for t in sentence.tags[before:before + len(firsts)]]
  scores, write = eval_set.evaluate(perfect)
  assert scores["f1"] == 1.0 and scores["accuracy"] == 1.0
  write(str(tmp_path / "pred"))
  first_line = (tmp_path / "pred.txt").read_text().splitlines()[0].split()
  assert first_line == [dev[0].words[0], dev[0].tags[0], dev[0].tags[0]]


@pytest.mark.parametrize("text, message", [
    ("", "has no sentences"),
    ("a NN O\nb O\n", "line 2: 2 columns where the file's first line has 3"),
])
def test_bad_conll_files_get_one_clear_error(tmp_path, text, message):
  helpers.write(str(tmp_path / "train.txt"), text)
  with pytest.raises(DataError, match=message):
    conll.read_conll(str(tmp_path / "train.txt"), -1)


def test_conll_folder_without_dev_file(tmp_path):
  helpers.write(str(tmp_path / "train.txt"), "a NN O\n")
  with pytest.raises(DataError, match="has no dev.txt or valid.txt or eng.testa"):
    conll.load(helpers.config("conll", "unused", str(tmp_path)), helpers.tokenizer())


# ---------------------------------------------------------------------------
# SQuAD
# ---------------------------------------------------------------------------


def test_offsets_map_tokens_back_to_the_text():
  tokenizer = helpers.tokenizer()
  for line in TRICKY + ["The quick brown fox's dog, lazy."]:
    ids, offsets = tokenizer.encode_with_offsets(line)
    assert ids == tokenizer.encode([line])[0]
    assert all(0 <= start < end <= len(line) for start, end in offsets)
  ids, offsets = tokenizer.encode_with_offsets("The fox's dog")
  line = "The fox's dog"
  assert [line[s:e] for s, e in offsets] == ["The", "fox", "'", "s", "dog"]


def test_squad_windows_cover_long_contexts_and_find_the_answer():
  tokenizer = helpers.tokenizer()
  context = "the fox is a dog . the dog is brown . the fox is lazy ."
  question = squad.Question("q", "what is the dog ?", context,
                            [("brown", context.index("brown"))])
  c = helpers.config("squad1", "unused", "unused")  # question <= 12 tokens, stride 8
  c.max_seq_length = 20  # room for 12 of the context's 15 tokens
  windows = squad.encode([question], tokenizer, c, training=True)
  features = windows.features
  assert len(windows.question) > 1  # the context needs several windows
  q_len = len(tokenizer.encode([question.question])[0])
  for row in range(len(windows.question)):
    ids = features["input_ids"][row]
    start, end = features["start_positions"][row], features["end_positions"][row]
    if start:
      assert start == end and context[slice(*windows.offsets[row][start])] == "brown"
    assert list(ids[:q_len + 2]) == [CLS_ID, *tokenizer.encode([question.question])[0], SEP_ID]
  assert sum(features["start_positions"] > 0) >= 1
  # Every context token takes its prediction from exactly one window.
  taken = [tuple(o) for row in range(len(windows.question))
           for o, m in zip(windows.offsets[row], windows.max_context[row]) if m]
  assert sorted(taken) == sorted(set(taken)) and len(taken) == len(
      tokenizer.encode_with_offsets(context)[1])

  # The answer: the best start + end pair; for 2.0, "no answer" when [CLS] scores higher.
  eval_windows = squad.encode([question], tokenizer, c, training=False)
  row = int(np.argmax(features["start_positions"] > 0))
  starts = np.zeros((len(windows.question), c.max_seq_length))
  ends = np.zeros_like(starts)
  starts[row, features["start_positions"][row]] = ends[row, features["end_positions"][row]] = 5
  # Null odds: [CLS]'s start + end score minus the best span's (0 + 0 against 5 + 5).
  assert squad.predict_answers([question], eval_windows, starts, ends, c, 1) == (
      {"q": "brown"}, {"q": -10.0})
  starts[:, 0] = ends[:, 0] = 6
  assert squad.predict_answers([question], eval_windows, starts, ends, c, 2) == (
      {"q": ""}, {"q": 2.0})
  assert squad.predict_answers([question], eval_windows, starts, ends, c, 1)[0] == {"q": "brown"}


def test_bad_squad_input(tmp_path):
  path = tmp_path / "train-v1.1.json"
  for text, message in (("{", "cannot read .* as JSON"),
                        ('{"data": [{"paragraphs": [{"qas": []}]}]}', "missing or wrong 'context'"),
                        ('{"data": []}', "has no questions")):
    path.write_text(text)
    with pytest.raises(DataError, match=message):
      squad.read_squad(str(path), version=1)
  path.write_text(json.dumps(helpers.squad_document(2, 4, 0)))
  with pytest.raises(DataError, match="has no answer, which SQuAD 1.1 does not allow"):
    squad.read_squad(str(path), version=1)
  c = helpers.config("squad1", "unused", "unused")
  c.max_query_length = 29
  with pytest.raises(ConfigError, match="leaves no room for the context"):
    squad.encode(squad.read_squad(str(path), version=2), helpers.tokenizer(), c, training=True)
