"""Frozen-encoder probes: a cheap downstream signal for a pre-trained discriminator.

SentEval's recipe: the encoder is not trained; a closed-form ridge head on its
features predicts the task: SST-2 from mean-pooled sentence vectors (a ridge
classifier), CoNLL-2003 from each word's first token (a ridge classifier per
tag). Where frozen features show nothing (STS-B), a short fine-tune does.
Random encoders are strong lexical baselines, so every probe is reported
beside the same architecture with random weights.
`signals.py` runs them, `features.py` runs the encoder, `ridge.py` fits the heads,
`pretraining.py` runs them during pre-training, `curves.py` plots them over training.
"""
