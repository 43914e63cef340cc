"""Throughput of the evaluation harness: user-steps per second, vector env vs one env at a time.

Run: ``python -m pytest benchmarks/test_evaluation_speed.py --benchmark-only`` (the user-steps/s
figure is in each benchmark's ``extra_info``; divide by the median time for the rate).
"""

from __future__ import annotations

import pytest

from recgym.evaluation import BASELINES, evaluate, make_eval_env
from recgym.recommenders.simulator_policy import RECOMMENDER_POLICIES

# (num_envs, episodes): a full vector wave, and a few episodes through one gymnasium env.
CASES = {"vector-128": (128, 128), "single": (None, 16)}


@pytest.fixture(scope="module", params=list(CASES))
def case_env(request, movielens_home):
    num_envs, episodes = CASES[request.param]
    env = make_eval_env("RecGym-MovieLens-v0", num_envs=num_envs, dataset="ml-latest-small")
    return env, episodes


# Baselines, then classical recommenders acting as policies (one fold-in per env whose history
# changed, per step).
POLICIES = {name: BASELINES[name] for name in ("oracle-greedy", "most-popular", "planner")} | {
    name: RECOMMENDER_POLICIES[name] for name in ("ensemble", "matrix factorization")
}


@pytest.mark.parametrize("policy", list(POLICIES))
def test_evaluate_throughput(benchmark, case_env, policy):
    env, episodes = case_env
    evaluate(POLICIES[policy], env, 4, seed=10_000)  # fit, compile and warm up outside the timing
    result = benchmark.pedantic(evaluate, args=(POLICIES[policy], env, episodes), kwargs={"seed": 0}, rounds=3)
    steps = int(result.episodes["length"].sum())
    benchmark.extra_info["user_steps"] = steps
    benchmark.extra_info["episodes"] = episodes
    assert steps >= episodes
