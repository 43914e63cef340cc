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


def test_full_run_trains_the_static_world_for_the_steps_its_configuration_was_chosen_and_evaluated_at(tmp_path):
    full = RunContext(quick=False, out_dir=tmp_path, dataset="ml-latest-small", synthetic=False, seed=0)
    quick = RunContext(quick=True, out_dir=tmp_path, dataset="ml-latest-small", synthetic=False, seed=0)
    configs = {world: movielens_agent.agent_config(full, env_id, kwargs, world)
               for world, (env_id, kwargs) in movielens_agent.WORLDS.items()}
    assert configs["static"].total_steps == 500_000 and configs["static"].learning_rate == 3e-5
    assert configs["dynamic"].total_steps == configs["dynamic, slate 5"].total_steps == 1_000_000
    assert configs["dynamic, slate 5"].slate_size == 5 and configs["dynamic"].warm_start == 20.0
    # GAE lambda 1 was selected for single items only (docs/agents.md, History, fourth round)
    assert configs["dynamic"].gae_lambda == 1.0
    assert configs["dynamic, slate 5"].gae_lambda == configs["static"].gae_lambda == 0.95
    static_env, static_kwargs = movielens_agent.WORLDS["static"]
    assert movielens_agent.agent_config(quick, static_env, static_kwargs, "static").total_steps == 64 * 8 * 40
