"""The probe curves' reading of runs: FLOPs on the x axis from each run's own config, models
grouped across seeds, the last probe in the table, and a clear refusal of a run without probes."""

import json

import pytest

from electra_jax import config as config_lib
from electra_jax.errors import DataError
from electra_jax.probes import curves
from electra_jax.performance import flops


def _write_run(path, objective: str, records: list[dict]) -> float:
  config = config_lib.default_config()
  config.objective = objective
  path.mkdir()
  (path / "config.json").write_text(config.to_json_best_effort())
  (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) +
                                      '{"step": 9')  # a line cut short by a killed run
  return flops.step_flops(config)["total"]


def test_runs_are_read_at_their_own_flops_and_tabulated_by_their_last_probe(tmp_path):
  electra_flops = _write_run(tmp_path / "electra-seed0", "electra", [
      {"step": 0, "split": "probe_random", "sst2_ridge_accuracy": 0.55},
      {"step": 10, "split": "train", "loss": 3.0},
      {"step": 10, "split": "probe", "sst2_ridge_accuracy": 0.6},
      {"step": 20, "split": "probe", "sst2_ridge_accuracy": 0.7}])
  mlm_flops = _write_run(tmp_path / "mlm-seed1", "mlm", [
      {"step": 25, "split": "probe", "sst2_ridge_accuracy": 0.65, "conll_ridge_f1": 0.1}])
  assert mlm_flops != electra_flops
  runs = {str(tmp_path / name): curves.read_run(str(tmp_path / name))
          for name in ("electra-seed0", "mlm-seed1")}
  electra = runs[str(tmp_path / "electra-seed0")]
  assert electra["probes"] == {"sst2_ridge_accuracy": [(10, 0.6), (20, 0.7)]}
  assert electra["random"] == {"sst2_ridge_accuracy": 0.55}
  assert electra["flops_per_step"] == electra_flops
  assert [curves.model_name(w) for w in runs] == ["electra", "mlm"]
  table = curves.markdown(runs)
  assert f"| electra-seed0 | 20 | {20 * electra_flops:.3g} | 0.7000 (0.5500) | - |" in table
  assert f"| mlm-seed1 | 25 | {25 * mlm_flops:.3g} | 0.6500 | 0.1000 |" in table
  pytest.importorskip("matplotlib")
  curves.plot(runs, str(tmp_path / "curves.png"))
  assert (tmp_path / "curves.png").stat().st_size > 0


def test_a_run_that_never_probed_is_refused_with_the_fix(tmp_path):
  _write_run(tmp_path / "run", "electra", [{"step": 10, "split": "train", "loss": 3.0}])
  with pytest.raises(DataError, match="no probes: the run needs --config.probes.every"):
    curves.read_run(str(tmp_path / "run"))
