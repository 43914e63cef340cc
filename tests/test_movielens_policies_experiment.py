"""benchmarks.experiments.movielens_policies: table layout, notes and plot on the synthetic world."""

from __future__ import annotations

import pytest

from benchmarks.common import RunContext
from benchmarks.experiments import EXPERIMENTS, movielens_policies
from recgym.evaluation import BASELINES


def test_experiment_runs_registered_policies_and_worlds(tmp_path, monkeypatch):
    assert EXPERIMENTS["movielens_policies"] == "benchmarks.experiments.movielens_policies"
    # One world, two policies: the structure, not the numbers (tests/test_phenomenon.py has those).
    monkeypatch.setattr(movielens_policies, "WORLDS", {"dynamic": ("RecGym-MovieLens-v0", {})})
    monkeypatch.setattr(
        movielens_policies,
        "POLICIES",
        {"oracle-greedy": BASELINES["oracle-greedy"], "boredom-aware": BASELINES["boredom-aware"]},
    )
    ctx = RunContext(quick=True, out_dir=tmp_path, dataset="synthetic", synthetic=True, seed=1)
    result = movielens_policies.run(ctx)
    assert [(r["world"], r["policy"]) for r in result.rows] == [
        ("dynamic", "oracle-greedy"),
        ("dynamic", "boredom-aware"),
    ]
    assert set(movielens_policies.METRICS) <= set(result.columns)
    assert all("±" in r["return"] for r in result.rows)
    assert any("boredom-aware / oracle-greedy" in note for note in result.notes)
    record = result.records[0]
    assert record["episodes"] == 120 and record["return"]["n"] == 120
    # where the time goes: every cell timed, the note names the world's total and the cells
    assert all(r["seconds"] > 0 for r in result.records)
    time_note = next(note for note in result.notes if note.startswith("Wall-clock time"))
    total = sum(r["seconds"] for r in result.records)
    assert f"{total:.0f} s in all; per world: dynamic {total:.0f} s" in time_note
    assert "oracle-greedy in dynamic" in time_note and "boredom-aware in dynamic" in time_note
    assert result.figures and result.figures[0].is_file()
    assert "| dynamic | oracle-greedy |" in result.to_markdown()


def test_every_row_reports_its_fraction_of_the_planner(tmp_path, monkeypatch):
    from recgym.envs.movielens import PlannerConfig, PlannerPolicy

    cheap = PlannerConfig(horizon=2, candidates=2, base_candidates=1, samples=2, shortlist=8)
    monkeypatch.setattr(movielens_policies, "WORLDS", {"dynamic": ("RecGym-MovieLens-v0", {})})
    monkeypatch.setattr(
        movielens_policies,
        "POLICIES",
        {"oracle-greedy": BASELINES["oracle-greedy"],
         "planner": lambda ctx: PlannerPolicy(ctx.access, cheap, ctx.slate_size)},
    )
    ctx = RunContext(quick=True, out_dir=tmp_path, dataset="synthetic", synthetic=True, seed=1)
    result = movielens_policies.run(ctx)
    assert result.columns[-1] == "fraction of planner"
    greedy, planner = result.records
    ratio = greedy["return"]["mean"] / planner["return"]["mean"]
    assert greedy["fraction_of_planner"]["ratio"] == pytest.approx(ratio)
    low, high = greedy["fraction_of_planner"]["low"], greedy["fraction_of_planner"]["high"]
    assert low < ratio < high
    assert result.rows[0]["fraction of planner"] == f"{ratio:.3f} [{low:.3f}, {high:.3f}]"
    assert result.rows[1]["fraction of planner"] == "1.000 [1.000, 1.000]"


def test_rows_without_a_planner_say_so(tmp_path, monkeypatch):
    monkeypatch.setattr(movielens_policies, "WORLDS", {"dynamic": ("RecGym-MovieLens-v0", {})})
    monkeypatch.setattr(movielens_policies, "POLICIES", {"random": BASELINES["random"]})
    ctx = RunContext(quick=True, out_dir=tmp_path, dataset="synthetic", synthetic=True, seed=1)
    assert movielens_policies.run(ctx).rows[0]["fraction of planner"] == "n/a"


def test_ratio_columns_pair_every_row_with_the_best_non_privileged_baseline(tmp_path, monkeypatch):
    monkeypatch.setattr(movielens_policies, "WORLDS", {"dynamic": ("RecGym-MovieLens-v0", {})})
    monkeypatch.setattr(movielens_policies, "POLICIES", {
        "random": BASELINES["random"], "most-popular": BASELINES["most-popular"],
        "oracle-greedy": BASELINES["oracle-greedy"]})
    ctx = RunContext(quick=True, out_dir=tmp_path, dataset="synthetic", synthetic=True, seed=1)
    result = movielens_policies.run(ctx)
    rows = {row["policy"]: row for row in result.rows}
    records = {record["policy"]: record for record in result.records}
    best = "× best non-privileged"
    assert rows["most-popular"][best] == "1.00 [1.00, 1.00]"  # random is not a baseline to beat
    assert records["oracle-greedy"][best]["reference"] == "most-popular"
    ratio = records["oracle-greedy"][best]["ratio"]
    assert ratio == pytest.approx(records["oracle-greedy"]["return"]["mean"] / records["most-popular"]["return"]["mean"])
    low, high = records["oracle-greedy"][best]["ci95"]
    assert low < ratio < high
    assert records["random"]["× oracle-greedy"]["reference"] == "oracle-greedy"
    assert records["random"]["× oracle-greedy"]["ratio"] < 1.0
    assert rows["random"]["× boredom-aware"] == "n/a"  # no boredom-aware row in this run


def test_plot_takes_policies_missing_from_some_worlds(tmp_path):
    # a trained agent runs only in the worlds it was trained in (the quick main job once crashed here)
    import numpy as np

    from benchmarks.experiments.movielens_policies import _plot

    returns = {("dynamic", "random"): np.array([1.0, 2.0, 3.0]), ("dynamic", "a2c"): np.array([2.0, 3.0, 4.0]),
               ("fairness", "random"): np.array([5.0, 6.0, 7.0])}
    path = _plot(tmp_path / "plot.png", returns)
    assert path is None or (tmp_path / "plot.png").stat().st_size > 0
