"""Moving models in and out of electra_jax: Hugging Face folders and our own Flax format.

  hf_params    our parameter tree <-> transformers' ELECTRA weight names and layouts
  hf_tokenizer our tokenizers <-> the tokenizer files transformers loads
  hf           Hugging Face folders: config.json, model.safetensors, tokenizer
  flax_format  a run's or an export's config.json + params.msgpack + tokenizer
  pretrained   where a model comes from: fine-tuning's and pre-training's entry points
  run_export   where a finished run's model goes (`python -m electra_jax.export`)
"""

import importlib
from types import ModuleType

from electra_jax.errors import UserError


def import_optional(module: str, package: str | None = None) -> ModuleType:
  """A dependency of the Hugging Face bridge only, with the install command when it is missing.

  `package` is what pip installs it as, when that is not the module's name.
  """
  try:
    return importlib.import_module(module)
  except ImportError:
    package = package or module.split(".")[0]
    raise UserError(f"the Hugging Face bridge needs the Python package '{package}': pip install "
                    f"{package} (or pip install 'electra_jax[hf]': safetensors, tokenizers and "
                    "protobuf, plus torch and transformers for the parity tests)") from None
