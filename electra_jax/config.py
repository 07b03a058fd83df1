"""The config schema: every field, its default, and the values it may take.

`configs/*.py` start from `default_config()` and change what their size needs,
so every run has the same fields and any of them can be overridden with
`--config.section.field=value`. `validate()` runs before anything is compiled
or read and turns a bad value into one `ConfigError` naming the field.
"""

import math
from typing import Any, Callable

import ml_collections
from ml_collections import config_dict

from electra_jax.errors import ConfigError

DTYPES = ("float32", "bfloat16")
ATTENTION_IMPLEMENTATIONS = ("einsum", "dot_product")
REMAT_POLICIES = ("none", "full", "dots")
NONFINITE_POLICIES = ("stop", "skip")

# The device mesh's axes, outermost first: pure data parallelism, data parallelism
# with parameters and optimizer state sharded (FSDP / ZeRO-3), and tensor
# (Megatron-style) parallelism inside layers, which needs the fastest links.
MESH_AXES = ("data", "fsdp", "tensor")

# Which mesh axes each logical axis of the model is split over ("" = replicated).
# The model names every parameter and main activation dimension with these
# (models/encoder.py); earlier rules win when two dimensions of one array ask
# for the same mesh axis. Parameter axes first, then activation axes.
DEFAULT_AXIS_RULES = (
    ("vocab", "tensor"),  # vocabulary rows of the word embeddings, the MLM bias
    ("embed", "fsdp"),  # embedding width E
    ("hidden", "fsdp"),  # a Transformer stack's width H
    ("mlp", "tensor"),  # feed-forward width, discriminator head width
    ("heads", "tensor"),  # attention heads
    ("kv", ""),  # width of one head
    ("batch", "data,fsdp"),  # examples of a batch
    ("length", ""),  # sequence positions
    ("activation_embed", ""),
    ("activation_hidden", ""),
    ("activation_mlp", "tensor"),
    ("activation_heads", "tensor"),
    ("activation_vocab", "tensor"),
)


# The model sizes, by name: what each configs/<name>.py starts from (`sized_config`).
# Small, Base and Large are the paper's (ELECTRA.md); the generator is the
# discriminator scaled down by `generator_size` (1/4 Small, 1/3 Base, 1/4 Large).
# Tiny is ours: a 1.5M-parameter model that trains on a laptop CPU in minutes.
MODEL_SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(vocab_size=8000, embedding_size=128, hidden_size=128, num_layers=2,
                 num_heads=2, intermediate_size=512, generator_size=0.5),
    "small": dict(embedding_size=128, hidden_size=256, num_layers=12, num_heads=4,
                  intermediate_size=1024, generator_size=0.25),
    "base": dict(embedding_size=768, hidden_size=768, num_layers=12, num_heads=12,
                 intermediate_size=3072, generator_size=1 / 3),
    "large": dict(embedding_size=1024, hidden_size=1024, num_layers=24, num_heads=16,
                  intermediate_size=4096, generator_size=0.25),
}


def sized_config(size: str) -> ml_collections.ConfigDict:
  """`default_config()` with the model of `size` (a key of MODEL_SIZES)."""
  if size not in MODEL_SIZES:
    raise ConfigError(f"unknown model size {size!r}; known: {', '.join(MODEL_SIZES)}")
  config = default_config()
  config.model.update(MODEL_SIZES[size])
  return config


