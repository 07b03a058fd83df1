"""Pre-training as a library: the objective (masking, sampling, losses), the optimizer,
the compiled train and eval steps, and the loop that `python -m electra_jax.train` runs
(`loop.train_and_evaluate(config, workdir)`)."""
