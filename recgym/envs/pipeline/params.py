"""Parameters of RecGym-Pipeline-v0: the measured workload profile, the scenario and the knobs.

Three frozen pytree dataclasses (``flax.struct``) hold every independent input:

* :class:`PipelineProfile` — what a profiler measures on one trainer machine: CPU seconds per
  sample of each stage, its serial (Amdahl) fraction, memory per worker and per buffered element,
  the storage bandwidth, the trainer's per-batch cost and the machine's core budget and memory.
  A live run fills one with :meth:`PipelineProfile.from_measurements`.
* :class:`RandomRanges` — the ranges the ``random`` scenario draws each episode's world from.
* :class:`PipelineParams` — the environment: a profile, the scenario (what changes during an
  episode and how much each seed's world varies), the action space limits, noise, reward scale and
  horizon. Build a named scenario of :data:`SCENARIOS` with :func:`make_params`.

Coefficients are pytree leaves: changing one, or switching between the named scenarios, does not
recompile a jitted core, and params of several scenarios stack into one batch for ``jax.vmap``
(``jax.tree.map(lambda *x: jnp.stack(x), p1, p2)``). Static fields are only those that decide
shapes or Python control flow: the action mode and bounds, the horizon and ``randomize``.

Units: time in seconds, memory in GiB, rates in samples per second.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import struct

from recgym.core import finite, is_traced, require
from recgym.envs.pipeline.model import OVERSUBSCRIPTION_BASES

#: Pipeline stages, in order (read -> ... -> prefetch feeds the trainer).
STAGES: tuple[str, ...] = ("read", "parse", "transform", "shuffle", "batch", "prefetch")
NUM_STAGES = len(STAGES)
#: Index of each stage in the per-stage tuples and arrays.
STAGE_INDEX: dict[str, int] = {name: i for i, name in enumerate(STAGES)}

#: Action modes: InTune-style increments (``Discrete``) or full allocations (``MultiDiscrete``).
ACTION_MODES: tuple[str, ...] = ("increment", "absolute")

#: Scenario seeds reserved for evaluation; train tuners on seeds below ``HELD_OUT_SEED_START``.
HELD_OUT_SEED_START = 1_000_000


def held_out_seeds(n: int) -> list[int]:
    """The first ``n`` evaluation seeds (never use them for training or tuning)."""
    if n < 1:
        raise ValueError(f"held_out_seeds: n must be >= 1, got {n!r}")
    return [HELD_OUT_SEED_START + i for i in range(n)]


_GiB_PER_KiB = 1.0 / (1024.0 * 1024.0)


# ----------------------------------------------------------------------------- validation
def _is_concrete(tree: Any) -> bool:
    """Whether every leaf of ``tree`` has a known value: not a tracer (the dataclass is rebuilt
    with tracers inside ``jit`` and ``vmap``) nor a ``jax.ShapeDtypeStruct`` placeholder.

    Cross-field checks run only then; single-field checks go through :func:`require`, which skips
    traced values by itself.
    """
    return not (is_traced(tree) or any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree_util.tree_leaves(tree)))


def _as_float(value: Any) -> Any:
    """A Python or NumPy number as a Python float; arrays and tracers unchanged.

    Leaves of one Python type keep one abstract value under ``jit``: ``0`` and ``0.0`` would be
    traced as int32 and float32, and compile twice.
    """
    return float(value) if isinstance(value, numbers.Real) else value


def _as_int(value: Any) -> Any:
    """A NumPy integer as a Python int; anything else unchanged (validation names a non-integer)."""
    return int(value) if isinstance(value, np.integer) else value


def _as_stage_tuple(value: Any) -> Any:
    """Per-stage values as a tuple of one leaf per stage; Python and NumPy numbers become floats.

    A tuple of arrays or tracers (stacked or traced params) stays as it is.
    """
    if isinstance(value, tuple):
        return tuple(_as_float(v) for v in value)
    if not is_traced(value) and np.ndim(value) == 1:
        return tuple(float(v) for v in np.asarray(value, dtype=np.float64))
    return value


def _is_int(value: Any) -> bool:
    """An integer scalar or an integer array (stacked params), never a bool."""
    return np.asarray(value).dtype.kind in "iu"


def _require_in(field: str, value: Any, low: float, high: float = math.inf, low_open: bool = False) -> None:
    """``value`` (every element of it) in ``[low, high]`` (``(low, high]`` with ``low_open``), not NaN."""
    bound = f"({low}, {high}]" if low_open else f"[{low}, {high}]"

    def within(v: Any) -> bool:
        x = np.asarray(v, dtype=np.float64)
        above = x > low if low_open else x >= low
        return bool(np.all(above & (x <= high)))  # NaN fails both comparisons

    require(within, field, value, f"in {bound}")


def _require_per_stage(field: str, values: Any, low: float, high: float = math.inf, low_open: bool = False) -> None:
    """One value per stage, each in the range (the message names the stage)."""
    require(lambda v: isinstance(v, tuple) and len(v) == NUM_STAGES, field, values,
            f"a tuple of one value per stage {STAGES}")
    for stage, value in zip(STAGES, values):
        _require_in(f"{field}[{stage!r}]", value, low, high, low_open)


def _require_int(field: str, value: Any, minimum: int) -> None:
    require(_is_int, field, value, "an int")
    require(lambda v: np.all(np.asarray(v) >= minimum), field, value, f">= {minimum}")


def _require_static_int(field: str, value: Any, minimum: int) -> None:
    """A static field: a Python int (it decides shapes, so it is never an array)."""
    require(lambda v: isinstance(v, int) and not isinstance(v, bool), field, value, "an int")
    require(lambda v: v >= minimum, field, value, f">= {minimum}")


# ----------------------------------------------------------------------------- profile
_PROFILE_STAGE_FIELDS = ("cpu_seconds_per_sample", "serial_fraction", "worker_memory_gib", "element_kib")
_PROFILE_FLOAT_FIELDS = ("batch_overhead_seconds", "read_bandwidth_mib_s", "record_kib", "memory_gib",
                         "trainer_memory_gib", "trainer_batch_seconds", "trainer_sample_seconds", "trainer_cpu_fraction",
                         "core_efficiency")
_PROFILE_INT_FIELDS = ("core_budget", "shuffle_buffer")


@struct.dataclass
class PipelineProfile:
    """The measured costs of one DLRM ingestion pipeline on one trainer machine.

    Every per-stage field is a tuple with one value per stage of :data:`STAGES`. These are the
    quantities a profiler can measure on a real pipeline (time one worker per stage, read RSS per
    worker and the size of a buffered element), so a live mode calibrates the simulator by filling
    this class (see :meth:`from_measurements`). Every field is a pytree leaf.

    Attributes:
        cpu_seconds_per_sample: CPU seconds one worker spends per sample in each stage.
        serial_fraction: Amdahl serial fraction ``f`` of each stage in ``[0, 1)``: ``c`` workers run
            ``1 / (f + (1 - f) / c)`` times as fast as one.
        worker_memory_gib: Resident memory of one worker of each stage (GiB).
        element_kib: Size of one sample as buffered at each stage's output (KiB).
        batch_overhead_seconds: Per-batch CPU seconds of the batch stage (collation), amortised over
            the batch size: the batch stage costs ``cpu + overhead / batch_size`` per sample.
        read_bandwidth_mib_s: Storage read bandwidth (MiB/s); caps the read stage at
            ``bandwidth / record_kib`` samples/s however many cores it has (I/O bound).
        record_kib: On-disk size of one sample (KiB).
        core_budget: CPU cores the pipeline may use on the machine (an int).
        memory_gib: Host memory of the machine (GiB); exceeding it is an OOM crash.
        trainer_memory_gib: Host memory held by the trainer process itself (model, embedding
            tables, framework) that the pipeline cannot use (GiB).
        shuffle_buffer: Elements held by the shuffle stage's buffer (an int).
        trainer_batch_seconds: Fixed seconds the trainer spends per batch (launch, all-reduce).
        trainer_sample_seconds: Trainer seconds per sample in a batch; the trainer consumes
            ``B / (trainer_batch_seconds + B * trainer_sample_seconds)`` samples/s.
        trainer_cpu_fraction: Fraction of the trainer's time spent on the pipeline's cores, in
            ``[0, 1]``: 0 for an accelerator trainer (the default), 1 for a trainer computing on the
            CPU (the live pipeline on a machine without one) — it then competes with the workers
            for the cores and oversubscription slows it too.
        core_efficiency: Fraction of the machine's cores the pipeline's processes keep busy when
            they have more work than cores and the cores to themselves, in ``(0, 1]``: 1 (the
            default) for a work-conserving pipeline; below 1 when hand-offs between worker
            processes leave cores idle although work is queued (the live pipeline on two quiet
            cores keeps about three quarters of them busy). The model runs the pipeline on
            ``min(core_efficiency * core_budget, available_cores)`` cores: other programs first
            fill the idle gaps. :mod:`recgym.envs.pipeline.calibrate` measures it.
    """

    cpu_seconds_per_sample: tuple[float, ...] = (20e-6, 60e-6, 150e-6, 10e-6, 8e-6, 5e-6)
    serial_fraction: tuple[float, ...] = (0.02, 0.01, 0.02, 0.10, 0.05, 0.05)
    worker_memory_gib: tuple[float, ...] = (0.0625, 0.125, 0.25, 0.0625, 0.0625, 0.0625)
    element_kib: tuple[float, ...] = (2.0, 4.0, 8.0, 8.0, 8.0, 8.0)
    batch_overhead_seconds: float = 400e-6
    read_bandwidth_mib_s: float = 800.0
    record_kib: float = 2.0
    core_budget: int = 16
    memory_gib: float = 32.0
    trainer_memory_gib: float = 16.0
    shuffle_buffer: int = 100_000
    trainer_batch_seconds: float = 2e-3
    trainer_sample_seconds: float = 10e-6
    trainer_cpu_fraction: float = 0.0
    core_efficiency: float = 1.0

    def __post_init__(self) -> None:
        for name in _PROFILE_STAGE_FIELDS:
            object.__setattr__(self, name, _as_stage_tuple(getattr(self, name)))
        for name in _PROFILE_FLOAT_FIELDS:
            object.__setattr__(self, name, _as_float(getattr(self, name)))
        for name in _PROFILE_INT_FIELDS:
            object.__setattr__(self, name, _as_int(getattr(self, name)))
        if not _is_concrete(self):
            return
        _require_per_stage("cpu_seconds_per_sample", self.cpu_seconds_per_sample, low=0.0, low_open=True)
        _require_per_stage("serial_fraction", self.serial_fraction, low=0.0, high=0.999)
        _require_per_stage("worker_memory_gib", self.worker_memory_gib, low=0.0)
        _require_per_stage("element_kib", self.element_kib, low=0.0)
        _require_in("batch_overhead_seconds", self.batch_overhead_seconds, low=0.0)
        _require_in("read_bandwidth_mib_s", self.read_bandwidth_mib_s, low=0.0, low_open=True)
        _require_in("record_kib", self.record_kib, low=0.0, low_open=True)
        require(lambda v: _is_int(v) and np.all(np.asarray(v) >= 1), "core_budget", self.core_budget, "an int >= 1")
        _require_in("memory_gib", self.memory_gib, low=0.0, low_open=True)
        _require_in("trainer_memory_gib", self.trainer_memory_gib, low=0.0)
        require(lambda v: np.all(np.asarray(v) < np.asarray(self.memory_gib)), "trainer_memory_gib",
                self.trainer_memory_gib,
                f"below memory_gib ({self.memory_gib!r}): the pipeline would have no memory at all")
        require(lambda v: _is_int(v) and np.all(np.asarray(v) >= 0), "shuffle_buffer", self.shuffle_buffer, "an int >= 0")
        _require_in("trainer_batch_seconds", self.trainer_batch_seconds, low=0.0)
        _require_in("trainer_sample_seconds", self.trainer_sample_seconds, low=0.0, low_open=True)
        _require_in("trainer_cpu_fraction", self.trainer_cpu_fraction, low=0.0, high=1.0)
        _require_in("core_efficiency", self.core_efficiency, low=0.0, high=1.0, low_open=True)

    @property
    def io_samples_per_second(self) -> float:
        """The read stage's I/O ceiling (samples/s): bandwidth / record size."""
        return self.read_bandwidth_mib_s * 1024.0 / self.record_kib

    @property
    def element_gib(self) -> tuple[float, ...]:
        """Per-stage buffered element size in GiB."""
        return tuple(v * _GiB_PER_KiB for v in self.element_kib)

    @classmethod
    def from_measurements(
        cls,
        cpu_seconds_per_sample: Mapping[str, float],
        base: PipelineProfile | None = None,
        **fields: Any,
    ) -> PipelineProfile:
        """A profile calibrated from measured per-stage costs (the live mode's entry point).

        Args:
            cpu_seconds_per_sample: Measured CPU seconds per sample of one worker, by stage name
                (a subset of :data:`STAGES` is fine; the rest keep ``base``'s values).
            base: Profile supplying every value not measured (defaults to :class:`PipelineProfile`).
            **fields: Any other measured field (e.g. ``worker_memory_gib=(...)``, ``core_budget=``).

        Returns:
            The calibrated profile (validated).

        Raises:
            ValueError: On an unknown stage name or an invalid value (the message names it).
        """
        base = base or cls()
        unknown = sorted(set(cpu_seconds_per_sample) - set(STAGES))
        if unknown:
            raise ValueError(f"unknown stage name(s) {unknown}; stages are {STAGES}")
        costs = list(base.cpu_seconds_per_sample)
        for stage, seconds in cpu_seconds_per_sample.items():
            costs[STAGE_INDEX[stage]] = float(seconds)
        return base.replace(cpu_seconds_per_sample=tuple(costs), **fields)


