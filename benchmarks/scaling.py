"""Throughput of the vectorised functional cores as the batch and the device count grow.

What a 2-core CI machine cannot show: user-steps/s of RecGym-MovieLens and pipeline-steps/s of
RecGym-Pipeline under ``jit`` + ``vmap`` + ``lax.scan`` for growing batches, on one device, on
``N`` forced CPU devices (the batch sharded with ``jax.shard_map`` over a ``"devices"`` mesh axis),
or on a GPU. Random actions, auto-reset on, observations consumed.

With ``--train`` it measures A2C *training* instead (rollout + update, env-steps/s), the batch
split over the devices and the gradients averaged across them (``--parallel pmap`` or
``shard_map``, see :mod:`agents.parallel`).

Usage::

    python -m benchmarks.scaling --env movielens --envs 4096 65536 --cpu-devices 16
    python -m benchmarks.scaling --env pipeline --envs 4096 65536 262144
    for n in 1 2 4 8 16; do python -m benchmarks.scaling --env movielens --train --envs 1024 --cpu-devices $n; done

``--cpu-devices N`` must be given before JAX starts (this script sets ``jax_num_cpu_devices``).
Prints one JSON line per configuration (median of ``--repeats`` timed runs, compiled beforehand).
Forcing more CPU devices than cores oversubscribes them: such figures measure overhead, not
speed-up.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def _make(env: str, dataset: str):
    """Return ``(core, params, sample_actions(key, n))`` for an env name."""
    import jax

    if env == "movielens":
        from recgym.envs.movielens import MovieLensCore, build_world, make_params

        params = jax.device_put(make_params(build_world(dataset)))

        def sample(key, n):
            return jax.random.randint(key, (n,), 0, params.n_items)

        return MovieLensCore(), params, sample
    if env == "pipeline":
        from recgym.envs.pipeline.env import PipelineCore
        from recgym.envs.pipeline.params import make_params

        params = make_params("random")

        def sample(key, n):
            return jax.random.randint(key, (n,), 0, params.num_increment_actions)

        return PipelineCore(), params, sample
    raise SystemExit(f"unknown --env {env!r}: choose movielens or pipeline")


def _rollout(core, params, sample, n_envs: int, n_steps: int):
    """A pure ``key -> total reward`` running ``n_envs`` envs for ``n_steps`` steps."""
    import jax
    import jax.numpy as jnp

    def rollout(key):
        k_start, k_run = jax.random.split(key)
        obs, carry = jax.vmap(lambda k: core.start(k, params))(jax.random.split(k_start, n_envs))

        def body(loop, key):
            carry, total = loop
            obs, carry, reward, _, _, _ = jax.vmap(
                lambda c, a: core.step_autoreset(c, a, params)
            )(carry, sample(key, n_envs))
            return (carry, total + reward.sum() + 1e-9 * obs.sum()), None

        (_, total), _ = jax.lax.scan(body, (carry, jnp.float32(0.0)), jax.random.split(k_run, n_steps))
        return total

    return rollout


def _compiled_runner(per_device, devices, n_dev: int):
    """``jit`` of the rollout; with several devices, ``n_dev`` rollouts sharded one per device."""
    import jax
    from jax.sharding import Mesh, PartitionSpec

    if n_dev == 1:
        return jax.jit(per_device)
    sharded = jax.shard_map(
        jax.vmap(per_device),
        mesh=Mesh(devices, ("devices",)),
        in_specs=PartitionSpec("devices"),
        out_specs=PartitionSpec("devices"),
        # params are closed over (replicated); per-shard state is built from sharded keys
        check_vma=False,
    )
    return jax.jit(lambda key: sharded(jax.random.split(key, n_dev)))


def _train_rate(dataset: str, n_envs: int, n_dev: int, parallel: str, updates: int, repeats: int) -> dict:
    """A2C training env-steps/s: ``updates`` updates per timed call, median of ``repeats`` calls."""
    import jax

    from agents.a2c import A2CConfig, make_train
    from agents.movielens import make_env_params

    config = A2CConfig(dataset=dataset, num_envs=n_envs, num_devices=n_dev, parallel=parallel,
                       total_steps=10**9, progress=False, tensorboard=False)
    env = make_env_params(config)
    training = make_train(config, env.params, env.core, env.item_features)
    state, _ = jax.block_until_ready(training.run(training.init(jax.random.key(0)), updates))  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state, metrics = training.run(state, updates)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    median = sorted(times)[len(times) // 2]
    return {"steps": config.rollout_steps * updates, "median_s": round(median, 5),
            "env_steps_per_s": round(updates * config.steps_per_update / median), "parallel": parallel}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__.split("\n")[0])
    parser.add_argument("--env", choices=["movielens", "pipeline"], required=True)
    parser.add_argument("--envs", type=int, nargs="+", default=[4096], help="batch sizes (total)")
    parser.add_argument("--steps", type=int, default=100, help="scan length per timed call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cpu-devices", type=int, default=0, help="force N CPU devices and shard")
    parser.add_argument("--dataset", default="ml-latest-small")
    parser.add_argument("--train", action="store_true", help="time A2C training (movielens only)")
    parser.add_argument("--parallel", choices=["pmap", "shard_map"], default="shard_map",
                        help="how --train runs several devices")
    parser.add_argument("--updates", type=int, default=5, help="updates per timed call (--train)")
    args = parser.parse_args(argv)
    if args.train and args.env != "movielens":
        raise SystemExit("--train measures the A2C agent on movielens only")

    import jax

    if args.cpu_devices:
        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_num_cpu_devices", args.cpu_devices)
    devices = jax.devices()
    n_dev = len(devices) if args.cpu_devices else 1
    if args.train:
        for n_envs in args.envs:
            if n_envs % n_dev:
                print(f"skip {n_envs}: not divisible by {n_dev} devices", file=sys.stderr)
                continue
            record = _train_rate(args.dataset, n_envs, n_dev, args.parallel, args.updates, args.repeats)
            print(json.dumps({"env": args.env, "mode": "a2c-training", "backend": jax.default_backend(),
                              "device": str(devices[0].device_kind), "devices": n_dev, "num_envs": n_envs,
                              **record}), flush=True)
        return 0
    core, params, sample = _make(args.env, args.dataset)
    for n_envs in args.envs:
        if n_envs % n_dev:
            print(f"skip {n_envs}: not divisible by {n_dev} devices", file=sys.stderr)
            continue
        run = _compiled_runner(_rollout(core, params, sample, n_envs // n_dev, args.steps), devices, n_dev)
        run(jax.random.PRNGKey(0)).block_until_ready()  # compile outside the timed region
        times = []
        for r in range(args.repeats):
            start = time.perf_counter()
            run(jax.random.PRNGKey(r + 1)).block_until_ready()
            times.append(time.perf_counter() - start)
        median = sorted(times)[len(times) // 2]
        print(json.dumps({
            "env": args.env, "backend": jax.default_backend(), "device": str(devices[0].device_kind),
            "devices": n_dev, "num_envs": n_envs, "steps": args.steps,
            "median_s": round(median, 5), "env_steps_per_s": round(n_envs * args.steps / median),
        }), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
