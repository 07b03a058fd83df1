"""What only a CPU needs: faster forms of the layers, and settings for the process.

Applied in two places and nowhere else: `electra_jax/target.py` gives a step
compiled for CPU devices these forms of its layers (`layers.OPS`) and of its
optimizer update (`update.update_in_branch`), and `process.apply_settings`
sets the allocator and XLA flags when a command-line tool starts a run that
will use the CPU. GPU and TPU programs are built from the plain forms
(`electra_jax/models/ops.py`). Every operation a CPU form adds runs under the
name scope `SCOPE`, so a compiled program shows whether any reached it.
Why each form is faster on a CPU, with the measurements: docs/cpu_performance.md.
"""

SCOPE = "cpu_only"