# ----------------------------------------------------------------------------- random ranges
@struct.dataclass
class RandomRanges:
    """Ranges the ``random`` scenario draws each episode's world from (uniform or log-uniform).

    Each ``(low, high)`` pair is inclusive; ``*_log`` ranges are sampled log-uniformly. Per-stage
    CPU costs are drawn around the profile's value, the others absolutely. Every bound is a pytree
    leaf (a curriculum may vary them without recompiling).

    Attributes:
        cpu_scale_log: Multiplier on each stage's CPU cost (log-uniform, independent per stage).
        serial_fraction: Amdahl serial fraction of each stage.
        worker_memory_scale_log: Multiplier on each stage's worker memory (log-uniform).
        element_scale_log: Multiplier on the element sizes (one draw: wider or narrower rows).
        core_budget: Core budget (integer, uniform).
        memory_gib: Machine memory (GiB).
        trainer_memory_fraction: Trainer memory as a fraction of machine memory.
        read_bandwidth_mib_s_log: Storage bandwidth (MiB/s, log-uniform).
        event_cost_factor_log: Cost multiplier of the one stage that drifts at the change step.
        event_core_factor: Core-budget multiplier after the change step.
        event_memory_factor: Memory multiplier after the change step.
        neighbour_core_fraction: Fraction of the core budget a noisy neighbour takes while on.
    """

    cpu_scale_log: tuple[float, float] = (0.33, 3.0)
    serial_fraction: tuple[float, float] = (0.0, 0.15)
    worker_memory_scale_log: tuple[float, float] = (0.5, 2.0)
    element_scale_log: tuple[float, float] = (0.5, 4.0)
    core_budget: tuple[int, int] = (8, 32)
    memory_gib: tuple[float, float] = (24.0, 64.0)
    trainer_memory_fraction: tuple[float, float] = (0.3, 0.6)
    read_bandwidth_mib_s_log: tuple[float, float] = (200.0, 2000.0)
    event_cost_factor_log: tuple[float, float] = (0.4, 2.5)
    event_core_factor: tuple[float, float] = (0.5, 1.0)
    event_memory_factor: tuple[float, float] = (0.7, 1.0)
    neighbour_core_fraction: tuple[float, float] = (0.0, 0.4)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            pair = getattr(self, f.name)
            if isinstance(pair, list):
                pair = tuple(pair)
            if isinstance(pair, tuple):
                pair = tuple(_as_int(v) if f.name == "core_budget" else _as_float(v) for v in pair)
            object.__setattr__(self, f.name, pair)
        if not _is_concrete(self):
            return
        for f in dataclasses.fields(self):
            name, pair = f"RandomRanges.{f.name}", getattr(self, f.name)
            require(lambda v: isinstance(v, tuple) and len(v) == 2, name, pair, "a (low, high) pair")
            low, high = pair
            require(finite, f"{name}[0]", low, "finite")
            require(lambda v, low=low: finite(v) and np.all(np.asarray(v) >= np.asarray(low)), f"{name}[1]", high,
                    f"finite and >= the low end {low!r}")
            if f.name.endswith("_log"):
                require(lambda v: np.all(np.asarray(v) > 0), f"{name}[0]", low, "> 0 (the range is log-uniform)")
        require(lambda v: _is_int(v) and np.all(np.asarray(v) >= 1), "RandomRanges.core_budget[0]",
                self.core_budget[0], "an int >= 1")
        require(_is_int, "RandomRanges.core_budget[1]", self.core_budget[1], "an int")
        _require_in("RandomRanges.serial_fraction[0]", self.serial_fraction[0], 0.0)
        require(lambda v: np.all(np.asarray(v) < 1.0), "RandomRanges.serial_fraction[1]", self.serial_fraction[1], "< 1")
        _require_in("RandomRanges.trainer_memory_fraction[0]", self.trainer_memory_fraction[0], 0.0, low_open=True)
        require(lambda v: np.all(np.asarray(v) < 1.0), "RandomRanges.trainer_memory_fraction[1]",
                self.trainer_memory_fraction[1], "< 1")


