"""RecGym-Pipeline-v0: gymnasium contract, vector env, JAX core, bad inputs, episode semantics."""

from __future__ import annotations

import warnings

import gymnasium as gym
import jax
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import recgym  # noqa: F401  (registers the ids)
from recgym.core.testing import (
    assert_backends_agree,
    check_functional_contract,
    check_gym_contract,
    check_key_chain,
    check_vector_contract,
)
from recgym.envs.pipeline import dynamics
from recgym.envs.pipeline.core import PipelineCore
from recgym.envs.pipeline.env import PipelineEnv
from recgym.envs.pipeline.params import ACTION_MODES, SCENARIOS, PipelineProfile, make_params
from recgym.envs.pipeline.wrappers import PipelineOptimum

ENV_ID = "RecGym-Pipeline-v0"


@pytest.mark.parametrize("action_mode", ACTION_MODES)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_check_env_every_scenario_and_mode(scenario, action_mode):
    env = gym.make(ENV_ID, scenario=scenario, action_mode=action_mode)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # check_env's warnings (e.g. shared info objects) are failures
        check_env(env.unwrapped, skip_render_check=True)
    assert env.spec.max_episode_steps == env.unwrapped.params.max_episode_steps == 100


@pytest.mark.parametrize("action_mode", ACTION_MODES)
def test_gym_contract(action_mode):
    check_gym_contract(ENV_ID, kwargs={"action_mode": action_mode, "scenario": "random"}, n_steps=120)


@pytest.mark.parametrize("action_mode", ACTION_MODES)
def test_vector_env_equals_single_envs(action_mode):
    # absolute random actions crash often (OOM), so episodes end and auto-reset is exercised.
    check_vector_contract(
        ENV_ID,
        kwargs={"action_mode": action_mode, "scenario": "noisy-neighbours"},
        num_envs=3,
        n_steps=102 if action_mode == "increment" else 40,
    )


@pytest.mark.parametrize("action_mode", ["increment", "absolute"])
def test_one_seed_replays_one_trajectory_on_every_path(action_mode):
    """gym.make, make_vec and a lax.scan of the core's start/step_autoreset agree across episodes
    (memory-tight: random actions crash the trainer, so episodes end early and often)."""
    check_key_chain(ENV_ID, seed=2, n_steps=150, kwargs={"scenario": "memory-tight", "action_mode": action_mode})


def test_functional_contract():
    core = PipelineCore()
    check_functional_contract(core, make_params("random", "absolute"), n_steps=20, batch=4)


def test_numpy_and_jax_backends_agree():
    core = PipelineCore()
    params = make_params("noisy-neighbours", "increment")
    space = core.action_space(params)
    space.seed(0)
    n = assert_backends_agree(core, params, seed=3, actions=[space.sample() for _ in range(60)], atol=1e-2)
    assert n == 60


def test_observation_layout_matches_space_and_names():
    env = PipelineEnv()
    obs, info = env.reset(seed=0)
    assert obs.shape == (dynamics.OBS_DIM,) == env.observation_space.shape
    assert len(dynamics.OBSERVATION_NAMES) == dynamics.OBS_DIM
    np.testing.assert_array_equal(obs[dynamics.OBS_CORES], np.ones(6))
    assert obs[dynamics.OBS_BATCH] == 256 and obs[dynamics.OBS_PREFETCH] == 1
    assert obs[dynamics.OBS_BUDGET] == 16 and obs[dynamics.OBS_MEMORY_CAP] == 32
    assert obs[dynamics.OBS_THROUGHPUT] == pytest.approx(float(info["measured_throughput"]) * 1e-3, rel=1e-5)
    assert obs[dynamics.OBS_MEMORY] == pytest.approx(float(info["memory_gib"]))


