"""RecGym-PipelineLive-v0: the simulator's spaces over the live pipeline, policies unchanged."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import recgym  # noqa: F401  (registers the ids)
from recgym.envs.pipeline import dynamics
from recgym.envs.pipeline.baselines import make_baseline
from recgym.envs.pipeline.live import Fault
from recgym.envs.pipeline.live.env import LivePipelineEnv, check_action
from recgym.envs.pipeline.params import PipelineProfile, save_profile

FAST = dict(core_budget=2, memory_budget_gib=4.0, interval_s=0.3, settle_s=0.05, min_batch_log2=6, initial_batch_log2=6,
            max_batch_log2=7, max_prefetch=3, max_cores_per_stage=2, stage_timeout_s=5.0, poll_s=0.05)


@pytest.fixture(scope="module")
def live_env(movielens_home, count_descendants):
    before = count_descendants()
    env = gym.make("RecGym-PipelineLive-v0", **FAST)
    yield env
    env.close()
    assert count_descendants() - before == set()


def test_spaces_are_the_simulators(live_env):
    params = live_env.unwrapped.params
    sim = gym.make("RecGym-Pipeline-v0", params=params)
    assert live_env.observation_space == sim.observation_space
    assert live_env.action_space == sim.action_space == gym.spaces.Discrete(17)


def test_the_spec_reports_the_envs_own_time_limit(live_env):
    # No TimeLimit in the registration (the env truncates itself): the spec says where.
    assert live_env.spec.max_episode_steps == live_env.unwrapped.params.max_episode_steps == 100
    env = LivePipelineEnv(**FAST, max_episode_steps=7)
    env.spec = live_env.spec
    assert env.spec.max_episode_steps == 7
    env.close()


def test_increment_actions_move_the_live_allocation_as_in_the_simulator(live_env):
    obs, info = live_env.reset(seed=0)
    assert live_env.observation_space.contains(obs)
    np.testing.assert_array_equal(obs[dynamics.OBS_CORES], 1.0)
    assert obs[dynamics.OBS_THROUGHPUT] > 0 and obs[dynamics.OBS_MEMORY] > 0
    assert obs[dynamics.OBS_BUDGET] == 2 and 1 <= obs[dynamics.OBS_AVAILABLE] <= 2
    params = live_env.unwrapped.params
    allocation = (1,) * 6 + (params.initial_batch_log2, params.initial_prefetch)
    for action in (4, 12, 14, 5, 13, 16):  # transform +1, batch x2, prefetch +1, transform -1, batch /2, no-op
        obs, reward, terminated, truncated, info = live_env.step(action)
        allocation = dynamics.apply_action(np, params, allocation, action)
        assert live_env.observation_space.contains(obs)
        np.testing.assert_array_equal(obs[dynamics.OBS_CORES], allocation[:6])
        assert obs[dynamics.OBS_BATCH] == 2 ** allocation[6] and obs[dynamics.OBS_PREFETCH] == allocation[7]
        assert reward == pytest.approx(info["throughput"] * 1e-3) and reward > 0
        assert not terminated and not truncated
        assert info["oom"] is False and info["memory_gib"] < 4.0
    assert len(live_env.unwrapped.pipeline.worker_pids("transform")) == 1


def test_a_baseline_tuner_runs_on_the_live_env_unchanged(live_env):
    obs, info = live_env.reset()
    policy = make_baseline("ray-autoscaler", live_env.unwrapped.params)
    policy.reset(seed=0)
    for _ in range(3):
        obs, reward, terminated, truncated, info = live_env.step(policy.act(obs, info))
        assert live_env.observation_space.contains(obs) and not terminated


def test_bad_actions_raise_clear_errors(live_env):
    live_env.reset()
    with pytest.raises(ValueError, match=r"increment action must be in \[0, 17\)"):
        live_env.step(17)
    with pytest.raises(ValueError, match="integers"):
        live_env.step(1.5)
    params = gym.make("RecGym-Pipeline-v0", action_mode="absolute", max_cores_per_stage=2).unwrapped.params
    with pytest.raises(ValueError, match=r"entry 2 \(cores\[transform\] - 1\) must be in \[0, 2\), got 5"):
        check_action(params, np.array([0, 0, 5, 0, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="8 entries"):
        check_action(params, np.array([0, 0]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(core_budget=0), "core_budget"),
        (dict(core_budget=10_000), "core_budget"),
        (dict(memory_budget_gib=-1.0), "memory_budget_gib"),
        (dict(memory_budget_gib=1e6), "memory_budget_gib"),
        (dict(interval_s=0), "interval_s"),
        (dict(action_mode="sideways"), "action_mode"),
        (dict(max_cores_per_stage=0), "max_cores_per_stage"),
        (dict(render_mode="human"), "render"),
        (dict(profile=3), "profile"),
        (dict(dataset="ml-nonexistent"), "unknown dataset"),
    ],
)
def test_bad_constructor_arguments_raise_naming_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LivePipelineEnv(**kwargs)


def test_memory_over_the_budget_terminates_with_the_oom_penalty(movielens_home, count_descendants):
    before = count_descendants()
    env = gym.make("RecGym-PipelineLive-v0", **{**FAST, "memory_budget_gib": 4.0},
                   fault=Fault("leak", "transform", after_elements=0, leak_mib=8))
    try:
        env.reset(seed=0)
        env.unwrapped.pipeline.memory_budget_gib = env.unwrapped.pipeline.memory_gib() + 0.15
        for _ in range(60):
            obs, reward, terminated, truncated, info = env.step(16)
            if terminated:
                break
        assert terminated and reward == -100.0 and info["oom"]
        assert obs[dynamics.OBS_THROUGHPUT] == 0 and np.all(obs[dynamics.OBS_RATES] == 0)
        assert count_descendants() - before == set()  # torn down at once, not at close()
        with pytest.raises(RuntimeError, match="reset"):
            env.step(16)
    finally:
        env.close()
    assert count_descendants() - before == set()


def test_a_calibrated_profile_adds_the_simulators_view(movielens_home, tmp_path):
    profile = PipelineProfile(
        cpu_seconds_per_sample=(1e-7, 3e-7, 8e-7, 4e-7, 3e-7, 2e-7), serial_fraction=(0.0,) * 6,
        worker_memory_gib=(0.005,) * 6, element_kib=(0.01, 0.01, 0.11, 0.11, 0.11, 0.11),
        batch_overhead_seconds=2e-4, core_budget=2, memory_gib=4.0, trainer_memory_gib=0.45,
        shuffle_buffer=8192, trainer_batch_seconds=5e-4, trainer_sample_seconds=1.6e-6, trainer_cpu_fraction=1.0)
    path = save_profile(tmp_path / "profile.json", profile, {"oversubscription_basis": "demand",
                                                             "oversubscription_overhead": 0.01})
    env = gym.make("RecGym-PipelineLive-v0", **{**FAST, "action_mode": "absolute"}, profile=path)
    try:
        assert env.unwrapped.params.oversubscription_basis == "demand"
        obs, info = env.reset(seed=0)
        assert info["optimum"] > 0 and info["predicted_throughput"] > 0
        assert env.action_space.contains(info["optimal_action"])
        oracle = make_baseline("oracle", env.unwrapped.params)
        oracle.reset(seed=0)
        obs, reward, terminated, truncated, info = env.step(oracle.act(obs, info))
        assert not terminated and info["efficiency"] > 0
    finally:
        env.close()