# ----------------------------------------------------------------------------- params
_FLOAT_FIELDS = ("event_core_factor", "event_memory_factor", "neighbour_cores", "neighbour_p_on", "neighbour_p_off",
                 "cost_jitter", "measurement_noise", "reward_scale", "oom_penalty", "oversubscription_overhead")
_INT_FIELDS = ("change_step", "initial_batch_log2", "initial_prefetch")
#: The static int fields and their least value.
_STATIC_INT_FIELDS = {"max_episode_steps": 1, "max_cores_per_stage": 1, "min_batch_log2": 0, "max_batch_log2": 0,
                      "max_prefetch": 0}


@struct.dataclass
class PipelineParams:
    """Everything that defines one RecGym-Pipeline-v0 environment (a frozen pytree dataclass).

    Coefficients (every field but the static ones below) are pytree leaves: under ``jit`` they are
    traced, so a scenario or coefficient change does not recompile, and params stacked from several
    scenarios ``vmap``. Static fields (``struct.field(pytree_node=False)``) decide shapes or
    Python control flow: ``action_mode``, ``max_episode_steps``, ``randomize`` (how many uniforms
    a reset draws), ``max_cores_per_stage``, ``min_batch_log2``, ``max_batch_log2`` and
    ``max_prefetch`` (the action space).

    Attributes:
        action_mode: ``"increment"`` (Discrete, InTune-style) or ``"absolute"`` (MultiDiscrete). Static.
        profile: The workload and machine (the world before per-seed jitter and events).
        max_episode_steps: Steps (tuning intervals) per episode; the episode is truncated after
            it (the registered id uses the default, 100). Static.
        change_step: The mid-episode event happens after this many steps (steps ``change_step + 1``
            onwards run in the changed world); ``max_episode_steps`` or more means never.
        event_cost_factor: Per-stage CPU-cost multipliers after the change (``drift``).
        event_core_factor: Core-budget multiplier after the change (``machine-change``).
        event_memory_factor: Memory multiplier after the change (``machine-change``).
        neighbour_cores: Cores a noisy neighbour takes while it is on (``noisy-neighbours``).
        neighbour_p_on: Per-step probability that an idle neighbour starts (two-state Markov chain).
        neighbour_p_off: Per-step probability that an active neighbour stops.
        cost_jitter: Per-seed world variation: every stage cost is multiplied by a log-uniform factor
            in ``[exp(-j), exp(j)]`` drawn at reset, so scenario seeds are different worlds.
        randomize: Draw the whole world from ``random_ranges`` at reset (the ``random`` scenario). Static.
        random_ranges: Ranges used when ``randomize`` is set.
        max_cores_per_stage: Most workers a stage may be given (the absolute action's upper bound). Static.
        min_batch_log2: Smallest batch size is ``2 ** min_batch_log2``. Static.
        max_batch_log2: Largest batch size is ``2 ** max_batch_log2``. Static.
        max_prefetch: Largest prefetch depth (batches buffered for the trainer); the least is 0. Static.
        initial_batch_log2: Batch size at reset is ``2 ** initial_batch_log2``.
        initial_prefetch: Prefetch depth at reset.
        measurement_noise: Log-normal standard deviation of every measured rate in the observation
            and of the measured throughput that is the reward.
        reward_scale: Reward per sample/s of measured throughput (``1e-3``: thousands of samples/s).
        oom_penalty: Reward on the step that runs out of memory (the episode then terminates).
        oversubscription_overhead: Extra slowdown per oversubscribed core, ``kappa`` in
            ``A / (C + kappa (C - A))``; 0 is the proportional slowdown. On the ``"demand"`` basis:
            the relative growth of every sample's CPU time per worker beyond the core budget, per core.
        oversubscription_basis: ``"allocated"`` (every allocated worker competes for a core all the
            time: the slowdown above) or ``"demand"`` (workers block when idle, so the cores are
            shared by the CPU time the pipeline demands; see :mod:`recgym.envs.pipeline.model`).
            The live pipeline's calibrated profiles use ``"demand"``. Static (it picks the formula).
    """

    action_mode: str = struct.field(pytree_node=False, default="increment")
    profile: PipelineProfile = struct.field(default_factory=PipelineProfile)
    max_episode_steps: int = struct.field(pytree_node=False, default=100)
    change_step: int = 50
    event_cost_factor: tuple[float, ...] = (1.0,) * NUM_STAGES
    event_core_factor: float = 1.0
    event_memory_factor: float = 1.0
    neighbour_cores: float = 0.0
    neighbour_p_on: float = 0.0
    neighbour_p_off: float = 1.0
    cost_jitter: float = 0.2
    randomize: bool = struct.field(pytree_node=False, default=False)
    random_ranges: RandomRanges = struct.field(default_factory=RandomRanges)
    max_cores_per_stage: int = struct.field(pytree_node=False, default=32)
    min_batch_log2: int = struct.field(pytree_node=False, default=6)
    max_batch_log2: int = struct.field(pytree_node=False, default=13)
    max_prefetch: int = struct.field(pytree_node=False, default=16)
    initial_batch_log2: int = 8
    initial_prefetch: int = 1
    measurement_noise: float = 0.05
    reward_scale: float = 1e-3
    oom_penalty: float = 100.0
    oversubscription_overhead: float = 0.1
    oversubscription_basis: str = struct.field(pytree_node=False, default="allocated")

    def __post_init__(self) -> None:
        object.__setattr__(self, "event_cost_factor", _as_stage_tuple(self.event_cost_factor))
        for name in _FLOAT_FIELDS:
            object.__setattr__(self, name, _as_float(getattr(self, name)))
        for name in (*_INT_FIELDS, *_STATIC_INT_FIELDS):
            object.__setattr__(self, name, _as_int(getattr(self, name)))
        # Static fields are never traced: check them always (they shape the spaces).
        if self.action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode must be one of {ACTION_MODES}, got {self.action_mode!r}")
        if self.oversubscription_basis not in OVERSUBSCRIPTION_BASES:
            raise ValueError(
                f"oversubscription_basis must be one of {OVERSUBSCRIPTION_BASES}, got {self.oversubscription_basis!r}"
            )
        require(lambda v: isinstance(v, bool | np.bool_), "randomize", self.randomize, "a bool")
        for name, minimum in _STATIC_INT_FIELDS.items():
            _require_static_int(name, getattr(self, name), minimum)
        if not 0 <= self.min_batch_log2 <= self.max_batch_log2 <= 20:
            raise ValueError(
                "batch sizes need 0 <= min_batch_log2 <= max_batch_log2 <= 20, got "
                f"min_batch_log2={self.min_batch_log2!r}, max_batch_log2={self.max_batch_log2!r}"
            )
        if not _is_concrete(self):
            return
        require(lambda v: isinstance(v, PipelineProfile), "profile", self.profile, "a PipelineProfile")
        require(lambda v: isinstance(v, RandomRanges), "random_ranges", self.random_ranges, "a RandomRanges")
        _require_int("change_step", self.change_step, 0)
        _require_per_stage("event_cost_factor", self.event_cost_factor, low=0.0, low_open=True)
        _require_in("event_core_factor", self.event_core_factor, low=0.0, high=1.0, low_open=True)
        _require_in("event_memory_factor", self.event_memory_factor, low=0.0, high=1.0, low_open=True)
        _require_in("neighbour_cores", self.neighbour_cores, low=0.0)
        _require_in("neighbour_p_on", self.neighbour_p_on, low=0.0, high=1.0)
        _require_in("neighbour_p_off", self.neighbour_p_off, low=0.0, high=1.0)
        _require_in("cost_jitter", self.cost_jitter, low=0.0, high=3.0)
        require(_is_int, "initial_batch_log2", self.initial_batch_log2, "an int")
        _require_in("initial_batch_log2", self.initial_batch_log2, self.min_batch_log2, self.max_batch_log2)
        require(_is_int, "initial_prefetch", self.initial_prefetch, "an int")
        _require_in("initial_prefetch", self.initial_prefetch, 0, self.max_prefetch)
        _require_in("measurement_noise", self.measurement_noise, low=0.0, high=2.0)
        _require_in("reward_scale", self.reward_scale, low=0.0, low_open=True)
        _require_in("oom_penalty", self.oom_penalty, low=0.0)
        _require_in("oversubscription_overhead", self.oversubscription_overhead, low=0.0)

    @property
    def num_batch_sizes(self) -> int:
        """Number of batch-size choices (powers of two)."""
        return self.max_batch_log2 - self.min_batch_log2 + 1

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        """The batch-size choices, ascending."""
        return tuple(2**k for k in range(self.min_batch_log2, self.max_batch_log2 + 1))

    @property
    def num_increment_actions(self) -> int:
        """Size of the ``increment`` action space (see :mod:`recgym.envs.pipeline.dynamics`)."""
        return 2 * NUM_STAGES + 5