def test_increment_actions_move_one_knob():
    env = PipelineEnv()
    obs, _ = env.reset(seed=1)
    obs, *_ = env.step(2 * 2)  # transform +1 core
    assert obs[dynamics.OBS_CORES][2] == 2
    obs, *_ = env.step(12)  # batch x2
    assert obs[dynamics.OBS_BATCH] == 512
    obs, *_ = env.step(14)  # prefetch +1
    assert obs[dynamics.OBS_PREFETCH] == 2
    obs, *_ = env.step(2 * 0 + 1)  # read -1 core: already at the minimum, a no-op
    assert obs[dynamics.OBS_CORES][0] == 1
    obs, *_ = env.step(dynamics.NOOP_ACTION)
    assert obs[dynamics.OBS_CORES][2] == 2 and obs[dynamics.OBS_BATCH] == 512


def test_absolute_action_sets_the_configuration():
    env = PipelineEnv(action_mode="absolute")
    env.reset(seed=0)
    obs, *_ = env.step(np.array([1, 3, 9, 0, 0, 0, 4, 5]))
    np.testing.assert_array_equal(obs[dynamics.OBS_CORES], [2, 4, 10, 1, 1, 1])
    assert obs[dynamics.OBS_BATCH] == 2 ** (6 + 4) and obs[dynamics.OBS_PREFETCH] == 5


def test_oracle_action_reaches_the_optimum():
    env = PipelineOptimum(PipelineEnv(action_mode="absolute", measurement_noise=0.0))
    _, info = env.reset(seed=4)
    _, _, _, _, info = env.step(info["optimal_action"])
    assert info["efficiency"] == pytest.approx(1.0, rel=1e-5)
    assert info["throughput"] == pytest.approx(info["optimum"], rel=1e-5)


def test_oom_terminates_with_penalty():
    env = PipelineOptimum(PipelineEnv(scenario="memory-tight", action_mode="absolute"))
    env.reset(seed=0)
    huge = np.array([31] * 6 + [7, 16])  # every stage 32 workers, batch 8192, prefetch 16
    obs, reward, terminated, truncated, info = env.step(huge)
    assert terminated and not truncated and bool(info["oom"])
    assert reward == -env.unwrapped.params.oom_penalty
    assert info["throughput"] == 0.0 and info["efficiency"] == 0.0
    assert float(obs[dynamics.OBS_MEMORY]) > float(obs[dynamics.OBS_MEMORY_CAP])
    np.testing.assert_array_equal(obs[dynamics.OBS_RATES], 0.0)


def test_truncation_at_the_time_limit_and_change_event():
    env = gym.make(ENV_ID, scenario="drift")
    env.reset(seed=0)
    flags, after = [], []
    for _ in range(100):
        _, _, terminated, truncated, info = env.step(dynamics.NOOP_ACTION)
        flags.append((terminated, truncated))
        after.append(bool(info["after_change"]))
    assert flags[-1] == (False, True) and all(f == (False, False) for f in flags[:-1])
    assert after.index(True) == 50 and all(after[50:])


def test_drift_moves_the_bottleneck_and_machine_change_the_budget():
    env = PipelineOptimum(PipelineEnv(scenario="drift", action_mode="absolute", measurement_noise=0.0))
    _, info = env.reset(seed=0)
    before = info["optimal_action"]
    effs = [env.step(before)[4]["efficiency"] for _ in range(51)]
    after = env.step(before)[4]
    assert effs[0] == pytest.approx(1.0, rel=1e-5)
    assert after["after_change"] and after["efficiency"] < 0.8  # the old optimum is stale
    assert after["optimal_action"][1] > before[1]  # parse now needs more workers
    env = PipelineEnv(scenario="machine-change")
    env.reset(seed=0)
    for _ in range(51):
        obs, *_ = env.step(dynamics.NOOP_ACTION)
    assert obs[dynamics.OBS_AVAILABLE] == 8 and obs[dynamics.OBS_MEMORY_CAP] == 24


