"""The main job's agent experiment: trains, checkpoints, and hands the policies table its agent."""

from __future__ import annotations

import numpy as np

from benchmarks.common import RunContext
from benchmarks.experiments import movielens_agent
from recgym.evaluation import evaluate, make_eval_env


def test_quick_run_trains_saves_and_is_picked_up_by_the_policies_table(tmp_path, monkeypatch):
    monkeypatch.setattr(movielens_agent, "WORLDS", {"dynamic, slate 5": ("RecGym-MovieLens-v0", {"slate_size": 5})})
    monkeypatch.setattr(movielens_agent, "QUICK", {"seeds": 2, "total_steps": 64 * 8 * 3})
    ctx = RunContext(quick=True, out_dir=tmp_path, dataset="synthetic", synthetic=True, seed=0)
    result = movielens_agent.run(ctx)
    (row,) = result.rows
    assert row["world"] == "dynamic, slate 5" and row["seeds"] == 2
    assert len(result.records[0]["final_training_return_per_seed"]) == 2
    curve = (movielens_agent.world_folder(tmp_path, "dynamic, slate 5") / "learning_curve.csv").read_text()
    assert len(curve.strip().splitlines()) == 1 + 3  # header + one row per update
    assert movielens_agent.trained_agent_policies(ctx, "static") == {}  # not trained here
    (factory,) = movielens_agent.trained_agent_policies(ctx, "dynamic, slate 5").values()
    env = make_eval_env("RecGym-MovieLens-v0", num_envs=4, dataset="synthetic", slate_size=5)
    episodes = evaluate(factory, env, 4, seed=0).episodes
    assert len(episodes) == 4 and np.all(np.isfinite(episodes["return"].to_numpy()))