#: The named scenarios of :func:`make_params` (and ``gym.make(..., scenario=...)``): field
#: overrides of :class:`PipelineParams`. Every scenario jitters each seed's stage costs by
#: ``cost_jitter``; the change happens after ``change_step`` (50).
SCENARIOS: dict[str, dict[str, Any]] = {
    # the default profile (16 cores, 32 GiB, a 16 GiB trainer); nothing changes
    "steady": {},
    # the feature set changes: transform 2.5x cheaper (precomputed upstream), parse of the wider rows 2.5x dearer
    "drift": {"event_cost_factor": (1.0, 2.5, 0.4, 1.0, 1.0, 1.0)},
    # half the cores and a quarter of the memory go (the job is rescheduled onto a smaller share)
    "machine-change": {"event_core_factor": 0.5, "event_memory_factor": 0.75},
    # a co-located job switches on (p=0.15 per step) and off (p=0.3), taking 6 of the 16 cores while on
    "noisy-neighbours": {"neighbour_cores": 6.0, "neighbour_p_on": 0.15, "neighbour_p_off": 0.3},
    # 6x wider rows, 1 GiB transform workers, a 26 GiB trainer on 40 GiB: every core does not fit
    "memory-tight": {
        "profile": PipelineProfile(
            worker_memory_gib=(0.25, 0.5, 1.0, 0.25, 0.25, 0.25),
            element_kib=(12.0, 24.0, 48.0, 48.0, 48.0, 48.0),
            memory_gib=40.0,
            trainer_memory_gib=26.0,
            shuffle_buffer=50_000,
        ),
        "initial_batch_log2": 10,
    },
    # the world drawn at reset from RandomRanges, with a random change event and a neighbour of random size
    "random": {"randomize": True, "neighbour_p_on": 0.15, "neighbour_p_off": 0.3},
}

