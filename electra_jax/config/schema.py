"""The config schema: every field and its default, the model sizes, and derived values.

`configs/*.py` start from `sized_config(name)` and change what their recipe
needs, so every run has the same fields and any of them can be overridden with
`--config.section.field=value`.
"""

from typing import Any

import ml_collections
from ml_collections import config_dict

from electra_jax.errors import ConfigError

DTYPES = ("float32", "bfloat16")
ATTENTION_IMPLEMENTATIONS = ("einsum", "dot_product")
REMAT_POLICIES = ("none", "full", "dots")
POSITION_EMBEDDINGS = ("absolute", "rotary")
FEED_FORWARDS = ("gelu", "geglu")
NORM_POSITIONS = ("post", "pre")
# The backbone as transformers' ELECTRA has it; other values cannot be exported there.
CLASSIC_BACKBONE = {"position_embedding": "absolute", "feed_forward": "gelu",
                    "norm_position": "post", "use_bias": True}
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
  # The backbone. The defaults are BERT's and ELECTRA's, which transformers' ELECTRA
  # loads; ModernBERT's (arXiv 2412.13663) choices, each on its own: "rotary"
  # position embeddings (no absolute table), a "geglu" feed-forward, "pre"
  # LayerNorm (before each sublayer, and a final one), linear layers without biases.
  c.model.position_embedding = "absolute"
  c.model.feed_forward = "gelu"
  c.model.norm_position = "post"
  c.model.use_bias = True

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
  # How the discriminator's embeddings relate to the generator's. "shared": one
  # set for both (the paper's). "gdes": DeBERTaV3's gradient-disentangled sharing:
  # the discriminator's word embeddings are the shared table, which only the
  # generator's loss trains, plus a residual table of its own that starts at zero.
  # "none": a separate set each.
  c.electra.embedding_sharing = "shared"

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
  # A Weights & Biases project to log the metrics to as well (pip install -e ".[wandb]");
  # empty: metrics.jsonl and TensorBoard only.
  c.train.wandb_project = ""
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

  # Frozen-encoder probes of the discriminator during training (electra_jax/probes/):
  # every `every` steps and at the last one (0: never), on the STS-B and SST-2 of
  # `glue_dir` and the CoNLL-2003 of `conll_dir` (a probe without its data is skipped).
  c.probes = ml_collections.ConfigDict()
  c.probes.every = 0
  c.probes.glue_dir = ""
  c.probes.conll_dir = ""
  c.probes.max_examples = 2000  # training examples of each probe's head (as validated)
  c.probes.max_seq_length = 64
  # Also docs/results.md's short STS-B fine-tune (STS-B of glue_dir): the signal where
  # the frozen probes see nothing, at tens of seconds per probe for tiny.
  c.probes.stsb_finetune = False

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
  # The split read from a tfds: or hf: source, or a saved DatasetDict (named before the
  # Hugging Face sources existed; prepared data records it under this name).
  c.data.tfds_split = "train"
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
EMBEDDING_SHARING = ("shared", "gdes", "none")
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


def generator_dims(config: ml_collections.ConfigDict) -> dict[str, int]:
  """The generator's sizes: the discriminator's scaled by `model.generator_size`."""
  m = config.model
  return dict(
      hidden_size=max(1, round(m.hidden_size * m.generator_size)),
      intermediate_size=max(1, round(m.intermediate_size * m.generator_size)),
      num_heads=max(1, round(m.num_heads * m.generator_size)),
      num_layers=max(1, round(m.num_layers * m.generator_layers)),
  )


def mesh_axes_of(rule: str) -> tuple[str, ...]:
  """The mesh axes of an axis rule's value: "data,fsdp" -> ("data", "fsdp"), "" -> ()."""
  return tuple(axis.strip() for axis in rule.split(",") if axis.strip())
