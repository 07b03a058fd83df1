"""ELECTRA's special tokens at their fixed ids: for every tokenizer, the models and the objective.

The model and the objective refer to [PAD], [CLS], [SEP] and [MASK] by id, so
every tokenizer (data/sentencepiece_tokenizer.py, data/wordpiece.py) puts them at 0-4, and
loading one checks it. A module of its own, so that the models need not import
the data pipeline to know which id is padding.
"""

PAD_ID = 0
UNK_ID = 1
CLS_ID = 2
SEP_ID = 3
MASK_ID = 4

PAD_PIECE = "[PAD]"
UNK_PIECE = "[UNK]"
CLS_PIECE = "[CLS]"
SEP_PIECE = "[SEP]"
MASK_PIECE = "[MASK]"

SPECIAL_PIECES = {PAD_ID: PAD_PIECE, UNK_ID: UNK_PIECE, CLS_ID: CLS_PIECE, SEP_ID: SEP_PIECE,
                  MASK_ID: MASK_PIECE}