_PARAM_FIELDS = frozenset(f.name for f in dataclasses.fields(PipelineParams))


#: ``"format"`` tag of a profile file (see :func:`save_profile`).
PROFILE_FILE_FORMAT = "recgym-pipeline-profile/1"
#: :class:`PipelineParams` fields a profile file may carry besides the profile (measured with it).
PROFILE_FILE_PARAMS: tuple[str, ...] = ("oversubscription_overhead", "oversubscription_basis")


@dataclasses.dataclass(frozen=True)
class ProfileFile:
    """The contents of a profile file.

    Attributes:
        profile: The measured profile.
        params: Measured :class:`PipelineParams` fields (see :data:`PROFILE_FILE_PARAMS`).
        metadata: Free-form provenance (dataset, machine, command, raw measurements).
    """

    profile: PipelineProfile
    params: dict
    metadata: dict


def save_profile(path: str | os.PathLike, profile: PipelineProfile, params: Mapping | None = None,
                 metadata: Mapping | None = None) -> Path:
    """Write ``profile`` (and the params fields measured with it) as JSON.

    Args:
        path: File to write.
        profile: The profile.
        params: Fields of :data:`PROFILE_FILE_PARAMS`.
        metadata: JSON-serialisable provenance.

    Returns:
        The path written.
    """
    params = dict(params or {})
    unknown = sorted(set(params) - set(PROFILE_FILE_PARAMS))
    if unknown:
        raise ValueError(f"a profile file carries only the params fields {PROFILE_FILE_PARAMS}, got {unknown}")
    payload = {
        "format": PROFILE_FILE_FORMAT,
        "profile": {f.name: getattr(profile, f.name) for f in dataclasses.fields(profile)},
        "params": params,
        "metadata": dict(metadata or {}),
    }
    path = Path(path)
    path.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    return path


