"""The exact integer optimum of a pipeline world: the best allocation, batch size and prefetch.

Why a scan over levels is exact. Fix the batch size ``B``. Any allocation ``c`` reaches a CPU
level ``L = min_i cpu_i(c_i)`` (per-stage CPU capacity without the oversubscription factor). The
*minimal* allocation for that level, ``c_i(L) = min{c : cpu_i(c) >= L}``, is component-wise no
larger than ``c``: it has the same level, no more workers (so no more oversubscription slowdown)
and no more memory (so at least as much room for prefetch buffers). Every throughput the model
delivers is non-decreasing in the level, in the oversubscription factor and in the prefetch depth,
so some optimum is a minimal allocation at one of the finitely many levels ``cpu_i(c)``,
``i`` a stage, ``1 <= c <= max_cores_per_stage`` — exactly the allocations that "give the next
core to the current bottleneck" visits. For each such allocation the best prefetch depth is the
largest that fits in memory. The optimum is the best over batch sizes and levels; the candidates
are evaluated with the environment's own :func:`~recgym.envs.pipeline.dynamics.performance`, so
the optimum and the dynamics cannot disagree. ``tests/envs/pipeline/test_pipeline_optimum.py`` checks it
against brute force over every allocation on small machines.
"""

from __future__ import annotations

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


def _stack(xp, per_stage):
    """A list of per-stage arrays as one array with the stage axis last."""
    return xp.stack(xp.broadcast_arrays(*per_stage), axis=-1)


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
    nb = params.num_batch_sizes
    batch_log2 = xp.arange(params.min_batch_log2, params.max_batch_log2 + 1, dtype=xp.int32)
    batch = xp.left_shift(1, batch_log2.astype(xp.int32)).astype(xp.float32)  # exact 2**k
    # Axes: (..., B, level, stage) with the level axis of length 6 * cmax.
    w = _expand(xp, world, 2)
    cd = _expand(xp, cond, 2)
    seconds = _stack(xp, model.stage_seconds_per_sample(
        xp, cd.cpu_seconds, batch[:, None], w.batch_overhead_seconds
    ))  # (..., B, 1, 6)
    counts = xp.arange(1, cmax + 1, dtype=xp.float32)
    table = model.amdahl_speedup(xp, counts[:, None], w.serial_fraction) / seconds  # (..., B, cmax, 6)
    levels = xp.swapaxes(table, -1, -2).reshape(*table.shape[:-2], NUM_STAGES * cmax)[..., None]  # (...,B,K,1)
    # Minimal workers per stage reaching each level: invert Amdahl, then fix rounding.
    need = levels * seconds  # speedup needed, (..., B, K, 6)
    f = w.serial_fraction
    room = 1.0 / need - f
    exact = xp.where(room > 0, (1.0 - f) / xp.where(room > 0, room, 1.0), xp.inf)
    guess = xp.maximum(xp.ceil(exact - 1e-3), 1.0)
    short = model.amdahl_speedup(xp, xp.minimum(guess, cmax + 1.0), f) / seconds < levels * (1.0 - 1e-5)
    cores = xp.where(need <= 1.0, 1.0, guess + short)
    within = xp.all(cores <= cmax, axis=-1)
    cores = xp.minimum(cores, float(cmax))
    # The model of dynamics.performance, evaluated once for every candidate (the brute-force test
    # checks the two agree).
    slowdown = model.oversubscription_factor(
        xp, xp.sum(cores, axis=-1), cd.available_cores, params.oversubscription_overhead
    )
    caps = model.stage_capacities(xp, cores, seconds, f, slowdown, w.io_samples_per_second)
    mu = model.trainer_rate(xp, batch[:, None], w.trainer_batch_seconds, w.trainer_sample_seconds)
    # Largest prefetch depth that fits next to this allocation.
    base_mem = model.memory_gib(
        xp, cores, batch[:, None], 0.0, w.worker_memory_gib, w.element_gib, w.shuffle_buffer, w.trainer_memory_gib
    )
    per_batch = batch[:, None] * w.element_gib[..., -1]
    room_mem = cd.memory_cap_gib - base_mem
    depth = xp.floor(xp.where(per_batch > 0, room_mem / xp.where(per_batch > 0, per_batch, 1.0), xp.inf))
    depth = xp.clip(depth, -1.0, float(params.max_prefetch))
    # Float32 rounding can put the largest depth a hair over the cap: step back one if so.
    depth = xp.where(base_mem + depth * per_batch > cd.memory_cap_gib, depth - 1.0, depth)
    throughput = model.buffered_throughput(xp, model.bottleneck_rate(xp, caps), mu, xp.maximum(depth, 0.0) + 1.0)
    b_log2 = xp.broadcast_to(batch_log2[:, None].astype(xp.float32), depth.shape)
    ok = within & (depth >= 0)
    score = xp.where(ok, throughput, -1.0)
    n = nb * NUM_STAGES * cmax
    lead = score.shape[:-2]
    flat = score.reshape(*lead, n)
    best = xp.argmax(flat, axis=-1)
    best_score = xp.max(flat, axis=-1)

    def pick(x):
        x = xp.broadcast_to(x, score.shape).reshape(*lead, n)
        return xp.take_along_axis(x, best[..., None], axis=-1)[..., 0]

    best_cores = xp.take_along_axis(
        xp.broadcast_to(cores, (*score.shape, NUM_STAGES)).reshape(*lead, n, NUM_STAGES),
        best[..., None, None],
        axis=-2,
    )[..., 0, :]
    feasible = best_score >= 0
    return OptimalConfig(
        throughput=xp.maximum(best_score, 0.0),
        cores=best_cores.astype(xp.int32),
        batch_log2=pick(b_log2).astype(xp.int32),
        prefetch=pick(xp.maximum(depth, 0.0)).astype(xp.int32),
        feasible=feasible,
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
