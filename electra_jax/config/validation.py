"""Which values each config field may take: `validate()`, run before anything is compiled
or read, turns a bad value into one `ConfigError` naming the field and what is allowed."""

import math
from typing import Any, Callable

import ml_collections

from electra_jax.config.schema import (ATTENTION_IMPLEMENTATIONS, DEFAULT_AXIS_RULES, DTYPES,
                                       EMBEDDING_SHARING, MESH_AXES, NONFINITE_POLICIES,
                                       FEED_FORWARDS, NORM_POSITIONS, OBJECTIVES,
                                       POSITION_EMBEDDINGS, REMAT_POLICIES, generator_dims,
                                       masking_probs, max_predictions_per_seq, mesh_axes_of)
from electra_jax.errors import ConfigError

Rule = tuple[Callable[[Any], bool], str]

POSITIVE_INT: Rule = (lambda v: isinstance(v, int) and v > 0, "a positive integer")
WANDB_PROJECT: Rule = (lambda v: isinstance(v, str) and "/" not in v,
                       "a Weights & Biases project name (no '/'; the entity comes from "
                       "WANDB_ENTITY), or empty")
NON_NEGATIVE_INT: Rule = (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0")
POSITIVE: Rule = (lambda v: v > 0 and math.isfinite(v), "a positive number")
NON_NEGATIVE: Rule = (lambda v: v >= 0 and math.isfinite(v), "a number >= 0")
PROBABILITY: Rule = (lambda v: 0 <= v <= 1, "a number in [0, 1]")
PROBABILITY_OR_UNSET: Rule = (lambda v: v is None or 0 <= v <= 1,
                               "a number in [0, 1], or unset for the objective's own")
OPEN_FRACTION: Rule = (lambda v: 0 < v < 1, "a number in (0, 1)")
FRACTION: Rule = (lambda v: 0 < v <= 1, "a number in (0, 1]")
BETA: Rule = (lambda v: 0 <= v < 1, "a number in [0, 1)")
MESH_SIZE: Rule = (lambda v: isinstance(v, int) and (v > 0 or v == -1),
                    "a positive integer, or -1 for the devices the other axes leave")


def _is_axis_rule(value: Any) -> bool:
  if not isinstance(value, str):
    return False
  axes = mesh_axes_of(value)
  return set(axes) <= set(MESH_AXES) and len(set(axes)) == len(axes)


AXIS_RULE: Rule = (_is_axis_rule, f"mesh axes from {', '.join(MESH_AXES)}, comma-separated "
                    "and each at most once, or empty for replicated")

RULES: dict[str, Rule] = {
    "model.vocab_size": (lambda v: isinstance(v, int) and v > 5,
                         "an integer > 5 (the 5 special tokens plus text pieces)"),
    "model.embedding_size": POSITIVE_INT,
    "model.hidden_size": POSITIVE_INT,
    "model.num_layers": POSITIVE_INT,
    "model.num_heads": POSITIVE_INT,
    "model.intermediate_size": POSITIVE_INT,
    "model.generator_size": FRACTION,
    "model.generator_layers": FRACTION,
    "model.max_position_embeddings": POSITIVE_INT,
    "model.type_vocab_size": (lambda v: isinstance(v, int) and v >= 2,
                              "an integer >= 2 (segments A and B)"),
    "model.dropout_rate": BETA,
    "model.attention_dropout_rate": BETA,
    "model.initializer_range": POSITIVE,
    "model.layer_norm_eps": POSITIVE,
    "model.dtype": (lambda v: v in DTYPES, f"one of {', '.join(DTYPES)}"),
    "model.attention": (lambda v: v in ATTENTION_IMPLEMENTATIONS,
                        f"one of {', '.join(ATTENTION_IMPLEMENTATIONS)}"),
    "model.remat": (lambda v: v in REMAT_POLICIES, f"one of {', '.join(REMAT_POLICIES)}"),
    "model.position_embedding": (lambda v: v in POSITION_EMBEDDINGS,
                                 f"one of {', '.join(POSITION_EMBEDDINGS)}"),
    "model.feed_forward": (lambda v: v in FEED_FORWARDS, f"one of {', '.join(FEED_FORWARDS)}"),
    "model.norm_position": (lambda v: v in NORM_POSITIONS, f"one of {', '.join(NORM_POSITIONS)}"),
    "model.use_bias": (lambda v: isinstance(v, bool), "True or False"),
    "objective": (lambda v: v in OBJECTIVES, f"one of {', '.join(OBJECTIVES)}"),
    "masking.mask_rate": OPEN_FRACTION,
    "masking.mask_token_prob": PROBABILITY_OR_UNSET,
    "masking.random_token_prob": PROBABILITY_OR_UNSET,
    "masking.max_predictions_per_seq": (lambda v: v is None or (isinstance(v, int) and v > 0),
                                        "a positive integer, or unset"),
    "electra.gen_weight": NON_NEGATIVE,
    "electra.disc_weight": NON_NEGATIVE,
    "electra.temperature": POSITIVE,
    "electra.embedding_sharing": (lambda v: v in EMBEDDING_SHARING,
                                  f"one of {', '.join(EMBEDDING_SHARING)}"),
    "optim.learning_rate": POSITIVE,
    "optim.warmup_steps": NON_NEGATIVE_INT,
    "optim.weight_decay": NON_NEGATIVE,
    "optim.b1": BETA,
    "optim.b2": BETA,
    "optim.eps": POSITIVE,
    "optim.max_grad_norm": POSITIVE,
    "train.steps": POSITIVE_INT,
    "train.batch_size": POSITIVE_INT,
    "train.grad_accum_steps": POSITIVE_INT,
    "train.seed": NON_NEGATIVE_INT,
    "train.log_every": POSITIVE_INT,
    "train.eval_every": NON_NEGATIVE_INT,
    "train.eval_batches": POSITIVE_INT,
    "train.init_from": (lambda v: isinstance(v, str),
                        "a directory with discriminator/ and generator/ folders, or empty"),
    "train.dry_run": (lambda v: isinstance(v, bool), "True or False"),
    "train.wandb_project": WANDB_PROJECT,
    "train.on_nonfinite": (lambda v: v in NONFINITE_POLICIES,
                           f"one of {', '.join(NONFINITE_POLICIES)}"),
    "checkpoint.every_steps": POSITIVE_INT,
    "checkpoint.keep": POSITIVE_INT,
    "checkpoint.keep_every": NON_NEGATIVE_INT,
    "checkpoint.asynchronous": (lambda v: isinstance(v, bool), "True or False"),
    "checkpoint.allow_config_change": (lambda v: isinstance(v, bool), "True or False"),
    "probes.every": NON_NEGATIVE_INT,
    "probes.glue_dir": (lambda v: isinstance(v, str), "a GLUE root folder, or empty"),
    "probes.conll_dir": (lambda v: isinstance(v, str), "a CoNLL-2003 folder, or empty"),
    "probes.max_examples": POSITIVE_INT,
    "probes.max_seq_length": POSITIVE_INT,
    "probes.stsb_finetune": (lambda v: isinstance(v, bool), "True or False"),
    "mesh.data": MESH_SIZE,
    "mesh.fsdp": MESH_SIZE,
    "mesh.tensor": MESH_SIZE,
    **{f"mesh.rules.{name}": AXIS_RULE for name, _ in DEFAULT_AXIS_RULES},
    "data.source": (lambda v: isinstance(v, str),
                    "a string: paths or globs, tfds:NAME, or empty for the built-in corpus"),
    "data.text_field": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "data.tfds_split": (lambda v: isinstance(v, str) and v.isidentifier(),
                        "a split name such as train (of a tfds: or hf: source)"),
    "data.dir": (lambda v: isinstance(v, str), "a directory path (empty for <workdir>/data)"),
    "data.num_workers": (lambda v: isinstance(v, int) and v >= 0,
                         "an integer >= 0 (0: one per CPU core)"),
    "data.max_seq_length": (lambda v: isinstance(v, int) and v >= 8, "an integer >= 8"),
    "data.lowercase": (lambda v: isinstance(v, bool), "True or False"),
    "data.eval_fraction": OPEN_FRACTION,
    "data.tokenizer_sentences": POSITIVE_INT,
    "data.single_segment_prob": PROBABILITY,
    "data.short_seq_prob": PROBABILITY,
    "data.min_document_tokens": POSITIVE_INT,
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
  check_fields(config, RULES, "electra_jax.config.default_config()")
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
  if m.position_embedding == "rotary":
    for name, hidden, heads in (("discriminator", m.hidden_size, m.num_heads),
                                ("generator", generator["hidden_size"], generator["num_heads"])):
      if (hidden // heads) % 2:
        raise ConfigError(f"config field 'model.position_embedding' = 'rotary' rotates pairs of "
                          f"features, but the {name}'s heads have {hidden // heads}, an odd "
                          "number; choose sizes whose head size is even")
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
  if config.objective == "mlm" and config.electra.embedding_sharing != "shared":
    raise ConfigError("config field 'electra.embedding_sharing' is "
                      f"'{config.electra.embedding_sharing}', but 'objective' = 'mlm' has no "
                      "generator to share with; leave it 'shared'")
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
                      f"exceeds 'train.steps' = {config.train.steps}; set "
                      f"--config.optim.warmup_steps={config.train.steps // 10} (or any value up "
                      "to train.steps) with the shorter run")
