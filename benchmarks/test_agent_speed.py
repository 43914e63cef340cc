"""End-to-end training speed of the A2C agent, and of Stable-Baselines3's A2C on the same env.

Run (figures in docs/agents.md)::

    python -m pytest benchmarks/test_agent_speed.py --benchmark-only -s

Both train on ``RecGym-MovieLens-v0`` (ml-latest-small from ``$RECGYM_DATA_HOME`` or the cache;
the synthetic world stands in without it, and the printed figures say so), single items over the
whole catalogue, and count environment steps per second of training (rollout + update):

* recgym's A2C: ``make_train`` with its default network, 256 environments x 16 steps per update
  on the functional core, a block of updates compiled once outside the timed region, waited for
  with ``block_until_ready``;
* the peer: SB3's ``A2C("MlpPolicy")`` (its defaults: 5 steps per update, RMSProp) on 8
  ``gym.make`` envs in a ``DummyVecEnv``, through the gymnasium API, median of 5 rounds —
  skipped when SB3 is not installed (``pip install "recgym[peers]"``; SB3 needs PyTorch).

The last test prints the ratio when both ran in the same session. ``test_a2c_update_flop_breakdown``
prints where an update's work goes (XLA's cost analysis: FLOPs, independent of the machine's load;
not a benchmark, so ``--benchmark-only`` skips it)::

    python -m pytest benchmarks/test_agent_speed.py -k flop -s
"""

from __future__ import annotations

import importlib.util
import os
import time

import jax
import jax.numpy as jnp
import pytest

from agents.a2c import A2CConfig, DeviceAxis, make_train
from agents.movielens import make_env_params

RESULTS: dict[str, float] = {}
UPDATES_PER_CALL = 10
SB3_STEPS = 4_000
SB3_ROUNDS = 5  # SB3's rounds vary by up to 2x on a shared machine: the median of more of them


def _dataset() -> str:
    home = os.environ.get("RECGYM_DATA_HOME")
    if home and os.path.isdir(os.path.join(home, "ml-latest-small")):
        return "ml-latest-small"
    try:
        from recgym.envs.movielens import build_world

        build_world("ml-latest-small")
        return "ml-latest-small"
    except Exception:
        return "synthetic"


DATASET = _dataset()


def test_a2c_training_env_steps_per_second(benchmark):
    """recgym A2C, default network and batch, one compiled block of updates per round."""
    small = benchmark.disabled  # a smoke run in CI
    config = A2CConfig(dataset=DATASET, num_envs=32 if small else 256, rollout_steps=4 if small else 16,
                       total_steps=10**9, progress=False, tensorboard=False)
    updates = 1 if small else UPDATES_PER_CALL
    env = make_env_params(config)
    training = make_train(config, env.params, env.core, env.item_features)
    state = training.init(jax.random.key(0))
    state, _ = jax.block_until_ready(training.run(state, updates))  # compile outside the timed region
    holder = {"state": state}

    def block():
        holder["state"], metrics = training.run(holder["state"], updates)
        jax.block_until_ready(metrics)

    benchmark.pedantic(block, rounds=3, iterations=1)
    rate = updates * config.steps_per_update / benchmark.stats.stats.median if benchmark.stats else float("nan")
    RESULTS["a2c"] = rate
    benchmark.extra_info["env_steps_per_s"] = rate
    print(f"\n[recgym A2C training, {config.num_envs} envs x {config.rollout_steps} steps, {DATASET}, "
          f"{jax.device_count()} device(s)] {rate:,.0f} env-steps/s")


@pytest.mark.skipif(importlib.util.find_spec("stable_baselines3") is None, reason="peer stable-baselines3 not installed")
def test_peer_sb3_a2c_env_steps_per_second(benchmark):
    """SB3 A2C (defaults, MlpPolicy) on 8 gym.make envs of the same world."""
    import gymnasium as gym
    import torch
    from stable_baselines3 import A2C
    from stable_baselines3.common.vec_env import DummyVecEnv

    import recgym  # noqa: F401  (registers the ids)

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    steps = 400 if benchmark.disabled else SB3_STEPS
    venv = DummyVecEnv([lambda: gym.make("RecGym-MovieLens-v0", dataset=DATASET) for _ in range(8)])
    model = A2C("MlpPolicy", venv, seed=0, device="cpu")
    model.learn(total_timesteps=200)  # warm-up outside the timed region

    def learn():
        model.learn(total_timesteps=steps, reset_num_timesteps=False)

    benchmark.pedantic(learn, rounds=SB3_ROUNDS, iterations=1)
    rate = steps / benchmark.stats.stats.median if benchmark.stats else float("nan")
    RESULTS["sb3"] = rate
    benchmark.extra_info["env_steps_per_s"] = rate
    print(f"\n[peer SB3 A2C, 8 gym.make envs, {DATASET}] {rate:,.0f} env-steps/s")


