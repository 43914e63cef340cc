"""Speed of RecGym-MovieLens: single gymnasium env, vectorised JAX core, native vector env, world build.

Run (figures in docs/environments/movielens.md)::

    python -m pytest benchmarks/test_movielens_speed.py --benchmark-only -s

Each test prints its throughput and stores it in ``extra_info``. The catalogue is ml-latest-small
(from ``$RECGYM_DATA_HOME`` or the cache); without it the synthetic world stands in and the
printed figures say so. Compilation and warm-up happen outside the timed region; JAX results are
waited for with ``block_until_ready``. The peer, SARDINE's ``sardine/SingleItem-Static-v0``, is
measured in the same run when ``sardine-rec`` is installed (``pip install recgym[peers]``).
"""

from __future__ import annotations

import importlib.util
import os

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recgym  # noqa: F401  (registers the ids)
from recgym.envs.movielens import MovieLensCore, build_world, make_params

N_USERS = 4096
SINGLE_STEPS = 20_000
SCAN_STEPS = 100
VECTOR_STEPS = 30


def _dataset() -> str:
    home = os.environ.get("RECGYM_DATA_HOME")
    if home and os.path.isdir(os.path.join(home, "ml-latest-small")):
        return "ml-latest-small"
    try:
        build_world("ml-latest-small")
        return "ml-latest-small"
    except Exception:
        return "synthetic"


DATASET = _dataset()


def _single_env_loop(env: gym.Env, actions: list) -> int:
    steps = 0
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        steps += 1
        if terminated or truncated:
            env.reset()
    return steps


def _bench_single(benchmark, env: gym.Env, label: str) -> float:
    n_steps = 1000 if benchmark.disabled else SINGLE_STEPS  # a smoke run in CI
    env.reset(seed=0)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(n_steps)]
    _single_env_loop(env, actions[:2000])  # warm-up: compilation of the noise draw, caches
    benchmark.pedantic(_single_env_loop, args=(env, actions), rounds=3, iterations=1)
    rate = n_steps / benchmark.stats.stats.median if benchmark.stats else float("nan")
    benchmark.extra_info["steps_per_s"] = rate
    print(f"\n[{label}] {rate:,.0f} steps/s (random actions, gym.make wrappers)")
    return rate


def test_single_env_steps_per_second(benchmark):
    """One ``gym.make("RecGym-MovieLens-v0")`` env (wrappers included), random items."""
    env = gym.make("RecGym-MovieLens-v0", dataset=DATASET)
    _bench_single(benchmark, env, f"RecGym-MovieLens-v0 on {DATASET}")


@pytest.mark.skipif(importlib.util.find_spec("sardine") is None, reason="peer sardine-rec not installed")
def test_peer_sardine_single_item_static(benchmark):
    """The peer: SARDINE's single-item static env, same loop."""
    import sardine  # noqa: F401  (registers sardine/...)

    env = gym.make("sardine/SingleItem-Static-v0")
    _bench_single(benchmark, env, "peer sardine/SingleItem-Static-v0")


def _scan_rollout(core: MovieLensCore, params, n_users: int, n_steps: int):
    """``n_steps`` steps of ``n_users`` users under one jit: random items, auto-reset, obs consumed."""

    def rollout(key):
        k_start, k_run = jax.random.split(key)
        obs, carry = jax.vmap(lambda k: core.start(k, params))(jax.random.split(k_start, n_users))

        def body(loop, key):
            carry, total = loop
            actions = jax.random.randint(key, (n_users,), 0, params.n_items)
            obs, carry, reward, _, _, _ = jax.vmap(
                lambda c, a: core.step_autoreset(c, a, params)
            )(carry, actions)
            # consume the observation so that it is computed, as a policy would
            return (carry, total + reward.sum() + 1e-9 * obs.sum()), None

        (_, total), _ = jax.lax.scan(body, (carry, jnp.float32(0.0)), jax.random.split(k_run, n_steps))
        return total

    return jax.jit(rollout)


def test_vectorised_core_user_steps_per_second(benchmark):
    """4,096 users, slate size 1, jit + scan over 100 steps, auto-reset, obs consumed."""
    n_users = 256 if benchmark.disabled else N_USERS  # a smoke run in CI
    params = jax.device_put(make_params(build_world(DATASET)))
    run = _scan_rollout(MovieLensCore(), params, n_users, SCAN_STEPS)
    run(jax.random.PRNGKey(0)).block_until_ready()  # compile outside the timed region
    keys = iter(jax.random.split(jax.random.PRNGKey(1), 100))

    def once():
        return run(next(keys)).block_until_ready()

    benchmark.pedantic(once, rounds=5, iterations=1)
    rate = n_users * SCAN_STEPS / benchmark.stats.stats.median if benchmark.stats else float("nan")
    benchmark.extra_info["user_steps_per_s"] = rate
    print(f"\n[vectorised core, {n_users} users, {DATASET}] {rate:,.0f} user-steps/s")


def test_make_vec_user_steps_per_second(benchmark):
    """``gym.make_vec(..., num_envs=4096, vectorization_mode="vector_entry_point")``, NumPy actions."""
    n_envs = 256 if benchmark.disabled else N_USERS  # a smoke run in CI
    venv = gym.make_vec("RecGym-MovieLens-v0", num_envs=n_envs, vectorization_mode="vector_entry_point",
                        dataset=DATASET)
    venv.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.integers(0, venv.single_action_space.n, (VECTOR_STEPS, n_envs))
    venv.step(actions[0])  # compile outside the timed region

    def loop():
        for a in actions:
            venv.step(a)

    benchmark.pedantic(loop, rounds=3, iterations=1)
    rate = n_envs * VECTOR_STEPS / benchmark.stats.stats.median if benchmark.stats else float("nan")
    benchmark.extra_info["user_steps_per_s"] = rate
    print(f"\n[make_vec, {n_envs} envs, {DATASET}] {rate:,.0f} user-steps/s")


def test_world_build_seconds(benchmark):
    """Building the ml-latest-small world from the ratings (no cache): filter, two MF fits, split."""
    from recgym.datasets import load_movielens

    dataset = load_movielens(DATASET)  # the dataset load itself is the data layer's benchmark

    def build():
        return build_world(dataset)

    benchmark.pedantic(build, rounds=2, iterations=1)
    seconds = benchmark.stats.stats.median if benchmark.stats else float("nan")
    benchmark.extra_info["seconds"] = seconds
    print(f"\n[world build, {DATASET}] {seconds:.2f} s")

