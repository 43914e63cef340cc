"""The optimum is instrumentation: absent from plain envs, added by the documented wrappers."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import recgym  # noqa: F401  (registers the ids)
from recgym.envs.pipeline import dynamics, optimum, wrappers
from recgym.envs.pipeline.env import PipelineEnv, PipelineVectorEnv
from recgym.envs.pipeline.wrappers import PipelineOptimum, PipelineVectorOptimum

ENV_ID = "RecGym-Pipeline-v0"
OPTIMUM_KEYS = {"optimum", "efficiency", "optimal_action"}


def _search(params, world, info):
    """The optimum searched for one world alone, in the conditions ``info`` reports."""
    world = dynamics.PipelineWorld(**{name: np.asarray(getattr(world, name), dtype=np.float32)
                                      for name in dynamics.PipelineWorld.__dataclass_fields__})
    return optimum.optimum(params, world, after_change=bool(info["after_change"]),
                           neighbour_on=bool(info["neighbour_on"]))


def test_plain_envs_have_no_optimum_and_track_optimum_adds_it():
    env = gym.make(ENV_ID)
    _, info = env.reset(seed=0)
    assert not OPTIMUM_KEYS & set(info)
    assert {"element_gib", "shuffle_buffer"} <= set(info)  # profiler facts stay
    assert not OPTIMUM_KEYS & set(env.step(0)[4])
    env = gym.make(ENV_ID, track_optimum=True)
    assert type(env.unwrapped) is PipelineEnv
    _, info = env.reset(seed=0)
    assert OPTIMUM_KEYS <= set(info) and OPTIMUM_KEYS <= set(env.step(0)[4])
    assert gym.make(env.spec).reset(seed=0)[1]["optimum"] == info["optimum"]  # the spec recreates it
    venv = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode="vector_entry_point")
    assert type(venv) is PipelineVectorEnv and not OPTIMUM_KEYS & set(venv.reset(seed=0)[1])
    venv = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode="vector_entry_point", track_optimum=True)
    assert type(venv.unwrapped) is PipelineVectorEnv
    assert OPTIMUM_KEYS <= set(venv.reset(seed=0)[1])
    _, _, _, _, info = venv.step(np.zeros(2, dtype=np.int64))
    assert {f"_{key}" for key in OPTIMUM_KEYS} <= set(info)


def test_track_optimum_is_not_a_params_field():
    with pytest.raises(ValueError, match="track_optimum is an argument of gym.make"):
        PipelineEnv(track_optimum=True)


@pytest.mark.parametrize("scenario", ["random", "noisy-neighbours"])
def test_optimum_in_info_equals_a_search_per_episode_and_condition(scenario):
    env = PipelineOptimum(gym.make(ENV_ID, scenario=scenario))
    params = env.unwrapped.params
    rng = np.random.default_rng(0)
    conditions = set()
    for episode in range(3):
        _, info = env.reset() if episode else env.reset(seed=11)
        for _ in range(40):
            alone = _search(params, env.unwrapped.state.world, info)
            assert info["optimum"] == pytest.approx(float(alone.throughput), rel=1e-6)
            np.testing.assert_array_equal(info["optimal_action"], alone.absolute_action(params))
            assert info["efficiency"] == pytest.approx(info["throughput"] / info["optimum"], rel=1e-6)
            conditions.add((bool(info["after_change"]), bool(info["neighbour_on"])))
            *_, terminated, truncated, info = env.step(int(rng.integers(0, 17)))
            if terminated or truncated:
                break
    assert len(conditions) >= 2  # the neighbour switched: more than one condition was checked


def test_one_search_per_episode_and_distinct_condition_value(monkeypatch):
    calls = []
    real = wrappers.optimum
    monkeypatch.setattr(wrappers, "optimum", lambda *a, **k: calls.append(k) or real(*a, **k))
    env = PipelineOptimum(PipelineEnv(scenario="steady"))
    env.reset(seed=0)
    for _ in range(99):
        env.step(dynamics.NOOP_ACTION)
    # steady's change event changes nothing: the conditions before and after share one value
    assert len(calls) == 1
    env.reset()
    assert len(calls) == 2  # a new episode, a new world
    calls.clear()
    env = PipelineOptimum(PipelineEnv(scenario="drift"))
    env.reset(seed=0)
    for _ in range(99):
        env.step(dynamics.NOOP_ACTION)
    assert [c["after_change"] for c in calls] == [False, True]


def test_vector_optimum_equals_the_single_wrapper_across_auto_resets():
    n = 3
    kwargs = {"scenario": "memory-tight", "action_mode": "absolute"}  # random allocations crash often
    venv = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="vector_entry_point", track_optimum=True, **kwargs)
    singles = [gym.make(ENV_ID, track_optimum=True, **kwargs) for _ in range(n)]
    _, info = venv.reset(seed=5)
    single_infos = [env.reset(seed=5 + i)[1] for i, env in enumerate(singles)]
    venv.action_space.seed(0)
    needs_reset = np.zeros(n, dtype=bool)
    ended = 0
    for t in range(40):
        # where an env was reset by the last call (next-step auto-reset) its info is not a step's
        stepped = info.get("_efficiency", np.ones(n, dtype=bool))
        for i in np.flatnonzero(stepped):
            assert info["optimum"][i] == pytest.approx(single_infos[i]["optimum"], rel=1e-5), (t, i)
            np.testing.assert_array_equal(info["optimal_action"][i], single_infos[i]["optimal_action"])
            assert info["efficiency"][i] == pytest.approx(single_infos[i]["efficiency"], rel=1e-4, abs=1e-6)
        actions = venv.action_space.sample()
        _, _, terminated, truncated, info = venv.step(actions)
        for i, env in enumerate(singles):
            single_infos[i] = env.reset()[1] if needs_reset[i] else env.step(actions[i])[4]
        needs_reset = terminated | truncated
        ended += int(needs_reset.sum())
    assert ended > 0  # episodes ended: the optimum of the next episode's world was checked too


def test_wrapped_env_passes_check_env():
    env = PipelineOptimum(PipelineEnv(scenario="noisy-neighbours", action_mode="absolute"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # shared info arrays and the like are failures ...
        warnings.filterwarnings("ignore", message=".*different from the unwrapped")  # ... being wrapped is not
        check_env(env, skip_render_check=True)


def test_wrappers_reject_other_envs():
    with pytest.raises(TypeError, match=r"PipelineOptimum wraps a RecGym-Pipeline-v0 single env \(PipelineEnv\), got CartPoleEnv"):
        PipelineOptimum(gym.make("CartPole-v1"))
    venv = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode="sync")  # a SyncVectorEnv of single envs
    with pytest.raises(TypeError, match=r"PipelineVectorOptimum wraps a RecGym-Pipeline-v0 native vector env \(PipelineVectorEnv\), got SyncVectorEnv"):
        PipelineVectorOptimum(venv)
