"""Speed of RecGym-Pipeline-v0: the vectorised JAX core and the single gymnasium env.

Full figures (quiet machine): ``python -m pytest benchmarks/test_pipeline_speed.py --benchmark-only``;
each benchmark stores its steps/s in ``extra_info``. Targets from the issue: >= 1M pipeline-steps/s
for the vectorised core with 4,096 envs (jit + scan), >= 20k steps/s for one env through gym.make
(without the optimum, as training runs it; ``..._with_optimum`` times the evaluation wrapper).
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import jax
import numpy as np
import pytest

import recgym  # noqa: F401
from recgym.envs.pipeline.core import PipelineCore
from recgym.envs.pipeline.params import make_params

NUM_ENVS = 4096
SCAN_STEPS = 100


def _make_rollout(core, num_envs, n_steps, n_actions, autoreset=True, params=None):
    """A jitted ``(key, carry[, params]) -> (key, carry, mean rewards)`` over ``n_steps`` vmapped steps.

    ``autoreset``: the key-chain step with same-step auto-reset (what a training loop runs);
    else the plain gymnax ``step`` on ``carry.state`` (episodes run past their end). With
    ``params`` given, the rollout closes over them (XLA folds the coefficients in as constants);
    else it takes them as a third argument, whose coefficients are traced (one compilation serves
    every named scenario).
    """

    def one(carry, action, key, params):
        if autoreset:
            _, carry, reward, *_ = core.step_autoreset(carry, action, params)
            return carry, reward
        _, state, reward, *_ = core.step(key, carry.state, action, params)
        return carry.replace(state=state), reward

    def rollout(key, carry, params):
        def body(loop, _):
            key, carry = loop
            key, k_act, k_step = jax.random.split(key, 3)
            actions = jax.random.randint(k_act, (num_envs,), 0, n_actions)
            step = jax.vmap(one, in_axes=(0, 0, 0, None))
            carry, reward = step(carry, actions, jax.random.split(k_step, num_envs), params)
            return (key, carry), reward.mean()

        (key, carry), rewards = jax.lax.scan(body, (key, carry), None, length=n_steps)
        return key, carry, rewards

    return jax.jit(rollout) if params is None else jax.jit(lambda key, carry: rollout(key, carry, params))


@pytest.mark.parametrize("autoreset", [True, False], ids=["step_autoreset", "step"])
@pytest.mark.parametrize("scenario", ["steady", "random"])
def test_vectorised_core_steps_per_second(benchmark, scenario, autoreset):
    """4,096 envs, 100 steps per jitted scan, random increment actions; ``step_autoreset`` (what a
    training loop runs: a fresh reset is computed for every env at every step and selected where an
    episode ended) and plain ``step`` (episodes run past their end; the dynamics alone). The
    rollout closes over the params."""
    if benchmark.disabled and scenario != "steady":
        pytest.skip("smoke run (--benchmark-disable): the steady variants cover the code path")
    _time_vectorised_core(benchmark, scenario, autoreset, closed_over=True)


def test_vectorised_core_traced_params_steps_per_second(benchmark):
    """As the ``steady`` / ``step_autoreset`` row, with the params a jit argument (traced leaves,
    one compilation for every named scenario) instead of constants the rollout closes over."""
    _time_vectorised_core(benchmark, "steady", True, closed_over=False)


def _time_vectorised_core(benchmark, scenario, autoreset, closed_over):
    core = PipelineCore()
    params = make_params(scenario)
    # With --benchmark-disable (CI) the body runs once as a smoke test: keep it small.
    num_envs, n_steps = (64, 10) if benchmark.disabled else (NUM_ENVS, SCAN_STEPS)
    keys = jax.random.split(jax.random.PRNGKey(0), num_envs)
    _, start = jax.jit(jax.vmap(core.start, in_axes=(0, None)))(keys, params)
    rollout = _make_rollout(core, num_envs, n_steps, params.num_increment_actions, autoreset,
                            params if closed_over else None)
    traced = () if closed_over else (params,)
    carry = {"key": jax.random.PRNGKey(1), "carry": start}
    jax.block_until_ready(rollout(carry["key"], carry["carry"], *traced))  # compile outside the timed region

    def run():
        carry["key"], carry["carry"], rewards = rollout(carry["key"], carry["carry"], *traced)
        jax.block_until_ready(rewards)
        return rewards

    rewards = benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    assert np.all(np.isfinite(np.asarray(rewards)))
    if benchmark.stats is not None:
        benchmark.extra_info["steps_per_second"] = num_envs * n_steps / benchmark.stats.stats.median


@pytest.mark.parametrize("action_mode", ["increment", "absolute"])
def test_single_gym_env_steps_per_second(benchmark, action_mode):
    """``gym.make("RecGym-Pipeline-v0")`` as training runs it (no optimum in ``info``)."""
    _time_single_env(benchmark, action_mode, track_optimum=False)


@pytest.mark.parametrize("action_mode", ["increment", "absolute"])
def test_single_gym_env_with_optimum_steps_per_second(benchmark, action_mode):
    """``gym.make(..., track_optimum=True)``: the optimum wrapper, as evaluation runs it."""
    _time_single_env(benchmark, action_mode, track_optimum=True)


def _time_single_env(benchmark, action_mode, track_optimum):
    warnings.simplefilter("ignore")  # gymnasium's passive checker warns once per env; not timed
    env = gym.make("RecGym-Pipeline-v0", action_mode=action_mode, track_optimum=track_optimum)
    env.reset(seed=0)
    env.action_space.seed(0)
    n_steps = 200 if benchmark.disabled else 2000
    if action_mode == "increment":
        actions = [int(a) for a in np.random.default_rng(0).integers(0, 17, n_steps)]
    else:  # modest absolute allocations (random ones would crash and reset every few steps)
        actions = [np.array([1, 3, 9, 0, 0, 0, 2, 2])] * n_steps
    for a in actions[:100]:  # warm up (first reset compiles the noise draw)
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()

    def run():
        for a in actions:
            _, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                env.reset()

    benchmark.pedantic(run, rounds=5, iterations=1)
    if benchmark.stats is not None:
        benchmark.extra_info["steps_per_second"] = n_steps / benchmark.stats.stats.median
