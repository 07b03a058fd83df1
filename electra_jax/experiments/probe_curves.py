r"""The probes of pre-training runs over their training compute, in one plot and one table.

  python -m electra_jax.experiments.probe_curves \
      --runs=runs/electra-seed0,runs/electra-seed1,runs/gdes-seed0 --out=runs/probe_curves.png

Reads each run's metrics.jsonl (the split `probe` that `config.probes.every`
writes, and its random-weight scores, split `probe_random`) and config.json
(model FLOPs per step, so that runs of different architectures and objectives
line up at equal compute). One panel per signal: each run a line, the runs of
one model (the workdir's name without its `-seed<k>`) in one colour, the same
model's random-weight score a dotted line. Prints each run's last probe as a
markdown table. Runs whose probes used different settings (probes.max_examples,
max_seq_length) are not comparable; the table shows each run's.
"""

from absl import flags, logging

from electra_jax import cli
from electra_jax.errors import UserError
from electra_jax.probes import curves

_RUNS = flags.DEFINE_list("runs", None, "Pre-training workdirs that probed during training "
                          "(config.probes.every), comma-separated.")
_OUT = flags.DEFINE_string("out", None, "The plot to write (PNG).")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}; see --help")
  if not _RUNS.value or not _OUT.value:
    raise UserError("--runs and --out are required; see --help")
  runs = {workdir: curves.read_run(workdir) for workdir in _RUNS.value}
  curves.plot(runs, _OUT.value)
  logging.info("Wrote %s", _OUT.value)
  print(curves.markdown(runs))


if __name__ == "__main__":
  cli.run(main)
