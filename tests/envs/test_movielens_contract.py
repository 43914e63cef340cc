"""The environment contract over every registered MovieLens id (synthetic data, fast)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import recgym  # noqa: F401  (registers the ids)
from recgym.core.testing import (
    assert_backends_agree,
    check_functional_contract,
    check_gym_contract,
    check_key_chain,
    check_vector_contract,
)
from recgym.envs.movielens import MovieLensCore, make_params, observation_layout

MOVIELENS_IDS = sorted(i for i in gym.registry if i.startswith("RecGym-MovieLens"))
SYNTHETIC = {"dataset": "synthetic"}


def _time_limit(env_id: str) -> int:
    env = gym.make(env_id, **SYNTHETIC)
    limit = env.spec.max_episode_steps
    env.close()
    return limit


@pytest.mark.parametrize("preset,limit", [("dynamic", 200), ("static", 100), ("fairness", 50)])
def test_the_core_time_limit_is_the_episode_limit_whatever_the_preset(preset, limit):
    """gym.make and make_vec of any id with any preset truncate where the core does, and the made
    env's spec says so (the v0 id with preset="static" used to keep a 200-step TimeLimit, and
    make_vec used to force 200 steps on the static world)."""
    env = gym.make("RecGym-MovieLens-v0", preset=preset, **SYNTHETIC)
    assert env.spec.max_episode_steps == env.unwrapped.params.max_episode_steps == limit
    venv = gym.make_vec("RecGym-MovieLens-v0", num_envs=2, vectorization_mode="vector_entry_point",
                        preset=preset, **SYNTHETIC)
    assert venv.unwrapped.params.max_episode_steps == limit == venv.spec.max_episode_steps
    if preset != "dynamic":  # fixed-length worlds: every episode is exactly `limit` steps
        env.reset(seed=0)
        steps, truncated = 0, False
        while not truncated:
            _, _, terminated, truncated, _ = env.step(steps)
            assert not terminated
            steps += 1
        assert steps == limit
    env.close()
    venv.close()


def test_the_three_ids_are_registered():
    assert MOVIELENS_IDS == ["RecGym-MovieLens-v0", "RecGym-MovieLensFairness-v0", "RecGym-MovieLensStatic-v0"]
    for env_id in MOVIELENS_IDS:
        spec = gym.spec(env_id)
        assert isinstance(spec.entry_point, str) and isinstance(spec.vector_entry_point, str)


@pytest.mark.parametrize("env_id", MOVIELENS_IDS)
def test_gym_contract(env_id):
    check_gym_contract(env_id, SYNTHETIC, n_steps=80)


@pytest.mark.parametrize("env_id", MOVIELENS_IDS)
def test_vector_env_equals_single_envs(env_id):
    # long enough for an episode to end (the static and Fairness worlds have a fixed length)
    n_steps = 40 if env_id == "RecGym-MovieLens-v0" else _time_limit(env_id) + 5
    check_vector_contract(env_id, SYNTHETIC, num_envs=3, n_steps=n_steps)


@pytest.mark.parametrize("env_id", MOVIELENS_IDS)
def test_one_seed_replays_one_trajectory_on_every_path(env_id):
    """gym.make, make_vec and a lax.scan of the core's start/step_autoreset agree across episodes."""
    n_steps = 60 if env_id == "RecGym-MovieLens-v0" else _time_limit(env_id) + 5
    check_key_chain(env_id, seed=3, n_steps=n_steps, kwargs=SYNTHETIC)


@pytest.mark.parametrize("preset", ["dynamic", "static", "fairness"])
def test_functional_contract(preset, synthetic_world):
    check_functional_contract(MovieLensCore(), make_params(synthetic_world, preset), n_steps=12)


@pytest.mark.parametrize(
    "preset,extra",
    [
        ("dynamic", {}),
        ("dynamic", {"slate_size": 4, "observe_hidden": True}),
        ("dynamic", {"n_candidates": 8, "reward_type": "click"}),
        ("static", {"slate_size": 2}),
        ("fairness", {}),
    ],
)
def test_numpy_and_jax_backends_give_the_same_trajectory(preset, extra, synthetic_world):
    params = make_params(synthetic_world, preset, **extra)
    rng = np.random.default_rng(0)
    s = params.slate_size
    actions = [rng.choice(params.n_choices, s, replace=False) if s > 1 else int(rng.integers(params.n_choices))
               for _ in range(40)]
    steps = assert_backends_agree(MovieLensCore(), params, seed=11, actions=actions)
    assert steps >= 3


def test_observation_space_rows_come_from_the_layout(synthetic_world):
    for extra in ({}, {"observe_hidden": True, "n_candidates": 5}):
        params = make_params(synthetic_world, **extra)
        layout = observation_layout(params)
        space = MovieLensCore().observation_space(params)
        assert sum(f.size for f in layout) == space.shape[0]
        assert [f.start for f in layout] == list(np.cumsum([0] + [f.size for f in layout[:-1]]))
        for field in layout:
            np.testing.assert_array_equal(space.low[field.start:field.start + field.size], np.float32(field.low))


def test_vector_env_reports_autoreset_mode_and_masks(synthetic_world):
    venv = gym.make_vec("RecGym-MovieLens-v0", num_envs=4, vectorization_mode="vector_entry_point", **SYNTHETIC)
    assert venv.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    venv.reset(seed=0)
    _, _, _, _, info = venv.step(np.arange(4))
    assert info["rating"].shape == (4,) and info["_rating"].all()
    assert venv.true_utilities().shape == (4, venv.single_action_space.n)
    assert venv.boredom_cost().shape == (4, venv.single_action_space.n)


def test_reset_options_pick_the_user(synthetic_world):
    env = gym.make("RecGym-MovieLens-v0", **SYNTHETIC)
    _, info = env.reset(seed=0, options={"user_id": 17})
    assert int(info["user"]) == 17
    venv = gym.make_vec("RecGym-MovieLens-v0", num_envs=2, vectorization_mode="vector_entry_point", **SYNTHETIC)
    _, info = venv.reset(seed=0, options={"user_id": [3, 5]})
    np.testing.assert_array_equal(info["user"], [3, 5])


def test_train_and_test_populations_are_disjoint(synthetic_world):
    seen = {}
    for users in ("train", "test"):
        env = gym.make("RecGym-MovieLens-v0", users=users, **SYNTHETIC)
        seen[users] = {int(env.reset(seed=s)[1]["user"]) for s in range(30)}
        assert seen[users] <= set(getattr(synthetic_world, f"{users}_users").tolist())
    assert not seen["train"] & seen["test"]