def test_noisy_neighbour_takes_cores_some_of_the_time():
    env = PipelineEnv(scenario="noisy-neighbours")
    env.reset(seed=0)
    available = [env.step(dynamics.NOOP_ACTION)[0][dynamics.OBS_AVAILABLE] for _ in range(100)]
    assert set(np.unique(available)) == {10.0, 16.0}


def test_seeds_give_different_worlds_and_same_seed_the_same():
    a, b = PipelineEnv(scenario="random"), PipelineEnv(scenario="random")
    a.reset(seed=5)
    b.reset(seed=5)
    for x, y in zip(jax.tree_util.tree_leaves(a.state.world), jax.tree_util.tree_leaves(b.state.world)):
        np.testing.assert_array_equal(x, y)
    b.reset(seed=6)
    assert not np.allclose(a.state.world.cpu_seconds, b.state.world.cpu_seconds)


@pytest.mark.parametrize(
    ("action_mode", "action", "match"),
    [
        ("increment", 17, r"increment action must be in \[0, 17\).*got 17"),
        ("increment", -1, r"got -1"),
        ("increment", 2.5, r"actions must be integers"),
        ("increment", np.array([1, 2]), r"one integer"),
        ("absolute", np.array([0, 0, 0, 0, 0, 0, 0]), r"8 entries"),
        ("absolute", np.array([0, 0, 32, 0, 0, 0, 0, 0]), r"entry 2 \(cores\[transform\] - 1\) must be in \[0, 32\), got 32"),
        ("absolute", np.array([0, 0, 0, 0, 0, 0, 8, 0]), r"batch-size index"),
        ("absolute", np.array([0, 0, 0, 0, 0, 0, 0, -1]), r"prefetch"),
    ],
)
def test_invalid_actions_raise_naming_the_problem(action_mode, action, match):
    env = PipelineEnv(action_mode=action_mode)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(action)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scenario": "sunny"}, r"scenario must be one of .* got 'sunny'"),
        ({"action_mode": "relative"}, r"action_mode must be one of .* got 'relative'"),
        ({"measurement_noise": -0.1}, r"measurement_noise must be in \[0.0, 2.0\], got -0.1"),
        ({"max_prefetch": -1}, r"max_prefetch must be >= 0, got -1"),
        ({"change_step": 1.5}, r"change_step must be an int, got 1.5"),
        ({"min_batch_log2": 9, "max_batch_log2": 8}, r"min_batch_log2=9"),
        ({"event_core_factor": 1.5}, r"event_core_factor must be in \(0.0, 1.0\], got 1.5"),
        ({"bogus": 1}, r"unknown PipelineParams field\(s\) \['bogus'\]"),
    ],
)
def test_invalid_params_raise_naming_field_and_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PipelineEnv(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cpu_seconds_per_sample": (1e-5,) * 5}, r"one value per stage"),
        ({"serial_fraction": (0.0, 0.0, 1.0, 0.0, 0.0, 0.0)}, r"serial_fraction\['transform'\] must be in \[0.0, 0.999\], got 1.0"),
        ({"core_budget": 0}, r"core_budget must be an int >= 1, got 0"),
        ({"trainer_memory_gib": 40.0}, r"trainer_memory_gib must be below memory_gib \(32.0\).*got 40.0"),
        ({"read_bandwidth_mib_s": 0.0}, r"read_bandwidth_mib_s must be in \(0.0, inf\], got 0.0"),
    ],
)
def test_invalid_profile_raises_naming_field_and_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PipelineProfile(**kwargs)


def test_profile_from_measurements_calibrates_stage_costs():
    profile = PipelineProfile.from_measurements({"transform": 300e-6, "parse": 50e-6}, core_budget=8)
    assert profile.cpu_seconds_per_sample[2] == 300e-6 and profile.cpu_seconds_per_sample[1] == 50e-6
    assert profile.core_budget == 8
    with pytest.raises(ValueError, match=r"unknown stage name\(s\) \['decode'\]"):
        PipelineProfile.from_measurements({"decode": 1e-5})
    env = PipelineEnv(params=make_params("steady", profile=profile, cost_jitter=0.0))
    env.reset(seed=0)
    np.testing.assert_allclose(env.state.world.cpu_seconds[2], 300e-6, rtol=1e-6)


