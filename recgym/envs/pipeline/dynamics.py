"""The dynamics of RecGym-Pipeline-v0, written once against an array namespace ``xp``.

The same functions run on Python numbers and NumPy (the single gymnasium env and the optimum) and
on ``jax.numpy`` (the vmapped, jitted functional core, :class:`recgym.envs.pipeline.core.PipelineCore`).
They never draw random numbers: the caller passes the noise in (uniforms for the world and the
neighbour chain, standard normals for the measurements), so both back ends are deterministic
functions of their seeds. Every function broadcasts over leading batch axes.

One step is one tuning interval: the action sets the allocation, the interval runs in the current
conditions (the change event, the noisy neighbour), and the observation reports what a monitor
would measure over it.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from typing import Any, NamedTuple

import numpy as np
from flax import struct

from recgym.core import pyscalar
from recgym.envs.pipeline import model
from recgym.envs.pipeline.params import NUM_STAGES, STAGES, PipelineParams

#: Uniforms :func:`sample_world` can consume (the ``random`` scenario; the named scenarios read
#: only the first :data:`JITTER_UNIFORMS`, see :func:`world_uniforms`).
WORLD_UNIFORMS = 29
JITTER_UNIFORMS = 6
#: Standard normals consumed by one measurement (6 stage rates, throughput, trainer rate).
MEASUREMENT_NORMALS = NUM_STAGES + 2
#: Uniforms consumed by one step (the neighbour chain).
STEP_UNIFORMS = 1

# Increment actions: 2i / 2i+1 add / remove a worker of stage i; then batch x2, batch /2,
# prefetch +1, prefetch -1, no-op. Each row: (core deltas x6, batch_log2 delta, prefetch delta).
_increment_rows = []
for _stage in range(NUM_STAGES):
    for _sign in (1, -1):
        _row = [0] * (NUM_STAGES + 2)
        _row[_stage] = _sign
        _increment_rows.append(_row)
for _col, _sign in ((NUM_STAGES, 1), (NUM_STAGES, -1), (NUM_STAGES + 1, 1), (NUM_STAGES + 1, -1)):
    _row = [0] * (NUM_STAGES + 2)
    _row[_col] = _sign
    _increment_rows.append(_row)
_increment_rows.append([0] * (NUM_STAGES + 2))
#: ``(17, 8)`` int table: the allocation change of each increment action.
INCREMENT_TABLE = np.asarray(_increment_rows, dtype=np.int32)
#: Human names of the increment actions, in order.
INCREMENT_ACTION_NAMES: tuple[str, ...] = tuple(
    [f"{stage} {sign}1 core" for stage in STAGES for sign in ("+", "-")]
    + ["batch x2", "batch /2", "prefetch +1", "prefetch -1", "no-op"]
)
NOOP_ACTION = len(INCREMENT_ACTION_NAMES) - 1

#: Names of the observation entries, in order (the layout of the float32 observation vector).
OBSERVATION_NAMES: tuple[str, ...] = (
    *(f"cores_{s}" for s in STAGES),
    *(f"rate_{s}" for s in STAGES),
    *(f"utilisation_{s}" for s in STAGES),
    "batch_size",
    "prefetch",
    "throughput",
    "trainer_idle_fraction",
    "memory_used_gib",
    "memory_cap_gib",
    "available_cores",
    "core_budget",
)
OBS_DIM = len(OBSERVATION_NAMES)
#: Observation slices / indices by field.
OBS_CORES = slice(0, NUM_STAGES)
OBS_RATES = slice(NUM_STAGES, 2 * NUM_STAGES)
OBS_UTILISATION = slice(2 * NUM_STAGES, 3 * NUM_STAGES)
OBS_BATCH = 3 * NUM_STAGES
OBS_PREFETCH = OBS_BATCH + 1
OBS_THROUGHPUT = OBS_BATCH + 2
OBS_IDLE = OBS_BATCH + 3
OBS_MEMORY = OBS_BATCH + 4
OBS_MEMORY_CAP = OBS_BATCH + 5
OBS_AVAILABLE = OBS_BATCH + 6
OBS_BUDGET = OBS_BATCH + 7
#: Ceiling of every observation entry (rates in thousands of samples/s, utilisations, GiB, cores):
#: far beyond any realistic value, it keeps the observation space finite.
OBS_CEILING = 1e6
#: Rates in the observation are in thousands of samples per second.
RATE_UNIT = 1e-3


@struct.dataclass
class PipelineWorld:
    """One episode's machine and workload, after per-seed jitter or randomisation (arrays).

    Per-stage fields have shape ``(..., 6)``, the others ``(...)``; all float32. One environment's
    world on NumPy holds the same float32 values as Python numbers (a tuple of 6 per per-stage
    field; see :func:`math_namespace`). Built by :func:`sample_world`; the meaning of each field is
    that of the same-named field of :class:`~recgym.envs.pipeline.params.PipelineProfile` / ``PipelineParams`` (memory in GiB).
    ``io_samples_per_second`` is the read stage's storage ceiling.
    """

    cpu_seconds: Any
    serial_fraction: Any
    worker_memory_gib: Any
    element_gib: Any
    batch_overhead_seconds: Any
    io_samples_per_second: Any
    core_budget: Any
    memory_gib: Any
    trainer_memory_gib: Any
    shuffle_buffer: Any
    trainer_batch_seconds: Any
    trainer_sample_seconds: Any
    trainer_cpu_fraction: Any
    event_cost_factor: Any
    event_core_factor: Any
    event_memory_factor: Any
    neighbour_cores: Any
    neighbour_p_on: Any
    neighbour_p_off: Any
    core_efficiency: Any = 1.0


class PipelineState(NamedTuple):
    """The environment state: the episode's world, the current allocation, time and neighbour.

    A ``NamedTuple`` (a JAX pytree as is; cheaper to build than a dataclass on every step).
    Fields: ``world``, the episode's :class:`PipelineWorld`; ``allocation`` ``(..., 8)`` int32,
    workers per stage (6 entries, each in ``[1, max_cores_per_stage]``), log2 batch size, prefetch
    depth (one environment's on NumPy: a tuple of 8 Python ints, see :func:`math_namespace`);
    ``time`` ``(...)`` int32 steps taken in this episode; ``neighbour_on`` ``(...)`` bool,
    whether the noisy neighbour is running; ``observation`` ``(..., OBS_DIM)`` float32, what the
    monitor measured over the last interval (the measurement noise is part of the state so that
    ``observe`` is a pure read).
    """

    world: PipelineWorld
    allocation: Any
    time: Any
    neighbour_on: Any
    observation: Any

    @property
    def cores(self):
        """``(..., 6)`` int32 workers per stage (one env's: a tuple of 6 ints)."""
        if type(self.allocation) is tuple:
            return self.allocation[:NUM_STAGES]
        return self.allocation[..., :NUM_STAGES]

    @property
    def batch_log2(self):
        """``(...)`` int32 log2 batch size."""
        return model.entry(self.allocation, NUM_STAGES)

    @property
    def prefetch(self):
        """``(...)`` int32 prefetch depth."""
        return model.entry(self.allocation, NUM_STAGES + 1)


class Conditions(NamedTuple):
    """The machine during one interval: after the change event and the neighbour (arrays).

    Fields: ``cpu_seconds`` ``(..., 6)`` per-sample CPU seconds (after drift);
    ``available_cores`` ``(...)`` cores the pipeline can use (>= 1); ``memory_cap_gib`` ``(...)``.
    """

    cpu_seconds: Any
    available_cores: Any
    memory_cap_gib: Any


def _compact_leaf(xp, x):
    """On NumPy, a 0-d array becomes a NumPy scalar and a view a plain array (arithmetic on
    scalars is several times cheaper than on 0-d arrays); unchanged on JAX."""
    if xp is not np:
        return x
    x = np.asarray(x)
    return x[()] if x.ndim == 0 else np.array(x)


def _compact(xp, tree):
    """A NumPy world in its fastest form: one environment's as Python numbers (floats, and a
    tuple per per-stage field, for :mod:`recgym.core.pyscalar`), a batch's as plain arrays."""
    if xp is not np:
        return tree
    values = {f.name: np.asarray(getattr(tree, f.name)) for f in dataclasses.fields(tree)}
    if np.ndim(tree.core_budget) == 0:
        return type(tree)(**{k: v.item() if v.ndim == 0 else tuple(v.tolist()) for k, v in values.items()})
    return type(tree)(**{k: np.array(v) for k, v in values.items()})


def _f32(xp, value):
    return xp.asarray(value, dtype=xp.float32)


def _range_ends(xp, bounds):
    """A ``(low, high)`` range of :class:`~recgym.envs.pipeline.params.RandomRanges`: Python numbers
    as they are (weakly typed, so float32 arithmetic stays float32), arrays and tracers as float32."""
    return tuple(v if isinstance(v, int | float) else _f32(xp, v) for v in bounds)


def _uniform_range(xp, u, bounds):
    low, high = _range_ends(xp, bounds)
    return low + (high - low) * u


def _log_uniform(xp, u, bounds):
    low, high = _range_ends(xp, bounds)
    if isinstance(low, float) and isinstance(high, float):  # the log ratio as a float64 constant
        return low * xp.exp(float(np.log(high / low)) * u)
    return low * xp.exp(xp.log(high / low) * u)


def world_uniforms(params: PipelineParams) -> int:
    """How many uniforms a reset draws for the world: all for ``random``, the jitter otherwise."""
    return WORLD_UNIFORMS if params.randomize else JITTER_UNIFORMS


def sample_world(xp, params: PipelineParams, uniforms) -> PipelineWorld:
    """Build one episode's world from ``(..., world_uniforms(params))`` uniforms in ``[0, 1)``.

    Named scenarios jitter each stage's CPU cost log-uniformly by ``exp(+-cost_jitter)``; the
    ``random`` scenario draws every quantity from ``params.random_ranges``.

    Args:
        xp: Array namespace.
        params: Environment params (concrete or traced leaves).
        uniforms: ``(..., n)`` float32 uniforms, ``n >= world_uniforms(params)``.

    Returns:
        The world (float32 arrays with the uniforms' batch shape; for one environment on NumPy,
        computed in float32 and held as Python numbers).
    """
    return _compact(xp, _sample_world(xp, params, uniforms))


def _sample_world(xp, params: PipelineParams, uniforms) -> PipelineWorld:
    u = _f32(xp, uniforms)
    batch_shape = u.shape[:-1]
    prof = params.profile

    def full(value):
        value = _f32(xp, value)
        return value if not batch_shape else xp.broadcast_to(value, batch_shape)

    def per_stage(values):
        values = _f32(xp, values)
        return values if not batch_shape else xp.broadcast_to(values, (*batch_shape, NUM_STAGES))

    cpu = per_stage(prof.cpu_seconds_per_sample)
    if not params.randomize:
        jitter = xp.exp(params.cost_jitter * (2.0 * u[..., 0:6] - 1.0))
        return PipelineWorld(
            cpu_seconds=cpu * jitter,
            serial_fraction=per_stage(prof.serial_fraction),
            worker_memory_gib=per_stage(prof.worker_memory_gib),
            element_gib=per_stage(prof.element_gib),
            batch_overhead_seconds=full(prof.batch_overhead_seconds),
            io_samples_per_second=full(prof.io_samples_per_second),
            core_budget=full(prof.core_budget),
            memory_gib=full(prof.memory_gib),
            trainer_memory_gib=full(prof.trainer_memory_gib),
            shuffle_buffer=full(prof.shuffle_buffer),
            trainer_batch_seconds=full(prof.trainer_batch_seconds),
            trainer_sample_seconds=full(prof.trainer_sample_seconds),
            trainer_cpu_fraction=full(prof.trainer_cpu_fraction),
            core_efficiency=full(prof.core_efficiency),
            event_cost_factor=per_stage(params.event_cost_factor),
            event_core_factor=full(params.event_core_factor),
            event_memory_factor=full(params.event_memory_factor),
            neighbour_cores=full(params.neighbour_cores),
            neighbour_p_on=full(params.neighbour_p_on),
            neighbour_p_off=full(params.neighbour_p_off),
        )
    rr = params.random_ranges
    lo_b, hi_b = _range_ends(xp, rr.core_budget)
    budget = xp.minimum(xp.floor(lo_b + (hi_b - lo_b + 1) * u[..., 24]), hi_b)
    memory = _uniform_range(xp, u[..., 19], rr.memory_gib)
    event_stage = xp.minimum(xp.floor(u[..., 22] * NUM_STAGES), NUM_STAGES - 1)
    event_factor = _log_uniform(xp, u[..., 23], rr.event_cost_factor_log)
    is_event_stage = xp.arange(NUM_STAGES) == event_stage[..., None]
    return PipelineWorld(
        cpu_seconds=cpu * _log_uniform(xp, u[..., 0:6], rr.cpu_scale_log),
        serial_fraction=_uniform_range(xp, u[..., 6:12], rr.serial_fraction),
        worker_memory_gib=per_stage(prof.worker_memory_gib)
        * _log_uniform(xp, u[..., 12:18], rr.worker_memory_scale_log),
        element_gib=per_stage(prof.element_gib) * _log_uniform(xp, u[..., 18:19], rr.element_scale_log),
        batch_overhead_seconds=full(prof.batch_overhead_seconds),
        io_samples_per_second=_log_uniform(xp, u[..., 21], rr.read_bandwidth_mib_s_log)
        * (1024.0 / prof.record_kib),
        core_budget=budget,
        memory_gib=memory,
        trainer_memory_gib=memory * _uniform_range(xp, u[..., 20], rr.trainer_memory_fraction),
        shuffle_buffer=full(prof.shuffle_buffer),
        trainer_batch_seconds=full(prof.trainer_batch_seconds),
        trainer_sample_seconds=full(prof.trainer_sample_seconds),
        trainer_cpu_fraction=full(prof.trainer_cpu_fraction),
        core_efficiency=full(prof.core_efficiency),
        event_cost_factor=xp.where(is_event_stage, event_factor[..., None], 1.0).astype(xp.float32),
        event_core_factor=_uniform_range(xp, u[..., 25], rr.event_core_factor),
        event_memory_factor=_uniform_range(xp, u[..., 26], rr.event_memory_factor),
        neighbour_cores=budget * _uniform_range(xp, u[..., 27], rr.neighbour_core_fraction),
        neighbour_p_on=full(params.neighbour_p_on),
        neighbour_p_off=full(params.neighbour_p_off),
    )


_NO_CHANGE = (1.0,) * NUM_STAGES


def math_namespace(xp, per_env_value):
    """The namespace the dynamics compute with: :mod:`recgym.core.pyscalar` for one environment on
    NumPy (``per_env_value`` is a scalar: Python arithmetic is several times cheaper than NumPy
    calls on six-element arrays), else ``xp`` itself (batched NumPy, JAX)."""
    if xp is np and getattr(per_env_value, "ndim", 0) == 0:
        return pyscalar
    return xp


def conditions(xp, world: PipelineWorld, after_change, neighbour_on) -> Conditions:
    """The machine during an interval, given whether the change happened and the neighbour runs.

    Args:
        xp: Array namespace.
        world: The episode's world.
        after_change: ``(...)`` bool, the interval is after the change step.
        neighbour_on: ``(...)`` bool, the noisy neighbour is running.

    Returns:
        The interval's :class:`Conditions` (for one environment on NumPy, ``cpu_seconds`` is a list
        of Python floats and the other fields are floats; see :func:`math_namespace`).
    """
    m = math_namespace(xp, world.core_budget)
    factor = m.where(model.per_env(after_change), world.event_cost_factor, _NO_CHANGE if m is pyscalar else 1.0)
    if factor is _NO_CHANGE:  # one env before the change: the costs as they are
        cost = list(model.stages(world.cpu_seconds))
    else:
        cost = [c * f for c, f in zip(model.stages(world.cpu_seconds), model.stages(factor))]
    if m is not pyscalar:
        cost = xp.stack(xp.broadcast_arrays(*cost), axis=-1)
    budget = world.core_budget
    budget = m.where(after_change, budget * world.event_core_factor, budget)
    available = m.maximum(budget - m.where(neighbour_on, world.neighbour_cores, 0.0), 1.0)  # >= 1 core
    memory_cap = world.memory_gib
    memory_cap = m.where(after_change, memory_cap * world.event_memory_factor, memory_cap)
    return Conditions(cost, available, memory_cap)


class Performance(NamedTuple):
    """What an allocation achieves in given conditions (true values).

    Fields: ``capacities``, a tuple of the 6 stages' samples/s (each ``(...)``); ``trainer_rate``
    ``(...)`` samples/s the trainer can consume; ``throughput`` ``(...)`` delivered samples/s (0 when
    out of memory); ``memory_gib`` ``(...)`` memory in use; ``oom`` ``(...)`` bool, memory exceeds
    the cap; ``slowdown`` ``(...)`` oversubscription factor; ``batch_size`` ``(...)`` float.
    """

    capacities: tuple
    trainer_rate: Any
    throughput: Any
    memory_gib: Any
    oom: Any
    slowdown: Any
    batch_size: Any


def performance(
    xp, world: PipelineWorld, cond: Conditions, cores, batch_log2, prefetch, overhead=0.0, basis: str = "allocated"
) -> Performance:
    """Evaluate an allocation with the model of :mod:`recgym.envs.pipeline.model`.

    Args:
        xp: Array namespace.
        world: The world.
        cond: The interval's conditions.
        cores: ``(..., 6)`` workers per stage (int or float), or a sequence of 6 per-stage values.
        batch_log2: ``(...)`` log2 batch size (int).
        prefetch: ``(...)`` prefetch depth.
        overhead: Oversubscription overhead ``kappa`` (a float, concrete or traced).
        basis: How oversubscription is counted (``PipelineParams.oversubscription_basis``, static).

    Returns:
        :class:`Performance` of the allocation.
    """
    m = math_namespace(xp, batch_log2)
    c = model.stages(cores)
    if m is not pyscalar:  # Python ints mix with floats as they are; arrays become float32
        c = [m.float32(v) for v in c]
    batch = m.float32(2**batch_log2)  # exact: an integer power of two
    depth = m.float32(prefetch)
    seconds = model.stage_seconds_per_sample(m, cond.cpu_seconds, batch, world.batch_overhead_seconds)
    mu = model.trainer_rate(m, batch, world.trainer_batch_seconds, world.trainer_sample_seconds)
    slowdown = model.cpu_slowdown(
        m, basis, c, seconds, world.serial_fraction, world.io_samples_per_second, mu, world.trainer_cpu_fraction,
        cond.available_cores, overhead, world.core_budget, world.core_efficiency,
    )
    caps = model.stage_capacities(m, c, seconds, world.serial_fraction, slowdown, world.io_samples_per_second)
    mu = model.shared_trainer_rate(m, mu, slowdown, world.trainer_cpu_fraction)
    x = model.buffered_throughput(m, model.bottleneck_rate(m, caps), mu, depth + 1.0)
    mem = model.memory_gib(
        m, c, batch, depth, world.worker_memory_gib, world.element_gib, world.shuffle_buffer,
        world.trainer_memory_gib,
    )
    oom = mem > cond.memory_cap_gib
    # capacities, trainer_rate, throughput, memory_gib, oom, slowdown, batch_size
    return Performance(tuple(caps), mu, m.where(oom, 0.0, x), mem, oom, slowdown, batch)


def observe(xp, allocation, world, cond, perf: Performance, normals, noise: float):
    """The float32 observation of one interval (layout :data:`OBSERVATION_NAMES`).

    Measured rates are the true ones times ``exp(noise * z)``. A stage's utilisation is the rate
    the rest of the pipeline (and the trainer) could sustain divided by its own measured capacity:
    above 1 for the bottleneck (its input queue grows, as in Ray Data's actor-pool utilisation),
    below 1 elsewhere. After an OOM crash every rate and utilisation reads 0.

    Args:
        xp: Array namespace.
        allocation: ``(..., 8)`` int32 allocation (see :class:`PipelineState`).
        world: The world.
        cond: Conditions of the interval.
        perf: Its performance.
        normals: ``(..., MEASUREMENT_NORMALS)`` standard normals.
        noise: Log-normal sigma (a float, concrete or traced).

    Returns:
        ``(observation (..., OBS_DIM) float32, measured_throughput (...))``.
    """
    m = math_namespace(xp, perf.trainer_rate)
    # Measured = true x noise, for (6 stage capacities, trainer rate, throughput).
    factor = [m.exp(noise * z) for z in model.stages(normals)]
    caps = [cap * f for cap, f in zip(perf.capacities, factor)]
    mu = perf.trainer_rate * factor[NUM_STAGES]
    measured_x = perf.throughput * factor[NUM_STAGES + 1]
    lowest, second = _two_smallest(m, [*caps, mu])
    gap = second - lowest
    # A crashed trainer reports nothing: rates and utilisation read 0.
    alive = m.where(perf.oom, 0.0, 1.0)
    rate_scale = alive * RATE_UNIT
    entries = model.stages(allocation)  # the counts are exact in float32
    values = (
        list(entries[:NUM_STAGES])
        + [cap * rate_scale for cap in caps]
        # What the rest of the pipeline sustains: the bottleneck's own rate, except at the
        # bottleneck (where it is the second lowest: the comparison is 0 or 1).
        + [(lowest + gap * (cap <= lowest)) / cap * alive for cap in caps]
        + [
            perf.batch_size,
            entries[NUM_STAGES + 1],
            measured_x * RATE_UNIT,
            1.0 - m.minimum(measured_x / mu, 1.0),
            perf.memory_gib,
            cond.memory_cap_gib,
            cond.available_cores,
            world.core_budget,
        ]
    )
    if m is pyscalar:
        obs = np.array(values, dtype=np.float32)
        if max(values) > OBS_CEILING:
            np.minimum(obs, np.float32(OBS_CEILING), out=obs)
        return obs, measured_x
    obs = xp.stack(xp.broadcast_arrays(*values), axis=-1).astype(xp.float32)
    return xp.minimum(obs, np.float32(OBS_CEILING)), measured_x


def _two_smallest(m, values):
    """The smallest and second-smallest of ``values`` (a list of per-env values; with ties the two
    are equal, as in a sort).

    On Python floats a sort of seven numbers is the cheapest; on arrays (under XLA a sort runs a
    scalar comparator per comparison and dominates a vmapped step) one minimum is masked out and
    the min is taken again.
    """
    if m is pyscalar:
        lowest, second = sorted(values)[:2]
        return lowest, second
    x = m.stack(m.broadcast_arrays(*values), axis=-1)
    first = m.argmin(x, axis=-1)[..., None]
    lowest = m.take_along_axis(x, first, axis=-1)[..., 0]
    second = m.where(m.arange(x.shape[-1]) == first, m.inf, x).min(axis=-1)
    return lowest, second


def _argmin(m, values):
    """Index of the smallest of ``values`` (a list of per-env values; the first on ties), int32."""
    if m is pyscalar:
        return values.index(min(values))
    return m.argmin(m.stack(m.broadcast_arrays(*values), axis=-1), axis=-1).astype(m.int32)


class _Bounds(NamedTuple):
    low: np.ndarray  # int32 arrays, for batches
    high: np.ndarray
    low_entries: tuple  # the same as Python ints, for one env
    high_entries: tuple


def _allocation_bounds(params: PipelineParams) -> _Bounds:
    """Lowest and highest value of each allocation entry (cached on four ints, not on the params,
    whose hash walks every field)."""
    return _bounds(params.max_cores_per_stage, params.min_batch_log2, params.max_batch_log2, params.max_prefetch)


@functools.lru_cache(maxsize=64)
def _bounds(max_cores_per_stage: int, min_batch_log2: int, max_batch_log2: int, max_prefetch: int) -> _Bounds:
    low = [1] * NUM_STAGES + [min_batch_log2, 0]
    high = [max_cores_per_stage] * NUM_STAGES + [max_batch_log2, max_prefetch]
    return _Bounds(np.asarray(low, dtype=np.int32), np.asarray(high, dtype=np.int32), tuple(low), tuple(high))


def apply_action(xp, params: PipelineParams, allocation, action):
    """The allocation after ``action`` (clipped to the bounds; out-of-range moves are no-ops).

    Args:
        xp: Array namespace.
        params: Environment params (its static action mode and bounds are read).
        allocation: ``(..., 8)`` int32 current allocation (see :class:`PipelineState`).
        action: ``increment``: ``(...)`` int in ``[0, 17)``; ``absolute``: ``(..., 8)`` ints,
            ``cores - 1`` per stage, the batch-size index, the prefetch depth.

    Returns:
        ``(..., 8)`` int32 allocation.
    """
    bounds = _allocation_bounds(params)
    if not (xp is np and (type(allocation) is tuple or np.ndim(allocation) == 1)):
        # Arrays: one vector expression (under XLA, cheaper than eight entries).
        if params.action_mode == "increment":
            moved = allocation + xp.asarray(INCREMENT_TABLE)[action]
        else:
            moved = action.astype(xp.int32) + bounds.low
        return xp.minimum(xp.maximum(moved, bounds.low), bounds.high)  # int32 throughout
    # One env on Python ints (see math_namespace): the same sum and clip, entry by entry.
    low, high = bounds.low_entries, bounds.high_entries
    if params.action_mode == "increment":
        moved = map(operator.add, allocation, _INCREMENT_ENTRIES[action])
    else:
        moved = map(operator.add, model.stages(action), low)
    return tuple(map(min, map(max, moved, low), high))


# The increment table as tuples of Python ints (one env).
_INCREMENT_ENTRIES = tuple(tuple(row) for row in INCREMENT_TABLE.tolist())


def _split(allocation):
    """``(cores, batch_log2, prefetch)`` of an allocation (one env's as Python ints)."""
    entries = model.stages(allocation)
    return entries[:NUM_STAGES], entries[NUM_STAGES], entries[NUM_STAGES + 1]


def initial_state(xp, params: PipelineParams, uniforms, normals):
    """Reset: draw the world, start at one worker per stage and the initial batch and prefetch.

    Args:
        xp: Array namespace.
        params: Environment params.
        uniforms: ``(..., world_uniforms(params))`` uniforms for the world.
        normals: ``(..., MEASUREMENT_NORMALS)`` normals for the first observation.

    Returns:
        ``(state, info)``; the first observation (``state.observation``) measures the starting
        allocation over one interval before the change and without the neighbour.
    """
    world = sample_world(xp, params, uniforms)
    shape = xp.shape(world.core_budget)
    if xp is np and shape == ():  # one environment: Python ints (see math_namespace)
        allocation = (1,) * NUM_STAGES + (int(params.initial_batch_log2), int(params.initial_prefetch))
    else:  # the initial batch size and prefetch may be traced
        start = xp.asarray([1] * NUM_STAGES + [params.initial_batch_log2, params.initial_prefetch], dtype=xp.int32)
        allocation = xp.broadcast_to(start, (*shape, NUM_STAGES + 2))
    off = _compact_leaf(xp, xp.zeros(shape, dtype=bool))
    cond = conditions(xp, world, off, off)
    perf = performance(xp, world, cond, *_split(allocation), params.oversubscription_overhead,
                       params.oversubscription_basis)
    obs, measured = observe(xp, allocation, world, cond, perf, normals, params.measurement_noise)
    state = PipelineState(
        world=world,
        allocation=allocation,
        time=_compact_leaf(xp, xp.zeros(shape, dtype=xp.int32)),
        neighbour_on=off,
        observation=obs,
    )
    return state, step_info(xp, state, cond, perf, measured, off)


def transition(xp, params: PipelineParams, state: PipelineState, action, uniforms, normals):
    """One tuning interval: apply the action, update the neighbour, run and measure.

    Args:
        xp: Array namespace.
        params: Environment params.
        state: Current state.
        action: See :func:`apply_action`.
        uniforms: ``(..., STEP_UNIFORMS)`` uniforms (the neighbour chain).
        normals: ``(..., MEASUREMENT_NORMALS)`` standard normals (measurement noise).

    Returns:
        ``(state, reward, terminated, info)``. ``terminated`` is the OOM crash (reward
        ``-oom_penalty``); truncation at ``params.max_episode_steps`` is the caller's (it reads
        ``state.time``).
    """
    world = state.world
    allocation = apply_action(xp, params, state.allocation, action)
    time = state.time + 1
    m = math_namespace(xp, time)
    u = model.entry(uniforms, 0)
    # Two-state Markov chain: an active neighbour stays with 1 - p_off, an idle one starts with p_on.
    neighbour_on = m.where(state.neighbour_on, u >= world.neighbour_p_off, u < world.neighbour_p_on)
    after_change = time > params.change_step
    cond = conditions(xp, world, after_change, neighbour_on)
    perf = performance(xp, world, cond, *_split(allocation), params.oversubscription_overhead,
                       params.oversubscription_basis)
    obs, measured = observe(xp, allocation, world, cond, perf, normals, params.measurement_noise)
    reward = m.where(perf.oom, -params.oom_penalty, measured * params.reward_scale)
    new_state = PipelineState(world, allocation, time, neighbour_on, obs)
    return new_state, reward, perf.oom, step_info(xp, new_state, cond, perf, measured, after_change)


def step_info(xp, state: PipelineState, cond: Conditions, perf: Performance, measured, after_change) -> dict:
    """The ``info`` of an interval: true and measured throughput, memory, conditions, bottleneck,
    and two profiler facts of the episode's world a live monitor measures and tuners may use.

    Keys: ``throughput`` (true, samples/s), ``measured_throughput``, ``memory_gib``,
    ``memory_cap_gib``, ``available_cores``, ``oom``, ``after_change``, ``neighbour_on``,
    ``bottleneck_stage`` (int32 stage index), ``trainer_rate`` (samples/s), ``element_gib``
    (``(..., 6)`` float32 buffered sample size per stage, GiB; tf.data's RAM model uses it) and
    ``shuffle_buffer`` (elements). One environment's values are Python numbers (and a fresh
    float32 array for ``element_gib``).
    """
    m = math_namespace(xp, perf.trainer_rate)
    world = state.world
    return {
        "throughput": perf.throughput,
        "measured_throughput": measured,
        "memory_gib": perf.memory_gib,
        "memory_cap_gib": cond.memory_cap_gib,
        "available_cores": cond.available_cores,
        "oom": perf.oom,
        "after_change": after_change,
        "neighbour_on": state.neighbour_on,
        "bottleneck_stage": _argmin(m, list(perf.capacities)),
        "trainer_rate": perf.trainer_rate,
        # NumPy: a copy, so that the info never shares memory with the state
        "element_gib": np.array(world.element_gib, dtype=np.float32) if xp is np else world.element_gib,
        "shuffle_buffer": world.shuffle_buffer,
    }