def default_config() -> ml_collections.ConfigDict:
  """ELECTRA-Small with the paper's pre-training hyperparameters."""
  c = ml_collections.ConfigDict()

  c.model = ml_collections.ConfigDict()
  c.model.vocab_size = 30522
  c.model.embedding_size = 128
  c.model.hidden_size = 256
  c.model.num_layers = 12
  c.model.num_heads = 4
  c.model.intermediate_size = 1024
  # The generator is the discriminator scaled down: this fraction of its
  # hidden size, FFN size and heads (ELECTRA.md: 1/4 Small, 1/3 Base, 1/4 Large).
  c.model.generator_size = 0.25
  c.model.generator_layers = 1.0  # fraction of the discriminator's layers
  c.model.max_position_embeddings = 512
  c.model.type_vocab_size = 2
  c.model.dropout_rate = 0.1
  c.model.attention_dropout_rate = 0.1
  c.model.initializer_range = 0.02
  c.model.layer_norm_eps = 1e-12
  # Compute dtype of the matmuls: "bfloat16" is mixed precision (parameters, optimizer,
  # LayerNorm, softmax, residuals and losses stay float32).
  c.model.dtype = "float32"
  # "einsum": attention written out, with attention dropout. "dot_product":
  # jax.nn.dot_product_attention (cuDNN's fused kernel on GPU in bfloat16), no
  # attention dropout (set model.attention_dropout_rate=0).
  c.model.attention = "einsum"
  # Activation memory for compute: "full" recomputes each layer in the backward
  # pass, "dots" keeps the dense layers' outputs and recomputes the rest.
  c.model.remat = "none"

  # "electra": replaced token detection (a generator corrupts, the discriminator
  # spots). "mlm": BERT's masked language modelling with the discriminator-sized
  # encoder alone, for comparisons at equal compute (model.generator_* unused).
  c.objective = "electra"

  # Which tokens are picked and what they become; shared by both objectives.
  c.masking = ml_collections.ConfigDict()
  c.masking.mask_rate = 0.15
  # Of the picked tokens, these shares become [MASK] and a random token; the rest
  # stay as they are. Unset: the objective's own (masking_probs).
  c.masking.mask_token_prob = config_dict.placeholder(float)
  c.masking.random_token_prob = config_dict.placeholder(float)
  # Unset: int((mask_rate + 0.005) * max_seq_length), as the original code.
  c.masking.max_predictions_per_seq = config_dict.placeholder(int)

  # ELECTRA only: the loss weights and the generator's sampling temperature.
  c.electra = ml_collections.ConfigDict()
  c.electra.gen_weight = 1.0
  c.electra.disc_weight = 50.0
  c.electra.temperature = 1.0

  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 5e-4
  c.optim.warmup_steps = 10_000
  c.optim.weight_decay = 0.01
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.eps = 1e-6
  c.optim.max_grad_norm = 1.0

  c.train = ml_collections.ConfigDict()
  c.train.steps = 1_000_000
  c.train.batch_size = 128
  # Microbatches per step: the batch is split, their gradients summed (lax.scan),
  # one update; same result as one batch but activations for batch_size / this.
  c.train.grad_accum_steps = 1
  c.train.seed = 0
  c.train.log_every = 100
  c.train.eval_every = 10_000  # 0: evaluate only at the end
  c.train.eval_batches = 20
  # A directory with discriminator/ and generator/ Hugging Face ELECTRA folders
  # (as `electra_jax.export --format=hf` writes them) to start from; empty: random init.
  c.train.init_from = ""
  c.train.dry_run = False  # compile, report memory and FLOPs per step, exit
  # A step whose loss or gradient is NaN or Inf never updates the state; then
  # "stop": end the run (its checkpoints are all from before that step), or
  # "skip": go on with the next batch.
  c.train.on_nonfinite = "stop"

  # Checkpoints in <workdir>/checkpoints: a run started again continues from the newest.
  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 1000  # also saved at the last step and on SIGTERM
  c.checkpoint.keep = 3  # the newest kept; older ones go once a newer one is complete
  c.checkpoint.keep_every = 0  # also keep, for good, those whose step is a multiple; 0: none
  c.checkpoint.asynchronous = True  # written in the background while training goes on
  # Continue a workdir made with other values of fields that change the results
  # (steps, learning rate, batch size, ...). Model sizes and tokenizer never change.
  c.checkpoint.allow_config_change = False

  # The device mesh: how many devices along each axis. -1 takes the devices the
  # others leave (at most one -1); the product must equal the device count.
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1
  c.mesh.fsdp = 1
  c.mesh.tensor = 1
  c.mesh.rules = ml_collections.ConfigDict(dict(DEFAULT_AXIS_RULES))

  c.data = ml_collections.ConfigDict()
  # Empty: the built-in corpus (Python's own documentation). Else paths or globs
  # (comma-separated) of text, JSON-lines or WikiExtractor files (.gz too), or tfds:NAME.
  c.data.source = ""
  c.data.text_field = "text"  # the field holding the text in JSON lines and TFDS records
  c.data.tfds_split = "train"  # the split read from a tfds: source
  c.data.dir = ""  # where the prepared shards go; empty: <workdir>/data
  c.data.num_workers = 0  # processes preparing the data; 0: one per CPU core
  c.data.max_seq_length = 128
  c.data.lowercase = True
  c.data.eval_fraction = 0.02  # share of documents held out for evaluation
  c.data.tokenizer_sentences = 1_000_000  # lines sampled to train the tokenizer
  c.data.single_segment_prob = 0.1
  c.data.short_seq_prob = 0.05
  # Shorter documents are skipped (and counted): their examples would be nearly all padding.
  c.data.min_document_tokens = 5
  return c


