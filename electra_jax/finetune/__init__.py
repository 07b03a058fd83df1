"""Fine-tuning a pre-trained discriminator: GLUE, CoNLL tagging and SQuAD span extraction.

  tasks.py      the task table: names, head kinds, metrics, default epochs
  glue.py, conll.py, squad.py   each format's reader, encoding, scoring and predictions
  encoding.py   [CLS] A [SEP] B [SEP] rows
  metrics.py    the benchmarks' metrics, as their official scripts compute them
  model.py      encoder + task head, losses, what evaluation reads
  optimizer.py  AdamW with layer-wise learning-rate decay
  steps.py      the state and the compiled train and predict steps
  trainer.py    the loop: epochs, evaluation, best params, the checkpoint hook
  config.py     the config schema and the paper's recipe
  __main__.py   `python -m electra_jax.finetune`
"""
