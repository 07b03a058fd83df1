"""A 1.5M-parameter ELECTRA that trains on a laptop CPU in minutes, on the built-in corpus.

For trying the framework and for tests; it learns (held-out generator accuracy
and discriminator AUC climb within a few hundred steps) but is no useful encoder.
"""

from electra_jax.config import default_config


def get_config():
  c = default_config()
  c.model.vocab_size = 8000
  c.model.embedding_size = 128
  c.model.hidden_size = 128
  c.model.num_layers = 2
  c.model.num_heads = 2
  c.model.intermediate_size = 512
  c.model.generator_size = 0.5
  c.optim.learning_rate = 1e-3
  c.optim.warmup_steps = 100
  c.train.steps = 1500
  c.train.batch_size = 32
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.eval_batches = 10
  return c