def test_vector_env_reports_the_optimum():
    venv = gym.make_vec(ENV_ID, num_envs=4, vectorization_mode="vector_entry_point", action_mode="absolute",
                        track_optimum=True)
    _, info = venv.reset(seed=0)
    singles = [PipelineOptimum(PipelineEnv(action_mode="absolute")) for _ in range(4)]
    for i, env in enumerate(singles):
        _, single_info = env.reset(seed=i)
        assert info["optimum"][i] == pytest.approx(single_info["optimum"], rel=1e-5)
    obs, _, _, _, info = venv.step(info["optimal_action"])
    assert np.all(info["efficiency"] > 0.85)


def test_noise_drawn_later_in_the_episode_gives_the_same_trajectory():
    """The pipeline env draws a whole episode's noise up front; drawing the tail on demand (the
    base adapter's path for long episodes) must give the same trajectory."""
    actions = [int(a) for a in np.random.default_rng(3).integers(0, 17, 100)]
    runs = []
    for first_steps in (None, 7):
        env = PipelineEnv(scenario="noisy-neighbours")
        if first_steps is not None:
            env._first_steps = first_steps
        obs, _ = env.reset(seed=5)
        trajectory = [obs]
        for a in actions:
            obs, reward, terminated, truncated, _ = env.step(a)
            trajectory.append(np.append(obs, reward))
            if terminated or truncated:
                break
        runs.append(np.concatenate(trajectory))
    np.testing.assert_array_equal(runs[0], runs[1])


def test_single_env_dynamics_equal_the_batched_numpy_dynamics():
    """One implementation, three backends: a single env's step on Python numbers (pyscalar) equals
    the same dynamics on a NumPy batch (and the JAX backend is checked by assert_backends_agree)."""
    params = make_params("random")
    rng = np.random.default_rng(0)
    n = 16
    uniforms = rng.random((n, dynamics.world_uniforms(params)), dtype=np.float32)
    allocations = np.concatenate(
        [rng.integers(1, 9, (n, 6)), rng.integers(params.min_batch_log2, params.max_batch_log2 + 1, (n, 1)),
         rng.integers(0, params.max_prefetch + 1, (n, 1))], axis=1).astype(np.int32)
    normals = rng.standard_normal((n, dynamics.MEASUREMENT_NORMALS), dtype=np.float32)
    after, neighbour = rng.random(n) < 0.5, rng.random(n) < 0.5
    worlds = dynamics.sample_world(np, params, uniforms)
    cond = dynamics.conditions(np, worlds, after, neighbour)
    perf = dynamics.performance(np, worlds, cond, allocations[:, :6], allocations[:, 6], allocations[:, 7])
    obs, measured = dynamics.observe(np, allocations, worlds, cond, perf, normals, params.measurement_noise)
    for i in range(n):
        world = dynamics.sample_world(np, params, uniforms[i])
        assert isinstance(world.core_budget, float) and isinstance(world.cpu_seconds, tuple)  # pyscalar
        c = dynamics.conditions(np, world, bool(after[i]), bool(neighbour[i]))
        p = dynamics.performance(np, world, c, allocations[i, :6], allocations[i, 6], allocations[i, 7])
        o, m = dynamics.observe(np, allocations[i], world, c, p, normals[i], params.measurement_noise)
        assert bool(p.oom) == bool(perf.oom[i])
        np.testing.assert_allclose(p.capacities, np.asarray(perf.capacities)[:, i], rtol=1e-5)
        np.testing.assert_allclose(o, obs[i], rtol=1e-5, atol=1e-6)
        assert m == pytest.approx(float(measured[i]), rel=1e-5, abs=1e-6)
