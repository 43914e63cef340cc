"""The exact integer optimum of a pipeline world: the best allocation, batch size and prefetch.

Why a scan over levels is exact. Fix the batch size ``B``. Any allocation ``c`` reaches a CPU
level ``L = min_i cpu_i(c_i)`` (per-stage CPU capacity without the oversubscription factor). The
*minimal* allocation for that level, ``c_i(L) = min{c : cpu_i(c) >= L}``, is component-wise no
larger than ``c``: it has the same level, no more workers (so no more oversubscription slowdown)
and no more memory (so at least as much room for prefetch buffers). Every throughput the model
delivers is non-decreasing in the level, in the oversubscription factor and in the prefetch depth
(on the ``"demand"`` basis too: the demand depends on the level and the batch size, not on the
workers, and the factor on the workers only through their number),
so some optimum is a minimal allocation at one of the finitely many levels ``cpu_i(c)``,
``i`` a stage, ``1 <= c <= max_cores_per_stage`` — exactly the allocations that "give the next
core to the current bottleneck" visits. For each such allocation the best prefetch depth is the
largest that fits in memory. The optimum is the best over batch sizes and levels; the candidates
are evaluated with the environment's own :func:`~recgym.envs.pipeline.dynamics.performance`, so
the optimum and the dynamics cannot disagree. ``tests/envs/pipeline/test_pipeline_optimum.py`` checks it
against brute force over every allocation on small machines.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from recgym.envs.pipeline import dynamics, model
from recgym.envs.pipeline.dynamics import Conditions, PipelineWorld
from recgym.envs.pipeline.params import NUM_STAGES, PipelineParams


@dataclass(frozen=True)
class OptimalConfig:
    """The best configuration in some conditions (arrays with the world's batch shape).

    Attributes:
        throughput: ``(...)`` the optimum's samples/s (0 if nothing fits in memory).
        cores: ``(..., 6)`` int32 workers per stage.
        batch_log2: ``(...)`` int32 log2 batch size.
        prefetch: ``(...)`` int32 prefetch depth.
        feasible: ``(...)`` bool, some configuration fits in memory.
    """

    throughput: Any
    cores: Any
    batch_log2: Any
    prefetch: Any
    feasible: Any

    def absolute_action(self, params: PipelineParams):
        """The configuration as an ``absolute``-mode action ``(..., 8)`` (int64)."""
        cores = np.asarray(self.cores, dtype=np.int64)
        return np.concatenate(
            [
                cores - 1,
                (np.asarray(self.batch_log2, dtype=np.int64) - params.min_batch_log2)[..., None],
                np.asarray(self.prefetch, dtype=np.int64)[..., None],
            ],
            axis=-1,
        )


def _expand(xp, tree, axes: int):
    """Insert ``axes`` broadcast axes before the stage axis / at the end of every field."""

    def one(x, per_stage):
        x = xp.asarray(x, dtype=xp.float32)  # every world and conditions field is float32
        if per_stage:
            return x.reshape(*x.shape[:-1], *(1,) * axes, x.shape[-1])
        return x.reshape(*x.shape, *(1,) * axes)

    fields = tree._fields if hasattr(tree, "_fields") else tree.__dataclass_fields__
    per_stage = {"cpu_seconds", "serial_fraction", "worker_memory_gib", "element_gib", "event_cost_factor"}
    return type(tree)(**{name: one(getattr(tree, name), name in per_stage) for name in fields})


def optimal_config(xp, params: PipelineParams, world: PipelineWorld, cond: Conditions) -> OptimalConfig:
    """The exact optimum of ``world`` in conditions ``cond`` (see the module docstring).

    Args:
        xp: Array namespace (NumPy or ``jax.numpy``; pure, so it jits and vmaps).
        params: Static params (bounds: cores per stage, batch sizes, prefetch depth).
        world: The world, any batch shape ``(...)``.
        cond: The conditions, same batch shape.

    Returns:
        :class:`OptimalConfig` with batch shape ``(...)``.
    """
    cmax = params.max_cores_per_stage
    batch_log2 = xp.arange(params.min_batch_log2, params.max_batch_log2 + 1, dtype=xp.int32)
    batch = xp.asarray(2.0 ** np.arange(params.min_batch_log2, params.max_batch_log2 + 1), dtype=xp.float32)
    b = batch[:, None]  # (B, 1)

    # Candidates live on axes (..., B, K): batch size x level. Per-env values get two trailing
    # axes; per-stage values are lists of such arrays, as in the dynamics (see model.stages).
    def env(x):
        return xp.asarray(x, dtype=xp.float32)[..., None, None]

    def per_stage(x):
        return [env(v) for v in model.stages(x)]

    f = per_stage(world.serial_fraction)
    seconds = model.stage_seconds_per_sample(xp, per_stage(cond.cpu_seconds), b, env(world.batch_overhead_seconds))
    counts = xp.arange(1, cmax + 1, dtype=xp.float32)
    # Each stage's CPU capacity with 1..cmax workers: the candidate levels, (..., B, 6 * cmax).
    table = [model.amdahl_speedup(xp, counts, fi) / si for fi, si in zip(f, seconds)]
    by_batch = xp.zeros_like(b)  # broadcasts a batch-independent table over the batch axis
    levels = xp.concatenate([t + by_batch if t.shape[-2] == 1 else t for t in table], axis=-1)
    if xp is np:
        # A level above what the slowest stage reaches with cmax workers needs more than cmax
        # workers somewhere: the search below rejects it (``within``). On NumPy, sort the levels and
        # drop the columns above every row's reachable ones (three quarters of them, typically).
        # Exact: only rejected candidates go.
        reachable = functools.reduce(xp.minimum, [t[..., -1:] for t in table])  # (..., B, 1)
        levels = xp.sort(levels, axis=-1)
        keep = int(xp.max(xp.sum(levels <= reachable * (1.0 + 1e-4), axis=-1), initial=1))
        levels = levels[..., :keep]
    # Minimal workers of each stage reaching each level: invert Amdahl, then fix rounding.
    cores = []
    within = True
    for fi, si in zip(f, seconds):
        need = levels * si  # speedup needed
        room = 1.0 / need - fi
        exact = xp.where(room > 0, (1.0 - fi) / xp.where(room > 0, room, 1.0), xp.inf)
        guess = xp.maximum(xp.ceil(exact - 1e-3), 1.0)
        short = model.amdahl_speedup(xp, xp.minimum(guess, cmax + 1.0), fi) / si < levels * (1.0 - 1e-5)
        c = xp.where(need <= 1.0, 1.0, guess + short)
        within = within & (c <= cmax)
        cores.append(xp.minimum(c, float(cmax)))
    # The model of dynamics.performance, evaluated once for every candidate (the brute-force test
    # checks the two agree).
    mu = model.trainer_rate(xp, b, env(world.trainer_batch_seconds), env(world.trainer_sample_seconds))
    io, share = env(world.io_samples_per_second), env(world.trainer_cpu_fraction)
    slowdown = model.cpu_slowdown(xp, params.oversubscription_basis, cores, seconds, f, io, mu, share,
                                  env(cond.available_cores), params.oversubscription_overhead, env(world.core_budget),
                                  env(world.core_efficiency))
    caps = model.stage_capacities(xp, cores, seconds, f, slowdown, io)
    mu = model.shared_trainer_rate(xp, mu, slowdown, share)
    # Largest prefetch depth that fits next to this allocation.
    elements = per_stage(world.element_gib)
    base_mem = model.memory_gib(
        xp, cores, b, 0.0, per_stage(world.worker_memory_gib), elements, env(world.shuffle_buffer),
        env(world.trainer_memory_gib),
    )
    per_batch = b * elements[model.PREFETCH_STAGE]
    cap = env(cond.memory_cap_gib)
    depth = xp.floor(xp.where(per_batch > 0, (cap - base_mem) / xp.where(per_batch > 0, per_batch, 1.0), xp.inf))
    depth = xp.clip(depth, -1.0, float(params.max_prefetch))
    # Float32 rounding can put the largest depth a hair over the cap: step back one if so.
    depth = xp.where(base_mem + depth * per_batch > cap, depth - 1.0, depth)
    throughput = model.buffered_throughput(xp, model.bottleneck_rate(xp, caps), mu, xp.maximum(depth, 0.0) + 1.0)
    score = xp.where(within & (depth >= 0), throughput, -1.0)
    lead, n_levels = score.shape[:-2], score.shape[-1]
    best = xp.argmax(score.reshape(*lead, -1), axis=-1)[..., None]

    def pick(x):  # x has the candidates' full shape (..., B, K)
        if not lead:  # one world: plain indexing (take_along_axis costs more than the search)
            return x.reshape(-1)[best[0]]
        return xp.take_along_axis(x.reshape(*lead, -1), best, axis=-1)[..., 0]

    best_score = pick(score)
    return OptimalConfig(
        throughput=xp.maximum(best_score, 0.0),
        cores=xp.stack([pick(c) for c in cores], axis=-1).astype(xp.int32),
        batch_log2=batch_log2[best[..., 0] // n_levels],
        prefetch=pick(xp.maximum(depth, 0.0)).astype(xp.int32),
        feasible=best_score >= 0,
    )


def optimum_table(xp, params: PipelineParams, world: PipelineWorld) -> OptimalConfig:
    """The optimum in each of the four conditions an episode can be in.

    Returns:
        :class:`OptimalConfig` with batch shape ``(..., 2, 2)`` indexed
        ``[after_change, neighbour_on]``.
    """
    after = xp.asarray([[False, False], [True, True]])
    neighbour = xp.asarray([[False, True], [False, True]])
    w = _expand(xp, world, 2)
    cond = dynamics.conditions(xp, w, after, neighbour)
    shape = cond.available_cores.shape
    cond = Conditions(
        cpu_seconds=xp.broadcast_to(cond.cpu_seconds, (*shape, NUM_STAGES)),
        available_cores=cond.available_cores,
        memory_cap_gib=xp.broadcast_to(cond.memory_cap_gib, shape),
    )
    return optimal_config(xp, params, _broadcast_world(xp, w, shape), cond)


def _broadcast_world(xp, world: PipelineWorld, shape) -> PipelineWorld:
    out = {}
    for name in world.__dataclass_fields__:
        v = xp.asarray(getattr(world, name))
        per_stage = name in {"cpu_seconds", "serial_fraction", "worker_memory_gib", "element_gib", "event_cost_factor"}
        out[name] = xp.broadcast_to(v, (*shape, NUM_STAGES) if per_stage else shape)
    return PipelineWorld(**out)


def optimum(
    params: PipelineParams,
    world: PipelineWorld | None = None,
    *,
    after_change: bool = False,
    neighbour_on: bool = False,
) -> OptimalConfig:
    """The exact optimum of a scenario (NumPy).

    Args:
        params: The scenario's params.
        world: A world from :func:`~recgym.envs.pipeline.dynamics.sample_world` (e.g. an episode's
            ``state.world``); defaults to the scenario's central world (no jitter; for ``random``,
            the middle of every range).
        after_change: Evaluate the world after the mid-episode change.
        neighbour_on: Evaluate with the noisy neighbour running.

    Returns:
        :class:`OptimalConfig` (scalars for an unbatched world).
    """
    if world is None:
        world = dynamics.sample_world(np, params, np.full(dynamics.WORLD_UNIFORMS, 0.5, dtype=np.float32))
    shape = np.shape(world.core_budget)
    cond = dynamics.conditions(np, world, np.full(shape, after_change), np.full(shape, neighbour_on))
    return optimal_config(np, params, world, cond)
