"""A 1.5M-parameter ELECTRA that trains on a laptop CPU in minutes, on the built-in corpus.

For trying the framework and for tests; it learns (held-out generator accuracy
and discriminator AUC climb within a few hundred steps) but is no useful encoder.

One departure from the paper, on purpose: the generator's samples are drawn at
temperature 2 (`electra.temperature`, a knob of the original code too). At
temperature 1 a generator this small reaches unigram-level samples within ~100
steps, and spotting a plausible frequent word needs attention to its
neighbours, which a 2-layer discriminator takes far longer than a few minutes
to learn: both this code and Hugging Face's PyTorch ELECTRA stay at AUC 0.50-0.54
for 600-2000 steps there (README, "The tiny config"). Flatter samples give the
discriminator replacements it can learn to spot at once, so the demo shows both
networks learning. The real configs (small, base, large) sample at 1.
"""

from electra_jax.config import sized_config


def get_config():
  c = sized_config("tiny")
  c.electra.temperature = 2.0
  c.optim.learning_rate = 1e-3
  c.optim.warmup_steps = 60
  c.train.steps = 600
  c.train.batch_size = 32
  c.train.log_every = 50
  c.train.eval_every = 200
  c.train.eval_batches = 10
  c.checkpoint.every_steps = 200
  return c
