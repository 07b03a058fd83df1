"""The PyTorch (Hugging Face `transformers`) ELECTRA train step that we measure ourselves against.

The same step as train_step.py, built from transformers' own ELECTRA modules:
a generator (`ElectraForMaskedLM`) and a discriminator (`ElectraForPreTraining`)
sharing one embedding module (word, position, token type, LayerNorm), the
generator's output layer tied to the word embeddings; the same masking (the
top P of random scores over the maskable tokens, 85% of them [MASK]), the
generator head run at the masked positions only, Gumbel-max sampling, loss
1 x MLM + 50 x RTD, dropout on, gradient clipping at global norm 1.0 and AdamW
without weight decay on LayerNorm and biases. Shapes come from our config
through the Hugging Face export's mapping (convert/hf.py), so both frameworks
train the same network on the same batch shape.

Needs torch and transformers (`pip install -e ".[hf]"`).
"""

import dataclasses
import importlib
from typing import Any

import ml_collections

from electra_jax import config as config_lib
from electra_jax.convert import hf
from electra_jax.errors import UserError
from electra_jax.pretraining.objective import NEVER_MASKED
from electra_jax.vocabulary import MASK_ID, PAD_ID


def import_torch() -> tuple[Any, Any]:
  """torch and transformers, or one UserError saying how to install them."""
  try:
    return importlib.import_module("torch"), importlib.import_module("transformers")
  except ImportError as error:
    raise UserError(f"comparing with PyTorch needs torch and transformers ({error}): "
                    "pip install -e '.[hf]'") from None


@dataclasses.dataclass
class TorchElectra:
  """The two transformers networks with their embeddings shared, and their optimizer."""

  generator: Any  # transformers.ElectraForMaskedLM
  discriminator: Any  # transformers.ElectraForPreTraining
  optimizer: Any  # torch.optim.AdamW over the parameters of both, each once
  max_predictions: int

  def parameters(self) -> list[Any]:
    """Every trainable tensor once (the shared embeddings are not counted twice)."""
    unique = {id(p): p for model in (self.generator, self.discriminator)
              for p in model.parameters()}
    return list(unique.values())


def build(config: ml_collections.ConfigDict, seed: int = 0) -> TorchElectra:
  """The transformers generator and discriminator of `config`'s sizes, in training mode."""
  torch, transformers = import_torch()
  torch.manual_seed(seed)
  discriminator, generator = (
      cls(transformers.ElectraConfig(**hf.hf_config(config, network)))
      for cls, network in ((transformers.ElectraForPreTraining, "discriminator"),
                           (transformers.ElectraForMaskedLM, "generator")))
  generator.electra.embeddings = discriminator.electra.embeddings
  generator.generator_lm_head.weight = discriminator.electra.embeddings.word_embeddings.weight
  generator.train()
  discriminator.train()

  o = config.optim
  unique = {name: p for model in (discriminator, generator)
            for name, p in model.named_parameters()}
  decayed = [p for name, p in unique.items() if name.endswith(".weight") and "LayerNorm" not in name]
  rest = [p for name, p in unique.items() if not (name.endswith(".weight") and
                                                  "LayerNorm" not in name)]
  optimizer = torch.optim.AdamW(
      [{"params": decayed, "weight_decay": o.weight_decay}, {"params": rest, "weight_decay": 0.0}],
      lr=o.learning_rate, betas=(o.b1, o.b2), eps=o.eps)
  return TorchElectra(generator, discriminator, optimizer,
                      config_lib.max_predictions_per_seq(config))


