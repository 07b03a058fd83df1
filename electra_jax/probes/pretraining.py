"""Probes during pre-training (config.probes): the discriminator as it is at chosen steps.

Their scores go to metrics.jsonl and TensorBoard as split "probe" (TensorBoard
tags `probe/<name>`), and the same probes of the same architecture with random
weights once, at step 0, as split "probe_random".
"""

from typing import Any

import ml_collections
from absl import logging

from electra_jax.convert.pretrained import Discriminator
from electra_jax.data.any_tokenizer import AnyTokenizer
from electra_jax.finetune.model import PRETRAINED
from electra_jax.models import electra
from electra_jax.probes import features, signals
from electra_jax.runtime import sharding


class PretrainingProbes:
  """The probes of one run: data read and tokenized once, scores of any step's parameters."""

  def __init__(self, config: ml_collections.ConfigDict, tokenizer: AnyTokenizer,
               start_step: int = 0):
    p = config.probes
    self._config, self._tokenizer, self._every = config, tokenizer, p.every
    self._random_logged = start_step > 0  # once per run, by the run that starts at step 0
    data = signals.load(p.glue_dir, p.conll_dir, p.max_examples, p.max_seq_length,
                        config.train.seed, p.stsb_finetune) if p.every else None
    if data and not any((data.sst2, data.conll, data.stsb_finetune)):
      logging.warning("probes.every is %d but no probe has its data (probes.glue_dir %r, "
                      "probes.conll_dir %r): training without probes", p.every, p.glue_dir,
                      p.conll_dir)
      data = None
    self._rows = signals.tokenize(data, tokenizer) if data else None

  def due(self, step: int) -> bool:
    return bool(self._rows) and (step % self._every == 0 or step == self._config.train.steps)

  def log(self, step: int, params: Any, writer: Any, primary: bool) -> None:
    """The probes of the parameters of `step` to the metric writer (split "probe"), and the
    first time the random baseline (split "probe_random", step 0); every process calls this,
    process 0 probes."""
    params = sharding.to_host(params)  # every process takes part in gathering them
    if not primary:
      return
    if not self._random_logged:
      writer.write(0, "probe_random", self.random_scores(params))
      self._random_logged = True
    scores = self.scores(params)
    writer.write(step, "probe", scores)
    logging.info("probes at step %d: %s", step,
                 ", ".join(f"{name} {value:.4f}" for name, value in scores.items()))

  def discriminator(self, params: dict) -> Discriminator:
    """The discriminator of the run's parameters (host arrays), as fine-tuning takes it."""
    alone = electra.discriminator_alone(params, self._config.electra.embedding_sharing)
    return Discriminator(self._config.model, {name: alone[name] for name in PRETRAINED},
                         self._tokenizer)

  def scores(self, params: dict) -> dict[str, float]:
    return signals.run(self.discriminator(params), self._rows)

  def random_scores(self, params: dict) -> dict[str, float]:
    """The same probes with the run's architecture at random weights (seed: train.seed)."""
    return signals.run(features.random_discriminator(self.discriminator(params),
                                                     self._config.train.seed), self._rows)
