"""The main job's experiment selection: the default main job, ``--all`` and ``--only``."""

from __future__ import annotations

import json
import os

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


# --- experiments side by side (--jobs) ------------------------------------------------------------
from benchmarks.experiments import DEPENDS_ON, EXCLUSIVE, EXPECTED_SECONDS  # noqa: E402

_FAKES = {
    # writes a marker a moment before it ends; fake_second reads it
    "fake_first": ("import time\n"
                   "time.sleep(0.5)\n"
                   "(Path(ctx.out_dir) / 'first.done').write_text('done')\n"),
    "fake_second": ("if not (Path(ctx.out_dir) / 'first.done').exists():\n"
                    "    raise RuntimeError('fake_second started before fake_first ended')\n"),
    "fake_other": "",
    "fake_broken": "raise ValueError('fake_broken failed on purpose')\n",
}


@pytest.fixture
def fake_experiments(tmp_path, monkeypatch):
    """Stand-in experiments as modules on ``sys.path`` (the run's spawned workers inherit it)."""
    folder = tmp_path / "fakes"
    folder.mkdir()
    for name, body in _FAKES.items():
        indented = "".join(f"    {line}\n" for line in body.splitlines())
        (folder / f"{name}.py").write_text(
            "import os\nfrom pathlib import Path\n\nfrom benchmarks.common import ExperimentResult\n\n\n"
            "def run(ctx):\n" + indented +
            f"    return ExperimentResult(name={name!r}, title='fake {name}', columns=['pid'], rows=[{{'pid': os.getpid()}}],"
            " uses_dataset=False)\n")
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setattr(run, "EXPERIMENTS", {name: name for name in _FAKES})
    monkeypatch.setattr(run, "DEPENDS_ON", {"fake_second": ("fake_first",)})
    monkeypatch.setattr(run, "EXCLUSIVE", frozenset())
    monkeypatch.setattr(run, "EXPECTED_SECONDS", {"fake_first": 1.0})
    return tmp_path / "out"


def test_the_registry_s_scheduling_hints_name_registered_experiments():
    assert set(EXPECTED_SECONDS) == set(EXPERIMENTS)
    assert EXCLUSIVE <= set(EXPERIMENTS)
    for name, deps in DEPENDS_ON.items():
        assert name in EXPERIMENTS and set(deps) <= set(EXPERIMENTS)
        # registry order still runs them in a valid order with one job, and the graph is acyclic
        assert all(list(EXPERIMENTS).index(dep) < list(EXPERIMENTS).index(name) for dep in deps)


def test_start_order_puts_the_longest_chain_first_and_the_exclusive_ones_last():
    # the A2C agent and the policies table that scores it (309 + 644 s) before the tuner (736 s)
    assert run.start_order(list(MAIN_JOB))[:2] == ["movielens_agent", "pipeline_tuner"]
    every = run.start_order(list(EXPERIMENTS))
    assert sorted(every) == sorted(EXPERIMENTS)
    assert every[-len(EXCLUSIVE):] == [name for name in EXPERIMENTS if name in EXCLUSIVE]
    # without the policies table the agent is a chain of its own, shorter than the tuner
    assert run.start_order(["movielens_agent", "pipeline_tuner"]) == ["pipeline_tuner", "movielens_agent"]


def test_next_to_start_waits_for_dependencies_and_runs_exclusive_ones_alone():
    selected = {"movielens_agent", "movielens_policies", "pipeline_live", "data_summary"}
    waiting = run.start_order(sorted(selected))
    assert run.next_to_start(waiting, set(), set(), selected) == "movielens_agent"
    # the policies table waits for the agent; data_summary may start beside it
    assert run.next_to_start(["movielens_policies", "data_summary", "pipeline_live"], set(),
                             {"movielens_agent"}, selected) == "data_summary"
    assert run.next_to_start(["movielens_policies", "pipeline_live"], {"data_summary"},
                             {"movielens_agent"}, selected) is None
    assert run.next_to_start(["movielens_policies", "pipeline_live"], {"data_summary", "movielens_agent"},
                             set(), selected) == "movielens_policies"
    # the exclusive one: not while another runs or waits; nothing beside it
    assert run.next_to_start(["pipeline_live"], {"data_summary"}, {"movielens_policies"}, selected) is None
    assert run.next_to_start(["pipeline_live"], selected - {"pipeline_live"}, set(), selected) == "pipeline_live"
    assert run.next_to_start(["data_summary"], set(), {"pipeline_live"}, selected) is None
    # a dependency outside the run is not waited for
    assert run.next_to_start(["movielens_policies"], set(), set(), {"movielens_policies"}) == "movielens_policies"


def test_two_jobs_run_in_worker_processes_and_keep_dependencies(fake_experiments, capsys):
    out = fake_experiments
    assert run.main(["--only", "fake_first", "fake_second", "fake_other", "--jobs", "2", "--dataset",
                     "synthetic", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "[3 experiments, 2 at a time:" in printed
    pids = {name: json.loads((out / "full" / f"{name}.json").read_text()) for name in ("fake_first", "fake_second",
                                                                                        "fake_other")}
    assert all(payload["jobs"] == 2 for payload in pids.values())
    workers = {payload["rows"][0]["pid"] for payload in pids.values()}
    assert os.getpid() not in workers and len(workers) <= 2  # a pool of two worker processes
    # results.md keeps registry order whatever order they finished in
    index = (out / "full" / "results.md").read_text()
    assert index.index("fake_first") < index.index("fake_second") < index.index("fake_other")


def test_one_job_runs_in_this_process(fake_experiments):
    out = fake_experiments
    assert run.main(["--only", "fake_first", "fake_second", "--jobs", "1", "--dataset", "synthetic",
                     "--out", str(out)]) == 0
    payload = json.loads((out / "full" / "fake_second.json").read_text())
    assert payload["rows"][0]["pid"] == os.getpid() and payload["jobs"] == 1


def test_a_failing_experiment_stops_the_run_with_its_error(fake_experiments):
    out = fake_experiments
    with pytest.raises(ValueError, match="fake_broken failed on purpose"):
        run.main(["--only", "fake_broken", "fake_other", "--jobs", "2", "--dataset", "synthetic",
                  "--out", str(out)])
    assert not (out / "full" / "results.md").exists()  # no index of a run that failed


def test_jobs_must_be_positive(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run.main(["--only", "data_summary", "--jobs", "0"])
    assert exit_info.value.code == 2
    assert "--jobs must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        run.run_experiments(["data_summary"], None, 0, print)
