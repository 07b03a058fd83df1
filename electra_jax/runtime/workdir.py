"""The files of a run's directory (--workdir), named once for everything that writes or reads them.

Pre-training writes the resolved config, the tokenizer, metrics, TensorBoard
events, checkpoints and the final parameters; an export in our Flax format
(`electra_jax.export --format=flax`) is the config, the parameters and the
tokenizer under the same names, so a workdir loads wherever an export does.
Fine-tuning adds the encoder's model section, the best epoch and the results.
"""

CONFIG_FILE = "config.json"  # the resolved config
PARAMS_FILE = "params.msgpack"  # the parameters (flax.serialization.msgpack_serialize)
CHECKPOINTS_DIR = "checkpoints"  # Orbax checkpoints, one directory per step
METRICS_FILE = "metrics.jsonl"  # one JSON object per logged step and split
TENSORBOARD_DIR = "tensorboard"  # the same metrics as TensorBoard event files
WANDB_RUN_ID_FILE = "wandb_run_id"  # the Weights & Biases run that a continued run logs to
DATA_DIR = "data"  # the prepared data, unless data.dir puts it elsewhere
SENTENCEPIECE_FILE = "tokenizer.model"  # a SentencePiece tokenizer
WORDPIECE_FILE = "vocab.txt"  # a WordPiece vocabulary (BERT's and Google's ELECTRA's)
# Fine-tuning's own.
MODEL_CONFIG_FILE = "model_config.json"  # the encoder's `model` section, as pre-training wrote it
LABELS_FILE = "labels.json"  # the class or tag names in id order (not for regression or spans)
RESULTS_FILE = "results.json"  # every epoch's metrics, the best, the training time
BEST_DIR = "best"  # params.msgpack, metrics.json and predictions-<split> of the best epoch
