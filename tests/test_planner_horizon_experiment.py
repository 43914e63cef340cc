"""benchmarks.experiments.planner_horizon: table layout, the H = 1 check and the cost columns (synthetic)."""

from __future__ import annotations

from benchmarks.common import RunContext
from benchmarks.experiments import EXPERIMENTS, planner_horizon


def test_quick_run_reports_horizons_agreement_and_cost(tmp_path, monkeypatch):
    assert EXPERIMENTS["planner_horizon"] == "benchmarks.experiments.planner_horizon"
    monkeypatch.setattr(planner_horizon, "_episodes", lambda ctx, pool: 16)
    ctx = RunContext(quick=True, out_dir=tmp_path, dataset="synthetic", synthetic=True, seed=0)
    result = planner_horizon.run(ctx)
    assert [r["policy"] for r in result.rows] == [
        "oracle-greedy", "boredom-aware", "planner, H = 1", "planner, H = 5"]
    one_step = result.rows[2]
    # a one-step horizon serves oracle-greedy's item in every scored state, so returns are equal
    assert one_step["same as oracle-greedy"] == "100.0%"
    assert one_step["/ oracle-greedy"] == "1.000 [1.000, 1.000]"
    assert one_step["return"] == result.rows[0]["return"]
    for record in result.records:
        assert record["episodes"] == 16 and record["seconds"] > 0 and record["traces"] <= 1
        assert float(result.rows[2]["s / 1,000 episodes"]) > 0
    assert any("load average" in note for note in result.notes)


def test_the_full_run_includes_rollouts_to_the_end_in_both_worlds():
    assert None in planner_horizon.HORIZONS and None in planner_horizon.SLATE_HORIZONS
    assert 1 in planner_horizon.HORIZONS  # the oracle-greedy check
    assert planner_horizon.horizon_label(None) == "to the end"
    assert planner_horizon.horizon_label(20) == "H = 20"
