"""Stable-Baselines3, unmodified, on recgym's registered envs (needs the ``ecosystem`` extra).

SB3's own ``check_env`` passes on every configuration a PyTorch user would start from, and PPO
trained for a short, seeded budget through ``make_vec_env`` beats a uniformly random policy on
``RecGym-MovieLens-v0`` and ``RecGym-Pipeline-v0``, scored on the same seeded episodes (common
random numbers: the same users and noise for both policies).
"""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest

sb3 = pytest.importorskip("stable_baselines3")
torch = pytest.importorskip("torch")

from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.env_checker import check_env  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402
from stable_baselines3.common.vec_env import VecNormalize  # noqa: E402

import recgym  # noqa: E402, F401  (registers the ids)

CONFIGURATIONS = [
    ("RecGym-MovieLens-v0", {}),
    ("RecGym-MovieLens-v0", {"n_candidates": 10}),
    ("RecGym-MovieLens-v0", {"slate_size": 3}),
    ("RecGym-MovieLensStatic-v0", {}),
    ("RecGym-MovieLensFairness-v0", {}),
    ("RecGym-Pipeline-v0", {}),
    ("RecGym-Pipeline-v0", {"action_mode": "absolute", "scenario": "memory-tight"}),
]


@pytest.mark.parametrize(("env_id", "kwargs"), CONFIGURATIONS)
def test_sb3_check_env_passes_without_warnings(env_id, kwargs, request):
    if "MovieLens" in env_id:
        request.getfixturevalue("movielens_home")  # ml-latest-small, skipped where absent
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(gym.make(env_id, **kwargs), warn=True)


def test_make_vec_env_needs_no_render_mode_warning():
    """SB3's ``make_vec_env`` asks for ``render_mode="rgb_array"``; recgym renders nothing, so
    gymnasium warns unless ``env_kwargs={"render_mode": None}`` (what the tutorial shows)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        venv = make_vec_env("RecGym-Pipeline-v0", n_envs=2, seed=0, env_kwargs={"render_mode": None})
        venv.reset()
        venv.step(np.array([0, 1]))


def returns_of(act, env_id, env_kwargs, seeds):
    """Undiscounted return of ``act(obs) -> action`` on single envs reset with each seed."""
    env = gym.make(env_id, **env_kwargs)
    out = []
    for seed in seeds:
        obs, _ = env.reset(seed=int(seed))
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += reward
            done = terminated or truncated
        out.append(total)
    return np.array(out)


def assert_beats_random(trained, random, min_ratio):
    """Paired over the same episodes: the mean gain is positive beyond 3 standard errors and the
    trained policy earns at least ``min_ratio`` times the random return."""
    gain = trained - random
    stderr = gain.std(ddof=1) / math.sqrt(len(gain))
    print(f"trained {trained.mean():.2f}, random {random.mean():.2f}, paired gain {gain.mean():.2f} "
          f"± {stderr:.2f} (SE), ratio {trained.mean() / random.mean():.2f}")  # shown with -s
    assert gain.mean() > 3 * stderr, (trained.mean(), random.mean(), stderr)
    assert trained.mean() >= min_ratio * random.mean(), (trained.mean(), random.mean())


def train_ppo(env_id, env_kwargs, steps, normalize=False, **ppo_kwargs):
    torch.set_num_threads(1)
    venv = make_vec_env(env_id, n_envs=8, seed=0, env_kwargs=dict(env_kwargs, render_mode=None))
    if normalize:
        venv = VecNormalize(venv, gamma=0.99)
    model = PPO("MlpPolicy", venv, seed=0, n_steps=256, batch_size=256, device="cpu", **ppo_kwargs)
    model.learn(steps)
    return model, venv


def test_ppo_beats_random_on_the_pipeline():
    """Observation entries reach thousands (rates, memory), so PPO gets SB3's ``VecNormalize``."""
    model, venv = train_ppo("RecGym-Pipeline-v0", {}, 20_480, normalize=True)
    venv.training = False
    seeds = np.arange(10_000, 10_030)
    rng = np.random.default_rng(0)
    trained = returns_of(lambda o: int(model.predict(venv.normalize_obs(o), deterministic=True)[0]),
                         "RecGym-Pipeline-v0", {}, seeds)
    random = returns_of(lambda o: int(rng.integers(17)), "RecGym-Pipeline-v0", {}, seeds)
    assert_beats_random(trained, random, min_ratio=1.5)


def test_ppo_beats_random_on_movielens(movielens_home):
    """The whole catalogue (``Discrete(n_items)``): PPO learns which items please, sampling its
    stochastic policy (its greedy action repeats one item, which the repeat penalty punishes)."""
    model, _ = train_ppo("RecGym-MovieLens-v0", {}, 61_440)
    seeds = np.arange(10_000, 10_100)
    n_items = gym.make("RecGym-MovieLens-v0").action_space.n
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    trained = returns_of(lambda o: int(model.predict(o, deterministic=False)[0]),
                         "RecGym-MovieLens-v0", {}, seeds)
    random = returns_of(lambda o: int(rng.integers(n_items)), "RecGym-MovieLens-v0", {}, seeds)
    assert_beats_random(trained, random, min_ratio=1.15)


def test_ppo_trains_on_slates_through_distinct_slate():
    """PPO samples slate positions independently (duplicates the env rejects); the wrapper fixes it."""
    from recgym.wrappers import DistinctSlate

    kwargs = {"dataset": "synthetic", "slate_size": 3, "n_candidates": 5, "render_mode": None}
    check_env(DistinctSlate(gym.make("RecGym-MovieLens-v0", **kwargs)))
    venv = make_vec_env("RecGym-MovieLens-v0", n_envs=2, seed=0, env_kwargs=kwargs,
                        wrapper_class=DistinctSlate)
    model = PPO("MlpPolicy", venv, n_steps=128, batch_size=64, seed=0, device="cpu")
    model.learn(512)
    assert model.num_timesteps >= 512
