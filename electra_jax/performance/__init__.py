"""What a step costs and how fast it runs: the tools behind the benchmark and compile CLIs.

flops (model FLOPs, device peaks, MFU), program_cost (a compiled program's
memory, FLOPs, bytes and collectives per device), profiling (kernel time,
profiler traces), torch_reference (the PyTorch step the benchmark compares
with), tpu (TPU chips and topologies), compile_report (the steps compiled for a
TPU slice) and reference_model (the minimal Flax model compared with ours).
"""
