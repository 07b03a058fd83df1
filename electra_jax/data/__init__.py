"""Pre-training data: text sources, the tokenizer, ELECTRA example packing, prepared shards,
and the loader."""

from electra_jax.data.builtin_corpus import builtin_documents
from electra_jax.data.dataset import prepare
from electra_jax.data.loader import eval_batches, read_examples, train_iterator
from electra_jax.data.packing import ExampleBuilder, Examples, pack_documents
from electra_jax.data.sentencepiece_tokenizer import Tokenizer, train_tokenizer
from electra_jax.data.shards import PreparedData
from electra_jax.data.sources import read_documents, resolve_inputs

__all__ = [
    "ExampleBuilder", "Examples", "PreparedData", "Tokenizer", "builtin_documents",
    "eval_batches", "pack_documents", "prepare", "read_documents", "read_examples",
    "resolve_inputs", "train_iterator", "train_tokenizer",
]
