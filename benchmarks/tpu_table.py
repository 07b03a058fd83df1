r"""What the paper's configs need on TPU slices: `python -m electra_jax.compile` over a grid.

  python -m benchmarks.tpu_table --out=/tmp/tpu_table [--jobs=2]

runs the compile CLI for tiny, small, base and large at
their paper batch sizes (tiny and small 128, base 256, large 2048) and at
lengths 128 and 512, in bfloat16, on v5e-8, v4-8, v5p-8 and v6e-8, one
process per row, --jobs at a time, keeping each row's JSON in --out (a row
whose JSON is there is not compiled again). Then, for large at 2048 x 512,
it looks for the smallest slice of each generation where the step fits with
its parameters and optimizer state sharded over every chip (mesh.fsdp):
upwards, skipping the slices that a refused compile's figures rule out, then
down from the first fit while the slice below is not clearly too small.
Prints the markdown tables of docs/tpu.md, with the command of each row.
"""

import concurrent.futures
import json
import os
import subprocess
import sys
from collections.abc import Callable

from absl import app, flags

from electra_jax.performance import tpu

_OUT = flags.DEFINE_string("out", None, "Directory for each row's JSON report (kept between runs).")
_JOBS = flags.DEFINE_integer("jobs", 2, "Compiles run at once (each takes about one core).")
_SIZES = flags.DEFINE_list("sizes", ["tiny", "small", "base", "large"], "Configs to compile.")
_CACHED_ONLY = flags.DEFINE_bool(
    "cached_only", False, "Print only the rows whose JSON is already in --out; compile nothing "
    "(for a table while the rest still compiles).")
_MAX_BATCH = flags.DEFINE_integer(
    "max_batch", 0, "--max_batch of each row: compiles allowed in the search for the largest "
    "batch per chip; 0: the estimate from each row's temporaries alone (~N in the table).")

PAPER_BATCH = {"tiny": 128, "small": 128, "base": 256, "large": 2048}
LENGTHS = (128, 512)
SLICES = ("v5e-8", "v4-8", "v5p-8", "v6e-8")
# Slices tried for large at 2048 x 512, smallest first, with the mesh all fsdp.
LARGER_SLICES = {"v5e": ("v5e-8", "v5e-16", "v5e-32", "v5e-64", "v5e-128", "v5e-256"),
                 "v4": ("v4-8", "v4-16", "v4-32", "v4-64", "v4-128", "v4-256"),
                 "v5p": ("v5p-8", "v5p-16", "v5p-32", "v5p-64", "v5p-128"),
                 "v6e": ("v6e-8", "v6e-16", "v6e-32", "v6e-64", "v6e-128", "v6e-256")}
FSDP = ("--config.mesh.data=1", "--config.mesh.fsdp=-1")


def command(size: str, length: int, topology: str, *extra: str) -> list[str]:
  return ["python", "-m", "electra_jax.compile", f"--config=configs/{size}.py",
          f"--config.train.batch_size={PAPER_BATCH[size]}",
          f"--config.data.max_seq_length={length}", "--config.model.dtype=bfloat16",
          f"--topology={topology}", *extra]


def run(argv: list[str], path: str) -> dict | None:
  """The report of one compile (from `path` if an earlier run wrote it; None for one not
  compiled yet with --cached_only)."""
  if not os.path.exists(path) and _CACHED_ONLY.value:
    return None
  if not os.path.exists(path):
    result = subprocess.run([sys.executable, *argv[1:], f"--json={path}"], capture_output=True,
                            text=True, check=False)
    if result.returncode not in (0, 1) or not os.path.exists(path):
      print(f"failed: {' '.join(argv)}\n{result.stderr[-2000:]}", file=sys.stderr, flush=True)
      return None
  with open(path, encoding="utf-8") as f:
    report = json.load(f)
  report["command"] = " ".join(argv)
  return report


def largest_batch(report: dict) -> str:
  """The compiled search's answer where it ran, else the estimate from the temporaries."""
  search = report.get("largest_batch_per_chip")
  if not search:
    estimate = report["estimated_largest_batch_per_chip"]
    return "-" if estimate is None else f"~{estimate}"
  if search["fits"] is None:
    return "none" + (f" ({search['too_large']} does not fit)" if search["too_large"] else "")
  if search["too_large"] == search["fits"] + 1:
    return str(search["fits"])
  return f"{search['fits']} to {search['too_large'] - 1}" if search["too_large"] else (
      f"{search['fits']} or more")


