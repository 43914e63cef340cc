"""Training speed of the pipeline tuner (PPO over the vectorised RecGym-Pipeline-v0 core).

Run (figures in docs/agents_tuner.md)::

    python -m pytest benchmarks/test_tuner_speed.py --benchmark-only -s

Each round runs one compiled block of updates of the default config (512 pipelines x 32 steps per
update: rollout, advantages, PPO epochs), compiled outside the timed region and waited for with
``block_until_ready``. ``extra_info`` stores environment steps per second of wall time and per
second of process CPU time (the machines are shared: the CPU figure is the steadier one).
"""

from __future__ import annotations

import time

import jax
import pytest

from agents.tuner import TunerConfig, make_train

UPDATES_PER_CALL = 5


@pytest.mark.parametrize("action_mode, autoregressive", [("increment", False), ("absolute", False),
                                                         ("absolute", True)],
                         ids=["increment", "absolute", "absolute-autoregressive"])
def test_tuner_training_env_steps_per_second(benchmark, action_mode, autoregressive):
    """Default network and batch, one compiled block of updates per round (and absolute mode's
    autoregressive heads, ``--autoregressive``)."""
    small = benchmark.disabled  # a smoke run in CI
    config = TunerConfig(action_mode=action_mode, autoregressive=autoregressive, num_envs=32 if small else 512,
                         rollout_steps=4 if small else 32, num_minibatches=4, total_steps=10**9, progress=False,
                         tensorboard=False)
    updates = 1 if small else UPDATES_PER_CALL
    training = make_train(config)
    state = training.init(jax.random.key(0))
    state, _ = jax.block_until_ready(training.run(state, updates))  # compile outside the timed region
    holder = {"state": state, "cpu": []}

    def block():
        cpu = time.process_time()
        holder["state"], metrics = training.run(holder["state"], updates)
        jax.block_until_ready(metrics)
        holder["cpu"].append(time.process_time() - cpu)

    benchmark.pedantic(block, rounds=3, iterations=1)
    assert training.traces == 1  # every round reused the compiled block
    if benchmark.stats is None:
        return
    steps = updates * config.steps_per_update
    wall = steps / benchmark.stats.stats.median
    cpu = steps / sorted(holder["cpu"])[len(holder["cpu"]) // 2]
    benchmark.extra_info["env_steps_per_s"] = wall
    benchmark.extra_info["env_steps_per_cpu_s"] = cpu
    mode = action_mode + (", autoregressive" if autoregressive else "")
    print(f"\n[tuner PPO training, {mode}, {config.num_envs} pipelines x {config.rollout_steps} steps, "
          f"{jax.device_count()} device(s)] {wall:,.0f} env-steps/s wall, {cpu:,.0f} per CPU-second")
