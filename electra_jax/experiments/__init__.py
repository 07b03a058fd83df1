"""Experiments built from the library's parts: `python -m electra_jax.experiments.<name>`.

  downstream   fine-tune models (and a random-weight control) on tasks x seeds, tabulate
"""