def row(report: dict) -> str:
  gib = 2.0**30
  train = report["train"]
  mesh = " x ".join(str(size) for size in report["mesh"].values())
  if train["memory"]:
    memory = f"{train['memory']['total'] / gib:.2f} GiB" + ("" if report["fits"] else " (no)")
    collective = f"{train['collective_bytes'] / 1e9:.2f} GB"
    bound = f"{100 * report['mfu_bound']:.0f}%"
  else:
    memory = f"does not fit: temporaries {train['needed_bytes'] / gib:.1f} GiB"
    collective = bound = "-"
  return " | ".join([
      "", f"{report['accelerator_type']} ({report['chips']} chips)", mesh,
      f"{report['batch_size']} x {report['length']}", memory, collective,
      largest_batch(report), bound, f"`{report['command']}`",
      ""]).strip()


def main(argv: list[str]) -> None:
  del argv
  if not _OUT.value:
    raise app.UsageError("--out is required")
  os.makedirs(_OUT.value, exist_ok=True)
  jobs = [(size, length, topology) for size in _SIZES.value for length in LENGTHS
          for topology in SLICES]
  with concurrent.futures.ThreadPoolExecutor(_JOBS.value) as pool:
    reports = list(pool.map(
        lambda job: run(command(*job, *([f"--max_batch={_MAX_BATCH.value}"]
                                         if _MAX_BATCH.value else [])),
                        os.path.join(_OUT.value, "{}-{}-{}.json".format(*job))), jobs))
  print("| config | slice | mesh (data x fsdp x tensor) | batch x length | memory per chip "
        "(train) | collective bytes per step | largest batch per chip | roofline MFU bound | "
        "command |")
  print("|---|---|---|---|---|---|---|---|---|")
  for (size, _, _), report in zip(jobs, reports):
    if report:
      print(f"| {size} " + row(report))
  if "large" not in _SIZES.value:
    return
  print("\nlarge at 2048 x 512, parameters and optimizer state sharded over every chip:")
  with concurrent.futures.ThreadPoolExecutor(_JOBS.value) as pool:
    for generation, report in zip(LARGER_SLICES, pool.map(
        lambda slices: smallest_fitting_slice(slices, _fsdp_report), LARGER_SLICES.values())):
      missing = ("not compiled yet (--cached_only)" if _CACHED_ONLY.value else
                 f"no {generation} slice up to {LARGER_SLICES[generation][-1]}")
      print("| large " + row(report) if report else f"| large | {missing} |")


def smallest_fitting_slice(slices: tuple[str, ...],
                           report_of: Callable[[str], dict | None]) -> dict | None:
  """The report (`report_of(topology)`: compiled, or None if not) of large at 2048 x 512, all
  fsdp, on the first of `slices` where it fits.

  Going up, a slice whose step the compiler refused says how much memory it needed,
  and the slices too small by that measure (activations shrink with the chips) are
  skipped. That measure is only a guide: the temporaries grow faster than the batch
  per chip (large's need 1.2 GiB a sequence at 256 per chip on a v6e, 0.9 at 32), so
  it can skip a slice that fits. Hence, going down from the first fit, the slice
  below is compiled too unless the fit's own figures rule it out: its temporaries
  times the chips it has over the smaller slice's, above RULED_OUT times the HBM.
  """
  needed_chips, best = 0, None
  for index, topology in enumerate(slices):
    if tpu.parse_topology(topology).num_chips < needed_chips:
      continue
    report = report_of(topology)
    if report and report["fits"]:
      best, below = report, slices[:index]
      break
    if report and report["train"]["needed_bytes"]:
      needed_chips = report["chips"] * report["train"]["needed_bytes"] / report["chip"]["hbm_bytes"]
  if best is None:
    return None
  for topology in reversed(below):
    chips = tpu.parse_topology(topology).num_chips
    scaled = best["train"]["memory"]["temporaries"] * best["chips"] / chips
    if scaled > RULED_OUT * best["chip"]["hbm_bytes"]:
      break
    report = report_of(topology)
    if not (report and report["fits"]):
      break
    best = report
  return best


# Below a fitting slice, one whose share of the fit's temporaries exceeds this many times its
# HBM is not compiled: temporaries per chip at least double when the chips halve, less the
# buffers that do not shrink (a layer's gathered weights), far under half the HBM here.
RULED_OUT = 1.5


def _fsdp_report(topology: str) -> dict | None:
  return run(command("large", 512, topology, *FSDP),
             os.path.join(_OUT.value, f"large-fsdp-{topology}.json"))


if __name__ == "__main__":
  app.run(main)
