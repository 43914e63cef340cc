"""Where one A2C update's time goes: its pieces compiled and timed in isolation.

Each piece is ``jax.jit``-compiled outside the timed region, called ``--repeats`` times and waited
for with ``block_until_ready``; the median is printed in milliseconds, with the share of the
whole update. The pieces of the rollout are timed on one step's batch and multiplied by
``rollout_steps``; the pieces of the gradient on the whole rollout's batch. Pieces overlap
(``rollout`` contains ``actor scores``, ``sampler`` and ``env steps``; ``gradient`` contains the
forward and backward passes listed under it), and a piece alone may run faster or slower than
inside the fused update, so the shares are a guide, not a partition.

Usage (the docs' breakdown; 2 cores, no other process of one's own running)::

    python -m benchmarks.a2c_profile --repeats 7
    python -m benchmarks.a2c_profile --compare --repeats 7   # the update's gradient vs jax.grad of the loss

Prints a table, and with ``--json`` one JSON line of ``{piece: milliseconds}``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from agents.a2c import A2CConfig, make_train
from agents.movielens import make_env_params
from agents.networks import sample_slate, served_mask, slate_log_prob

try:
    from agents.networks import item_log_prob
except ImportError:  # the update before issue #10's savings
    item_log_prob = None
from agents.parallel import DeviceAxis


def _median_ms(function: Callable[..., Any], *args: Any, repeats: int) -> float:
    """Median wall time of ``jax.jit(function)(*args)`` in ms, compiled (and run once) beforehand."""
    compiled = jax.jit(function)
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def profile_update(config: A2CConfig, repeats: int = 7) -> dict[str, float]:
    """Milliseconds of one update of ``config`` and of its pieces (see the module doc).

    Returns:
        ``{piece: ms}`` in the order printed.
    """
    env = make_env_params(config)
    training = make_train(config, env.params, env.core, env.item_features)
    state = training.init(jax.random.key(0))
    axis, steps = DeviceAxis(), config.rollout_steps
    # a rollout's batch, from parameters that have trained a few updates (not the initial ones)
    state, _ = jax.block_until_ready(training.run(state, 3))
    params, actors = state.learner.params, state.actors

    def rollout(params, actors, key):
        return training._rollout(axis, training.env_params, params, actors, key)

    _, batch = jax.jit(rollout)(params, actors, jax.random.key(1))
    observations = actors.observation
    flat_observations = batch.observation.reshape(-1, batch.observation.shape[-1])
    n_items = training.n_items
    blocked_all = served_mask(batch.served.reshape(-1, batch.served.shape[-1]), n_items)
    slates = batch.slate.reshape(-1, batch.slate.shape[-1])
    scores_all = jax.jit(lambda p, o: training.model(p).scores(o))(params, flat_observations)

    def env_step(env_carry, key):
        items = jax.random.randint(key, (config.num_envs, config.slate_size), 0, n_items)
        action = items[:, 0] if config.slate_size == 1 else items
        return jax.vmap(training.core.step_autoreset, in_axes=(0, 0, None))(env_carry, action, training.env_params)

    def sampler(scores, served, key):
        blocked = served_mask(served, n_items) if config.mask_served else jnp.zeros(scores.shape, bool)
        return sample_slate(jax.random.split(key, scores.shape[0]), scores, blocked, config.slate_size)

    def policy_terms(scores, blocked, slates, function=slate_log_prob):
        log_prob, entropy = function(scores, blocked, slates)
        return -jnp.mean(log_prob) - config.entropy_coef * jnp.mean(entropy)

    def actor_backward(params, cotangent):
        _, pullback = jax.vjp(lambda p: training.model(p).scores(flat_observations), params)
        return pullback(cotangent)

    def critic_backward(params, cotangent):
        _, pullback = jax.vjp(lambda p: training.model(p).value(flat_observations), params)
        return pullback(cotangent)

    if hasattr(training, "_gradients"):
        def gradient(params, batch):
            return training._gradients(params, batch, axis)
    else:  # the update before issue #10's savings: jax.grad of the loss
        def gradient(params, batch):
            return jax.grad(training._loss, has_aux=True)(params, batch, axis)

    grads, _ = jax.jit(gradient)(params, batch)
    opt_state = state.learner.opt_state

    def optimiser(grads, opt_state, params):
        import optax

        updates, opt_state = training.optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    score_cotangent = jax.jit(jax.grad(policy_terms))(scores_all, blocked_all, slates)
    value_cotangent = jnp.ones(flat_observations.shape[0]) / flat_observations.shape[0]

    def one_update(state):
        return training.run(state, 1)

    times: dict[str, float] = {}
    jax.block_until_ready(one_update(state))  # compile
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(one_update(state))
        samples.append(time.perf_counter() - start)
    times["update (rollout + gradient + optimiser)"] = 1000 * statistics.median(samples)
    times["rollout"] = _median_ms(rollout, params, actors, jax.random.key(1), repeats=repeats)
    times["  actor scores (per step x steps)"] = steps * _median_ms(
        lambda p, o: training.model(p).scores(o), params, observations, repeats=repeats)
    times["  sampler: mask + Plackett-Luce draw (x steps)"] = steps * _median_ms(
        sampler, scores_all[:config.num_envs], actors.served, jax.random.key(2), repeats=repeats)
    times["  env steps (x steps)"] = steps * _median_ms(env_step, actors.env, jax.random.key(3), repeats=repeats)
    times["gradient (loss forward + backward)"] = _median_ms(gradient, params, batch, repeats=repeats)
    times["  actor forward, all observations"] = _median_ms(
        lambda p, o: training.model(p).scores(o), params, flat_observations, repeats=repeats)
    times["  critic forward, all observations"] = _median_ms(
        lambda p, o: training.model(p).value(o), params, flat_observations, repeats=repeats)
    times["  log-probabilities + entropy, forward"] = _median_ms(policy_terms, scores_all, blocked_all, slates,
                                                                 repeats=repeats)
    times["  log-probabilities + entropy, forward + backward"] = _median_ms(
        jax.grad(policy_terms), scores_all, blocked_all, slates, repeats=repeats)
    if item_log_prob is not None and config.slate_size == 1:
        times["  the same, closed-form gradient (item_log_prob)"] = _median_ms(
            jax.grad(functools.partial(policy_terms, function=item_log_prob)), scores_all, blocked_all, slates,
            repeats=repeats)
    times["  actor backward (vjp of the scores)"] = _median_ms(actor_backward, params, score_cotangent,
                                                               repeats=repeats)
    times["  critic backward (vjp of the values)"] = _median_ms(critic_backward, params, value_cotangent,
                                                                repeats=repeats)
    times["optimiser (clip + Adam + apply)"] = _median_ms(optimiser, grads, opt_state, params, repeats=repeats)
    return times


def compare_with_autodiff(config: A2CConfig, repeats: int = 7, updates: int = 10) -> dict[str, float]:
    """Env-steps/s of blocks of ``updates`` updates, computing the gradient two ways, interleaved.

    ``_gradients`` (the update as it runs) against ``jax.grad`` of ``_loss`` (every network
    output computed again in the loss, as the update did before issue #10's savings; the
    rollout's stored scores then go unused), in one process, the two timed in alternation so
    that both see the same load.

    Returns:
        ``{"reuse": steps/s, "autodiff": steps/s, "speed-up": ratio}`` (medians).
    """
    env = make_env_params(config)
    variants = {"reuse": make_train(config, env.params, env.core, env.item_features),
                "autodiff": make_train(config, env.params, env.core, env.item_features)}
    plain = variants["autodiff"]
    plain._gradients = lambda params, batch, axis: jax.grad(plain._loss, has_aux=True)(params, batch, axis)
    states = {name: jax.block_until_ready(training.run(training.init(jax.random.key(0)), updates))[0]
              for name, training in variants.items()}  # compile
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, training in variants.items():
            start = time.perf_counter()
            states[name], metrics = training.run(states[name], updates)
            jax.block_until_ready(metrics)
            times[name].append(time.perf_counter() - start)
    rates = {name: updates * config.steps_per_update / statistics.median(t) for name, t in times.items()}
    return {**rates, "speed-up": rates["reuse"] / rates["autodiff"]}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.a2c_profile", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ml-latest-small")
    parser.add_argument("--num-envs", type=int, default=256)
    parser.add_argument("--rollout-steps", type=int, default=16)
    parser.add_argument("--slate-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    parser.add_argument("--compare", action="store_true",
                        help="time whole updates with the update's gradient and with jax.grad of the loss, "
                             "interleaved, instead of the pieces")
    args = parser.parse_args(argv)
    config = A2CConfig(dataset=args.dataset, num_envs=args.num_envs, rollout_steps=args.rollout_steps,
                       slate_size=args.slate_size, total_steps=10**9, progress=False, tensorboard=False)
    load = os.getloadavg()[0]
    if args.compare:
        rates = compare_with_autodiff(config, args.repeats)
        print(json.dumps({"load_1min_at_start": load, "load_1min_at_end": os.getloadavg()[0],
                          **{k: round(v, 3 if k == "speed-up" else None) for k, v in rates.items()}}))
        return 0
    times = profile_update(config, args.repeats)
    if args.json:
        print(json.dumps({"load_1min_at_start": load, **{k.strip(): round(v, 2) for k, v in times.items()}}))
        return 0
    total = times["update (rollout + gradient + optimiser)"]
    print(f"A2C update, {config.num_envs} envs x {config.rollout_steps} steps, {args.dataset}, "
          f"slate_size={config.slate_size}, median of {args.repeats}; load average {load:.1f} at the start")
    for name, ms in times.items():
        print(f"{name:52s} {ms:9.1f} ms {100 * ms / total:6.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