def test_speed_ratio_report():
    """Print recgym A2C / SB3 A2C when both were measured in this session (nothing to time)."""
    if "a2c" not in RESULTS or "sb3" not in RESULTS:
        pytest.skip("needs both speed benchmarks in the same session")
    ratio = RESULTS["a2c"] / RESULTS["sb3"]
    print(f"\n[training speed] recgym A2C / SB3 A2C = {ratio:,.0f}x (measured {time.strftime('%Y-%m-%d')})")


def _gflop(function, *args) -> float:
    """GFLOP of one call of ``jax.jit(function)(*args)`` by XLA's cost analysis (a loop body counts once)."""
    cost = jax.jit(function).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"]) / 1e9


def update_flop_breakdown(config: A2CConfig) -> dict[str, float]:
    """GFLOP of one A2C update of ``config`` on its env, by part.

    Returns:
        ``{part: GFLOP}``: ``rollout`` (the scan's body times ``rollout_steps``: XLA counts a loop
        body once), ``loss forward`` and ``loss backward`` (``jax.grad`` of the loss as defined,
        every network output computed again, minus the forward), ``gradient`` (the same gradient
        as the update computes it, ``A2CTraining._gradients``: the rollout's scores and the next
        steps' values reused), ``actor scores`` and ``critic values`` (forward passes over the
        update's observations), ``env steps`` (``step_autoreset`` alone over the rollout, random
        items) and ``update`` (rollout + gradient).
    """
    env = make_env_params(config)
    training = make_train(config, env.params, env.core, env.item_features)
    state = training.init(jax.random.key(0))
    axis, params = DeviceAxis(), state.learner.params

    def rollout(params, actors, key):
        return training._rollout(axis, training.env_params, params, actors, key)

    _, batch = jax.jit(rollout)(params, state.actors, jax.random.key(1))
    observations = batch.observation.reshape(-1, batch.observation.shape[-1])

    def env_steps(env_carry, key):
        def step(env_carry, t):
            items = jax.random.randint(jax.random.fold_in(key, t), (config.num_envs,), 0, training.n_items)
            observation, env_carry, reward, *_ = jax.vmap(training.core.step_autoreset, in_axes=(0, 0, None))(
                env_carry, items, training.env_params)
            return env_carry, (observation, reward)
        return jax.lax.scan(step, env_carry, jnp.arange(config.rollout_steps))

    parts = {
        "rollout": _gflop(rollout, params, state.actors, jax.random.key(1)) * config.rollout_steps,
        "loss forward": _gflop(lambda p, b: training._loss(p, b, axis)[0], params, batch),
        "loss + gradient": _gflop(lambda p, b: jax.grad(training._loss, has_aux=True)(p, b, axis), params, batch),
        "gradient": _gflop(lambda p, b: training._gradients(p, b, axis), params, batch),
        "actor scores": _gflop(lambda p, o: training.model(p).scores(o), params, observations),
        "critic values": _gflop(lambda p, o: training.model(p).value(o), params, observations),
        "env steps": _gflop(env_steps, state.actors.env, jax.random.key(2)) * config.rollout_steps,
    }
    parts["loss backward"] = parts.pop("loss + gradient") - parts["loss forward"]
    parts["update"] = parts["rollout"] + parts["gradient"]
    return parts


def test_a2c_update_flop_breakdown():
    """Where one update's work goes (the docs' profile): compute in the networks, not in the env."""
    config = A2CConfig(dataset=DATASET, total_steps=10**9, progress=False, tensorboard=False)  # the timed config
    parts = update_flop_breakdown(config)
    per_thousand = parts["update"] / config.steps_per_update * 1000
    print(f"\n[A2C update FLOPs, {config.num_envs} envs x {config.rollout_steps} steps, {DATASET}] "
          + ", ".join(f"{name} {gflop:.2f}" for name, gflop in parts.items())
          + f" GFLOP; {per_thousand:.2f} GFLOP per 1,000 env-steps")
    assert parts["loss backward"] > parts["loss forward"] > 0
    assert parts["gradient"] < parts["loss forward"] + parts["loss backward"] - parts["actor scores"] / 2
    assert parts["env steps"] < 0.01 * parts["update"], parts