def load_profile(path: str | os.PathLike) -> ProfileFile:
    """Read a profile file written by :func:`save_profile` (e.g. by the calibration).

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not a profile file, or an invalid value (the message names the file and field).
    """
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not a JSON profile file ({err})") from None
    if not isinstance(payload, dict) or payload.get("format") != PROFILE_FILE_FORMAT:
        raise ValueError(f"{path}: not a {PROFILE_FILE_FORMAT!r} file (its 'format' is "
                         f"{payload.get('format') if isinstance(payload, dict) else None!r})")
    fields = {f.name: f for f in dataclasses.fields(PipelineProfile)}
    raw = payload.get("profile", {})
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ValueError(f"{path}: unknown PipelineProfile field(s) {unknown}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    params = dict(payload.get("params", {}))
    bad = sorted(set(params) - set(PROFILE_FILE_PARAMS))
    if bad:
        raise ValueError(f"{path}: a profile file carries only the params fields {PROFILE_FILE_PARAMS}, got {bad}")
    try:
        profile = PipelineProfile(**values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None
    return ProfileFile(profile=profile, params=params, metadata=dict(payload.get("metadata", {})))


def make_params(scenario: str = "steady", action_mode: str = "increment", **overrides: Any) -> PipelineParams:
    """Params of a named scenario, with any field overridden.

    Scenarios (:data:`SCENARIOS`; every one jitters each seed's stage costs by ``cost_jitter``):

    * ``steady`` — the default profile; nothing changes.
    * ``drift`` — the feature set changes at the change step: feature engineering (transform)
      gets 2.5x cheaper (features now precomputed upstream) while parsing the wider raw rows costs
      2.5x, so the bottleneck moves from transform to parse.
    * ``machine-change`` — at the change step half the cores and a quarter of the memory go
      (e.g. the job is rescheduled onto a smaller share of the machine).
    * ``noisy-neighbours`` — a co-located job switches on (p=0.15 per step) and off (p=0.3),
      taking 6 of the 16 cores while on.
    * ``memory-tight`` — wide rows (elements 6x larger), heavier workers (1 GiB per transform
      worker), a 26 GiB trainer on a 40 GiB machine: worker counts, batch size and buffers compete
      for the ~12 GiB left, and using every core does not fit.
    * ``random`` — the world is drawn at reset from :class:`RandomRanges`, including a random
      change event (one stage's cost, cores and memory) and a noisy neighbour of random size
      (switching on and off like `noisy-neighbours`).

    The scenario is not stored in the params: ``steady``, ``drift``, ``machine-change``,
    ``noisy-neighbours`` and ``memory-tight`` differ only in leaves, so one jitted core serves
    them all and their params stack for ``vmap`` (``random`` differs in the static ``randomize``).

    Args:
        scenario: One of :data:`SCENARIOS`.
        action_mode: One of :data:`ACTION_MODES`.
        **overrides: Fields of :class:`PipelineParams` to set (they win over the scenario's).
            ``profile`` may be a path to a profile file (:func:`load_profile`): its profile and
            the params fields measured with it are used (other overrides still win).

    Returns:
        Validated params.

    Raises:
        ValueError: Unknown scenario or field, or an invalid value (the message names it).
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {tuple(SCENARIOS)}, got {scenario!r}")
    if isinstance(overrides.get("profile"), str | os.PathLike):
        if not Path(overrides["profile"]).is_file():
            raise ValueError(f"profile must be a PipelineProfile, got {str(overrides['profile'])!r} "
                             "(not a PipelineProfile, nor the path of a profile file)")
        loaded = load_profile(overrides["profile"])
        overrides = {**loaded.params, **overrides, "profile": loaded.profile}
    unknown = sorted(set(overrides) - _PARAM_FIELDS)
    if unknown:
        hint = ("; track_optimum is an argument of gym.make, which then wraps the env in "
                "recgym.envs.pipeline.wrappers.PipelineOptimum") if "track_optimum" in unknown else ""
        raise ValueError(f"unknown PipelineParams field(s) {unknown}; valid fields: {sorted(_PARAM_FIELDS)}{hint}")
    return PipelineParams(action_mode=action_mode, **{**SCENARIOS[scenario], **overrides})
