"""The main job's experiment selection: the default main job, ``--all`` and ``--only``."""

from __future__ import annotations

import json

import pytest

from benchmarks import run
from benchmarks.experiments import EXPERIMENTS, EXTENDED, MAIN_JOB


def test_the_main_job_is_the_registry_minus_the_research_record():
    assert set(EXTENDED) <= set(EXPERIMENTS)
    assert list(MAIN_JOB) == [name for name in EXPERIMENTS if name not in EXTENDED]
    # the README headline: the agent trains before the policies table that scores it, the tuner
    # joins the pipeline baselines
    for name in ("movielens_agent", "movielens_policies", "pipeline_baselines", "pipeline_tuner"):
        assert name in MAIN_JOB
    assert MAIN_JOB.index("movielens_agent") < MAIN_JOB.index("movielens_policies")


def test_selection_default_all_and_only():
    assert run.selected_experiments() == list(MAIN_JOB)
    assert run.selected_experiments(run_all=True) == list(EXPERIMENTS)
    # --only runs in registry order, each once, whatever order it was given in
    assert run.selected_experiments(
        only=["movielens_policies", "movielens_agent", "movielens_agent"]
    ) == ["movielens_agent", "movielens_policies"]
    assert run.selected_experiments(only=["pipeline_live"]) == ["pipeline_live"]


def test_selection_rejects_unknown_names_and_both_flags():
    with pytest.raises(ValueError, match="unknown experiments \\['nope'\\]"):
        run.selected_experiments(only=["nope"])
    with pytest.raises(ValueError, match="either"):
        run.selected_experiments(only=["data_summary"], run_all=True)


def test_cli_rejects_all_with_only(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run.main(["--all", "--only", "data_summary"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_main_writes_only_the_selected_experiment(tmp_path, capsys):
    assert run.main(["--only", "data_summary", "--dataset", "synthetic", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[data_summary:" in out
    assert "not run" not in out  # --only says nothing of what it was not asked for
    written = sorted(p.name for p in (tmp_path / "full").iterdir())
    assert written == ["data_summary.json", "data_summary.md", "results.md"]
    payload = json.loads((tmp_path / "full" / "data_summary.json").read_text())
    assert payload["synthetic"] is True and payload["quick"] is False


def test_the_default_run_names_what_it_left_out(tmp_path, capsys, monkeypatch):
    # a stand-in main job of one cheap experiment, so the default path runs in a second
    monkeypatch.setattr(run, "MAIN_JOB", ("data_summary",))
    assert run.main(["--dataset", "synthetic", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    left_out = [name for name in EXPERIMENTS if name != "data_summary"]
    assert f"not run (research record; --all runs them, --only NAME one): {', '.join(left_out)}" in out
