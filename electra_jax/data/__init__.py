"""Pre-training data: text sources, the tokenizer, ELECTRA example packing, batches."""

from electra_jax.data.builtin_corpus import builtin_documents
from electra_jax.data.packing import Examples, pack_documents
from electra_jax.data.pipeline import PretrainingData, eval_batches, prepare, train_batches
from electra_jax.data.sources import iter_documents
from electra_jax.data.tokenizer import (CLS_ID, CLS_PIECE, MASK_ID, MASK_PIECE, PAD_ID, PAD_PIECE,
                                        SEP_ID, SEP_PIECE, UNK_ID, UNK_PIECE, Tokenizer,
                                        train_tokenizer)

__all__ = [
    "CLS_ID", "CLS_PIECE", "Examples", "MASK_ID", "MASK_PIECE", "PAD_ID", "PAD_PIECE",
    "PretrainingData", "SEP_ID", "SEP_PIECE", "Tokenizer", "UNK_ID", "UNK_PIECE",
    "builtin_documents", "eval_batches", "iter_documents", "pack_documents", "prepare",
    "train_batches", "train_tokenizer",
]
