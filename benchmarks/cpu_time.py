"""Steps per CPU-second of one ``gym.make`` env: an A/B measure that survives a busy machine.

Wall-clock benchmarks (``benchmarks/test_*_speed.py``) are what users see, but on a shared machine
their medians move with other processes' load. CPU time (``time.process_time``: this process's
user + system time, all threads) charges the env only for the work it does, so two checkouts can
be compared in one interleaved run even when the machine is busy (cache and frequency effects of
the load remain). Used for the before/after figures of the data-path redesign
(docs/benchmarks.md)::

    python -m benchmarks.cpu_time RecGym-MovieLens-v0
    python -m benchmarks.cpu_time RecGym-Pipeline-v0 --kwargs '{"action_mode": "absolute"}'
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import numpy as np


def steps_per_cpu_second(env_id: str, kwargs: dict, n_steps: int = 20_000, rounds: int = 5,
                         seed: int = 0) -> list[float]:
    """``rounds`` measurements of ``n_steps`` random-action steps (auto-reset on episode end).

    The actions are drawn before timing from the action space seeded with ``seed``; 2,000 warm-up
    steps (compilation, caches) run first and are not timed.
    """
    import recgym  # noqa: F401  (registers the ids)

    env = gym.make(env_id, **kwargs)
    env.action_space.seed(seed)
    actions = [env.action_space.sample() for _ in range(n_steps)]
    env.reset(seed=seed)
    for action in actions[:2000]:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    rates = []
    for r in range(rounds):
        env.reset(seed=seed + 1 + r)
        start = time.process_time()
        for action in actions:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()
        rates.append(n_steps / (time.process_time() - start))
    env.close()
    return rates


def main(argv: list[str] | None = None) -> None:
    """Print the median and every round's steps per CPU-second."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("env_id")
    parser.add_argument("--kwargs", default="{}", help="gym.make keyword arguments as JSON")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    rates = steps_per_cpu_second(args.env_id, json.loads(args.kwargs), args.steps, args.rounds)
    print(f"{args.env_id} {args.kwargs}: median {np.median(rates):,.0f} steps/CPU-s "
          f"(rounds: {[round(r) for r in rates]})")


if __name__ == "__main__":
    main()