OBJECTIVES = ("electra", "mlm")
# (mask_token_prob, random_token_prob) of each objective when the config leaves them
# unset: ELECTRA's original code masks 85% and keeps 15%; BERT masks 80%, puts a
# random token at 10% and keeps 10%.
DEFAULT_MASKING_PROBS = {"electra": (0.85, 0.0), "mlm": (0.8, 0.1)}


def max_predictions_per_seq(config: ml_collections.ConfigDict) -> int:
  """Masked positions per example: the config's value or the original's rule."""
  if config.masking.max_predictions_per_seq is not None:
    return config.masking.max_predictions_per_seq
  rate = config.masking.mask_rate
  return max(1, int((rate + 0.005) * config.data.max_seq_length))


def masking_probs(config: ml_collections.ConfigDict) -> tuple[float, float]:
  """(mask_token_prob, random_token_prob): the config's, or its objective's own where unset."""
  defaults = DEFAULT_MASKING_PROBS[config.objective]
  given = (config.masking.mask_token_prob, config.masking.random_token_prob)
  return tuple(default if value is None else value for value, default in zip(given, defaults))


def resolved(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy with the objective-dependent defaults filled in: what a run records.

  Saved configs and checkpoint metadata hold the values a run used, so that a
  run continued with an explicit 0.85 and one with the default compare equal.
  """
  config = config.copy_and_resolve_references()
  config.masking.mask_token_prob, config.masking.random_token_prob = masking_probs(config)
  return config


def migrate(saved: dict[str, Any]) -> dict[str, Any]:
  """A saved config (config.json, checkpoint metadata) in this version's layout.

  Before the MLM objective existed, `objective` was a section holding both the
  masking fields and ELECTRA's weights and temperature; those runs were all
  ELECTRA, with no random replacement tokens. Every reader of a saved config
  passes it through here, so old workdirs and exports load and continue.
  """
  old = saved.get("objective")
  if not isinstance(old, dict):
    return saved
  migrated = {name: value for name, value in saved.items() if name != "objective"}
  migrated["objective"] = "electra"
  masking_fields = ("mask_rate", "mask_token_prob", "max_predictions_per_seq")
  migrated["masking"] = {name: old[name] for name in masking_fields if name in old}
  migrated["masking"]["random_token_prob"] = 0.0
  migrated["electra"] = {name: value for name, value in old.items()
                         if name not in masking_fields}
  return migrated


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------

Rule = tuple[Callable[[Any], bool], str]

_POSITIVE_INT: Rule = (lambda v: isinstance(v, int) and v > 0, "a positive integer")
_NON_NEGATIVE_INT: Rule = (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0")
_POSITIVE: Rule = (lambda v: v > 0 and math.isfinite(v), "a positive number")
_NON_NEGATIVE: Rule = (lambda v: v >= 0 and math.isfinite(v), "a number >= 0")
_PROBABILITY: Rule = (lambda v: 0 <= v <= 1, "a number in [0, 1]")
_PROBABILITY_OR_UNSET: Rule = (lambda v: v is None or 0 <= v <= 1,
                               "a number in [0, 1], or unset for the objective's own")
_OPEN_FRACTION: Rule = (lambda v: 0 < v < 1, "a number in (0, 1)")
_FRACTION: Rule = (lambda v: 0 < v <= 1, "a number in (0, 1]")
_BETA: Rule = (lambda v: 0 <= v < 1, "a number in [0, 1)")
_MESH_SIZE: Rule = (lambda v: isinstance(v, int) and (v > 0 or v == -1),
                    "a positive integer, or -1 for the devices the other axes leave")


def mesh_axes_of(rule: str) -> tuple[str, ...]:
  """The mesh axes of an axis rule's value: "data,fsdp" -> ("data", "fsdp"), "" -> ()."""
  return tuple(axis.strip() for axis in rule.split(",") if axis.strip())


def _is_axis_rule(value: Any) -> bool:
  if not isinstance(value, str):
    return False
  axes = mesh_axes_of(value)
  return set(axes) <= set(MESH_AXES) and len(set(axes)) == len(axes)


_AXIS_RULE: Rule = (_is_axis_rule, f"mesh axes from {', '.join(MESH_AXES)}, comma-separated "
                    "and each at most once, or empty for replicated")

_RULES: dict[str, Rule] = {
    "model.vocab_size": (lambda v: isinstance(v, int) and v > 5,
                         "an integer > 5 (the 5 special tokens plus text pieces)"),
    "model.embedding_size": _POSITIVE_INT,
    "model.hidden_size": _POSITIVE_INT,
    "model.num_layers": _POSITIVE_INT,
    "model.num_heads": _POSITIVE_INT,
    "model.intermediate_size": _POSITIVE_INT,
    "model.generator_size": _FRACTION,
    "model.generator_layers": _FRACTION,
    "model.max_position_embeddings": _POSITIVE_INT,
    "model.type_vocab_size": (lambda v: isinstance(v, int) and v >= 2,
                              "an integer >= 2 (segments A and B)"),
    "model.dropout_rate": _BETA,
    "model.attention_dropout_rate": _BETA,
    "model.initializer_range": _POSITIVE,
    "model.layer_norm_eps": _POSITIVE,
    "model.dtype": (lambda v: v in DTYPES, f"one of {', '.join(DTYPES)}"),
    "model.attention": (lambda v: v in ATTENTION_IMPLEMENTATIONS,
                        f"one of {', '.join(ATTENTION_IMPLEMENTATIONS)}"),
    "model.remat": (lambda v: v in REMAT_POLICIES, f"one of {', '.join(REMAT_POLICIES)}"),
    "objective": (lambda v: v in OBJECTIVES, f"one of {', '.join(OBJECTIVES)}"),
    "masking.mask_rate": _OPEN_FRACTION,
    "masking.mask_token_prob": _PROBABILITY_OR_UNSET,
    "masking.random_token_prob": _PROBABILITY_OR_UNSET,
    "masking.max_predictions_per_seq": (lambda v: v is None or (isinstance(v, int) and v > 0),
                                        "a positive integer, or unset"),
    "electra.gen_weight": _NON_NEGATIVE,
    "electra.disc_weight": _NON_NEGATIVE,
    "electra.temperature": _POSITIVE,
    "optim.learning_rate": _POSITIVE,
    "optim.warmup_steps": _NON_NEGATIVE_INT,
    "optim.weight_decay": _NON_NEGATIVE,
    "optim.b1": _BETA,
    "optim.b2": _BETA,
    "optim.eps": _POSITIVE,
    "optim.max_grad_norm": _POSITIVE,
    "train.steps": _POSITIVE_INT,
    "train.batch_size": _POSITIVE_INT,
    "train.grad_accum_steps": _POSITIVE_INT,
    "train.seed": _NON_NEGATIVE_INT,
    "train.log_every": _POSITIVE_INT,
    "train.eval_every": _NON_NEGATIVE_INT,
    "train.eval_batches": _POSITIVE_INT,
    "train.init_from": (lambda v: isinstance(v, str),
                        "a directory with discriminator/ and generator/ folders, or empty"),
    "train.dry_run": (lambda v: isinstance(v, bool), "True or False"),
    "train.on_nonfinite": (lambda v: v in NONFINITE_POLICIES,
                           f"one of {', '.join(NONFINITE_POLICIES)}"),
    "checkpoint.every_steps": _POSITIVE_INT,
    "checkpoint.keep": _POSITIVE_INT,
    "checkpoint.keep_every": _NON_NEGATIVE_INT,
    "checkpoint.asynchronous": (lambda v: isinstance(v, bool), "True or False"),
    "checkpoint.allow_config_change": (lambda v: isinstance(v, bool), "True or False"),
    "mesh.data": _MESH_SIZE,
    "mesh.fsdp": _MESH_SIZE,
    "mesh.tensor": _MESH_SIZE,
    **{f"mesh.rules.{name}": _AXIS_RULE for name, _ in DEFAULT_AXIS_RULES},
    "data.source": (lambda v: isinstance(v, str),
                    "a string: paths or globs, tfds:NAME, or empty for the built-in corpus"),
    "data.text_field": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "data.tfds_split": (lambda v: isinstance(v, str) and v.isidentifier(),
                        "a TFDS split name such as train"),
    "data.dir": (lambda v: isinstance(v, str), "a directory path (empty for <workdir>/data)"),
    "data.num_workers": (lambda v: isinstance(v, int) and v >= 0,
                         "an integer >= 0 (0: one per CPU core)"),
    "data.max_seq_length": (lambda v: isinstance(v, int) and v >= 8, "an integer >= 8"),
    "data.lowercase": (lambda v: isinstance(v, bool), "True or False"),
    "data.eval_fraction": _OPEN_FRACTION,
    "data.tokenizer_sentences": _POSITIVE_INT,
    "data.single_segment_prob": _PROBABILITY,
    "data.short_seq_prob": _PROBABILITY,
    "data.min_document_tokens": _POSITIVE_INT,
}


def _flatten(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
  flat = {}
  for key, value in config.items():
    name = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict):
      flat.update(_flatten(value, name + "."))
    else:
      flat[name] = value
  return flat


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first unknown field or disallowed value."""
  check_fields(config, _RULES, "electra_jax.config.default_config()")
  _validate_relations(config)


def check_fields(config: ml_collections.ConfigDict, rules: dict[str, Rule], origin: str) -> None:
  """Every field of `config` known to `rules` and allowed by its rule, and none missing.

  `origin` names the function that builds complete configs, for the message
  about a missing field. Fine-tuning's config (finetune/config.py) is checked
  against its own rules by the same function.
  """
  fields = _flatten(config)
  for name in fields:
    if name not in rules:
      section = name.rsplit(".", 1)[0] + "." if "." in name else ""
      known = sorted(n for n in rules if n.startswith(section)) or sorted(rules)
      raise ConfigError(f"unknown config field '{name}'; known fields here: {', '.join(known)}")
  for name, (allowed, description) in rules.items():
    if name not in fields:
      raise ConfigError(f"config field '{name}' is missing; build configs from {origin}")
    value = fields[name]
    try:
      ok = allowed(value)
    except TypeError:
      ok = False
    if not ok:
      raise ConfigError(f"config field '{name}' = {value!r} is not allowed: must be {description}")


def _validate_relations(config: ml_collections.ConfigDict) -> None:
  m, d = config.model, config.data
  if m.hidden_size % m.num_heads:
    raise ConfigError(f"config field 'model.hidden_size' = {m.hidden_size} must be divisible "
                      f"by 'model.num_heads' = {m.num_heads}")
  generator = generator_dims(config)
  if generator["hidden_size"] % generator["num_heads"]:
    raise ConfigError(
        f"config field 'model.generator_size' = {m.generator_size} gives a generator with "
        f"hidden size {generator['hidden_size']} and {generator['num_heads']} heads, which do "
        "not divide; choose a fraction that keeps hidden size divisible by heads")
  if d.max_seq_length > m.max_position_embeddings:
    raise ConfigError(f"config field 'data.max_seq_length' = {d.max_seq_length} exceeds "
                      f"'model.max_position_embeddings' = {m.max_position_embeddings}")
  if m.attention == "dot_product" and m.attention_dropout_rate > 0:
    raise ConfigError(f"config field 'model.attention' = 'dot_product' has no attention "
                      f"dropout, but 'model.attention_dropout_rate' = {m.attention_dropout_rate}; "
                      "set --config.model.attention_dropout_rate=0 or "
                      "--config.model.attention=einsum")
  t = config.train
  if t.batch_size % t.grad_accum_steps:
    raise ConfigError(f"config field 'train.batch_size' = {t.batch_size} must be divisible by "
                      f"'train.grad_accum_steps' = {t.grad_accum_steps} (the microbatches "
                      "are equal slices of the batch)")
  if max_predictions_per_seq(config) > d.max_seq_length - 2:
    raise ConfigError(f"config field 'masking.max_predictions_per_seq' = "
                      f"{max_predictions_per_seq(config)} must be below "
                      f"'data.max_seq_length' - 2 = {d.max_seq_length - 2}")
  if config.objective == "mlm" and config.train.init_from:
    raise ConfigError("config field 'train.init_from' imports an ELECTRA generator and "
                      "discriminator, which 'objective' = 'mlm' does not train; leave it empty")
  mask_token_prob, random_token_prob = masking_probs(config)
  if mask_token_prob + random_token_prob > 1 + 1e-9:
    raise ConfigError(f"config fields 'masking.mask_token_prob' = {mask_token_prob} and "
                      f"'masking.random_token_prob' = {random_token_prob} add up to more than 1 "
                      "(they are shares of the picked tokens); lower one of them")
  sizes = [config.mesh[axis] for axis in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ConfigError(f"config fields 'mesh.{{data,fsdp,tensor}}' = {tuple(sizes)} have more "
                      "than one -1; give all but one axis a size")
  if config.optim.warmup_steps > config.train.steps:
    raise ConfigError(f"config field 'optim.warmup_steps' = {config.optim.warmup_steps} "
                      f"exceeds 'train.steps' = {config.train.steps}")


def generator_dims(config: ml_collections.ConfigDict) -> dict[str, int]:
  """The generator's sizes: the discriminator's scaled by `model.generator_size`."""
  m = config.model
  return dict(
      hidden_size=max(1, round(m.hidden_size * m.generator_size)),
      intermediate_size=max(1, round(m.intermediate_size * m.generator_size)),
      num_heads=max(1, round(m.num_heads * m.generator_size)),
      num_layers=max(1, round(m.num_layers * m.generator_layers)),
  )