def mask_tokens(input_ids: Any, mask_rate: float, max_predictions: int,
                mask_token_prob: float) -> tuple[Any, Any, Any, Any]:
  """objective.mask_tokens in torch: (masked ids, positions, targets, weights)."""
  torch, _ = import_torch()
  candidates = ~torch.isin(input_ids, torch.tensor(NEVER_MASKED))
  num_candidates = candidates.sum(-1)
  num_to_pick = torch.clamp(torch.round(num_candidates * mask_rate), 1, max_predictions)
  num_to_pick = torch.minimum(num_to_pick, num_candidates)
  scores = torch.where(candidates, torch.rand(input_ids.shape), -1.0)
  positions = torch.topk(scores, max_predictions, dim=-1).indices
  weights = torch.arange(max_predictions)[None, :] < num_to_pick[:, None]
  positions = torch.where(weights, positions, 0)
  targets = torch.gather(input_ids, 1, positions)
  use_mask_token = weights & (torch.rand(positions.shape) < mask_token_prob)
  masked_ids = scatter_tokens(input_ids, positions, torch.where(use_mask_token, MASK_ID, targets),
                              weights)
  return masked_ids, positions, targets, weights.float()


def scatter_tokens(input_ids: Any, positions: Any, tokens: Any, weights: Any) -> Any:
  """objective.scatter_tokens in torch."""
  torch, _ = import_torch()
  tokens = torch.where(weights > 0, tokens, torch.gather(input_ids, 1, positions))
  return input_ids.scatter(1, positions, tokens)


def losses(models: TorchElectra, input_ids: Any, token_type_ids: Any, masked_ids: Any,
           positions: Any, targets: Any, weights: Any, gumbel: Any,
           temperature: float) -> tuple[Any, Any]:
  """(MLM loss, RTD loss) of objective.pretraining_loss (ELECTRA), given the masking and the Gumbel noise."""
  torch, _ = import_torch()
  functional = torch.nn.functional
  real_tokens = input_ids != PAD_ID
  generator = models.generator
  hidden = generator.electra(masked_ids, attention_mask=real_tokens.long(),
                             token_type_ids=token_type_ids).last_hidden_state
  at_positions = torch.gather(hidden, 1, positions[..., None].expand(-1, -1, hidden.shape[-1]))
  gen_logits = generator.generator_lm_head(generator.generator_predictions(at_positions))
  per_token = functional.cross_entropy(gen_logits.transpose(1, 2), targets, reduction="none")
  gen_loss = (per_token * weights).sum() / weights.sum().clamp(min=1.0)

  sampled = torch.argmax(gen_logits.detach() / temperature + gumbel, dim=-1)
  corrupted = scatter_tokens(input_ids, positions, sampled, weights)
  labels = (corrupted != input_ids).float()
  discriminator = models.discriminator
  disc_hidden = discriminator.electra(corrupted, attention_mask=real_tokens.long(),
                                      token_type_ids=token_type_ids).last_hidden_state
  disc_logits = discriminator.discriminator_predictions(disc_hidden)
  per_token = functional.binary_cross_entropy_with_logits(disc_logits, labels, reduction="none")
  real = real_tokens.float()
  return gen_loss, (per_token * real).sum() / real.sum().clamp(min=1.0)


def train_step(models: TorchElectra, config: ml_collections.ConfigDict, input_ids: Any,
               token_type_ids: Any) -> float:
  """One optimizer step on a batch (int64 tensors [B, L]); returns the loss."""
  torch, _ = import_torch()
  o = config.electra
  masked_ids, positions, targets, weights = mask_tokens(
      input_ids, config.masking.mask_rate, models.max_predictions,
      config_lib.masking_probs(config)[0])
  uniform = torch.rand((*positions.shape, config.model.vocab_size)).clamp(min=1e-20)
  gumbel = -torch.log(-torch.log(uniform))
  gen_loss, disc_loss = losses(models, input_ids, token_type_ids, masked_ids, positions, targets,
                               weights, gumbel, o.temperature)
  loss = o.gen_weight * gen_loss + o.disc_weight * disc_loss
  models.optimizer.zero_grad(set_to_none=True)
  loss.backward()
  torch.nn.utils.clip_grad_norm_(models.parameters(), config.optim.max_grad_norm)
  models.optimizer.step()
  return float(loss.detach())
