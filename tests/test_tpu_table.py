"""The TPU table's search for the smallest slice where large fits: what it compiles and what it
reports, with made-up compile reports (no compiler runs)."""

from benchmarks import tpu_table

GIB = 2**30
SLICES = ("v6e-8", "v6e-16", "v6e-32", "v6e-64", "v6e-128", "v6e-256")


def _compiler(gib_per_sequence: float, refusal_at_8_chips_gib: float | None = None):
  """A stand-in compile of 2048 sequences on 32 GiB chips, each taking `gib_per_sequence`
  (the 8-chip refusal can say another figure, as temporaries grow faster than the batch);
  and the list of the slices it compiled."""
  compiled = []

  def report_of(topology: str) -> dict:
    compiled.append(topology)
    chips = int(topology.split("-")[1])
    temporaries = 2048 / chips * gib_per_sequence * GIB
    if chips == 8 and refusal_at_8_chips_gib:
      temporaries = refusal_at_8_chips_gib * GIB
    fits = temporaries <= 32 * GIB
    return dict(topology=topology, chips=chips, fits=fits, chip=dict(hbm_bytes=32 * GIB),
                train=dict(memory=dict(temporaries=temporaries) if fits else None,
                           needed_bytes=None if fits else temporaries))
  return report_of, compiled


def test_a_slice_skipped_on_a_refusals_figures_is_compiled_when_the_fit_above_allows_it():
  # The 8-chip refusal (308.6 GiB, as the real v6e-8's) says 77 chips: the search jumps to 128,
  # whose figures (14.4 GiB) leave 64 chips possible, so 64 is compiled and is the smallest;
  # 32 is ruled out by 64's own (2 x 28.8 GiB > 1.5 x 32).
  report_of, compiled = _compiler(0.9, refusal_at_8_chips_gib=308.6)
  assert tpu_table.smallest_fitting_slice(SLICES, report_of)["topology"] == "v6e-64"
  assert compiled == ["v6e-8", "v6e-128", "v6e-64"]


def test_the_slice_below_a_fit_is_compiled_and_refused():
  report_of, compiled = _compiler(1.2)  # 19.2 GiB at 128 chips; 38.4 at 64 does not fit
  assert tpu_table.smallest_fitting_slice(SLICES, report_of)["topology"] == "v6e-128"
  assert compiled == ["v6e-8", "v6e-128", "v6e-64"]


def test_the_slice_below_a_fit_is_not_compiled_when_the_fits_figures_rule_it_out():
  report_of, compiled = _compiler(1.75)  # 28 GiB at 128 chips: 64 would need 56 > 1.5 x 32
  assert tpu_table.smallest_fitting_slice(SLICES, report_of)["topology"] == "v6e-128"
  assert compiled == ["v6e-8", "v6e-128"]


def test_no_slice_fits():
  report_of, _ = _compiler(100.0)
  assert tpu_table.smallest_fitting_slice(SLICES, report_of) is None
