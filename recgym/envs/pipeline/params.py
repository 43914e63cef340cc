"""Parameters of RecGym-Pipeline-v0: the measured workload profile, the scenario and the knobs.

Two frozen dataclasses hold every independent input:

* :class:`PipelineProfile` — what a profiler measures on one trainer machine: CPU seconds per
  sample of each stage, its serial (Amdahl) fraction, memory per worker and per buffered element,
  the storage bandwidth, the trainer's per-batch cost and the machine's core budget and memory.
  A live run fills one with :meth:`PipelineProfile.from_measurements`.
* :class:`PipelineParams` — the environment: a profile, the scenario (what changes during an
  episode and how much each seed's world varies), the action space limits, noise, reward scale and
  horizon. Build a named scenario with :func:`make_params`.

Units: time in seconds, memory in GiB, rates in samples per second.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: Pipeline stages, in order (read -> ... -> prefetch feeds the trainer).
STAGES: tuple[str, ...] = ("read", "parse", "transform", "shuffle", "batch", "prefetch")
NUM_STAGES = len(STAGES)
#: Index of each stage in the per-stage tuples and arrays.
STAGE_INDEX: dict[str, int] = {name: i for i, name in enumerate(STAGES)}

#: Scenario names accepted by :func:`make_params` (and ``gym.make(..., scenario=...)``).
SCENARIOS: tuple[str, ...] = (
    "steady",
    "drift",
    "machine-change",
    "noisy-neighbours",
    "memory-tight",
    "random",
)
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


def _check_tuple(name: str, value, *, low: float, high: float = math.inf, low_open=False):
    if len(value) != NUM_STAGES:
        raise ValueError(f"{name} must have one value per stage {STAGES}, got {value!r}")
    for stage, v in zip(STAGES, value):
        bad = not math.isfinite(float(v)) and high != math.inf or math.isnan(float(v))
        bad = bad or (v <= low if low_open else v < low) or v > high
        if bad:
            bound = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
            raise ValueError(f"{name}[{stage!r}] must be in {bound}, got {v!r}")


def _check(name: str, value, *, low: float, high: float = math.inf, low_open=False) -> None:
    v = float(value)
    if math.isnan(v) or (v <= low if low_open else v < low) or v > high:
        bound = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
        raise ValueError(f"{name} must be in {bound}, got {value!r}")


@dataclass(frozen=True)
class PipelineProfile:
    """The measured costs of one DLRM ingestion pipeline on one trainer machine.

    Every per-stage field is a tuple with one value per stage of :data:`STAGES`. These are the
    quantities a profiler can measure on a real pipeline (time one worker per stage, read RSS per
    worker and the size of a buffered element), so a live mode calibrates the simulator by filling
    this class (see :meth:`from_measurements`).

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
        core_budget: CPU cores the pipeline may use on the machine.
        memory_gib: Host memory of the machine (GiB); exceeding it is an OOM crash.
        trainer_memory_gib: Host memory held by the trainer process itself (model, embedding
            tables, framework) that the pipeline cannot use (GiB).
        shuffle_buffer: Elements held by the shuffle stage's buffer.
        trainer_batch_seconds: Fixed seconds the trainer spends per batch (launch, all-reduce).
        trainer_sample_seconds: Trainer seconds per sample in a batch; the trainer consumes
            ``B / (trainer_batch_seconds + B * trainer_sample_seconds)`` samples/s.
        trainer_cpu_fraction: Fraction of the trainer's time spent on the pipeline's cores, in
            ``[0, 1]``: 0 for an accelerator trainer (the default), 1 for a trainer computing on the
            CPU (the live pipeline on a machine without one) — it then competes with the workers
            for the cores and oversubscription slows it too.
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

    def __post_init__(self) -> None:
        for name in ("cpu_seconds_per_sample", "serial_fraction", "worker_memory_gib", "element_kib"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        _check_tuple("cpu_seconds_per_sample", self.cpu_seconds_per_sample, low=0.0, low_open=True)
        _check_tuple("serial_fraction", self.serial_fraction, low=0.0, high=0.999)
        _check_tuple("worker_memory_gib", self.worker_memory_gib, low=0.0)
        _check_tuple("element_kib", self.element_kib, low=0.0)
        _check("batch_overhead_seconds", self.batch_overhead_seconds, low=0.0)
        _check("read_bandwidth_mib_s", self.read_bandwidth_mib_s, low=0.0, low_open=True)
        _check("record_kib", self.record_kib, low=0.0, low_open=True)
        if not isinstance(self.core_budget, int) or isinstance(self.core_budget, bool) or self.core_budget < 1:
            raise ValueError(f"core_budget must be an int >= 1, got {self.core_budget!r}")
        _check("memory_gib", self.memory_gib, low=0.0, low_open=True)
        _check("trainer_memory_gib", self.trainer_memory_gib, low=0.0)
        if self.trainer_memory_gib >= self.memory_gib:
            raise ValueError(
                f"trainer_memory_gib ({self.trainer_memory_gib!r}) must be below memory_gib "
                f"({self.memory_gib!r}): the pipeline would have no memory at all"
            )
        if not isinstance(self.shuffle_buffer, int) or self.shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be an int >= 0, got {self.shuffle_buffer!r}")
        _check("trainer_batch_seconds", self.trainer_batch_seconds, low=0.0)
        _check("trainer_sample_seconds", self.trainer_sample_seconds, low=0.0, low_open=True)
        _check("trainer_cpu_fraction", self.trainer_cpu_fraction, low=0.0, high=1.0)

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
        **fields,
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
        return dataclasses.replace(base, cpu_seconds_per_sample=tuple(costs), **fields)


@dataclass(frozen=True)
class RandomRanges:
    """Ranges the ``random`` scenario draws each episode's world from (uniform or log-uniform).

    Each ``(low, high)`` pair is inclusive; ``*_log`` ranges are sampled log-uniformly. Per-stage
    CPU costs are drawn around the profile's value, the others absolutely.

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
            low, high = getattr(self, f.name)
            if not (math.isfinite(low) and math.isfinite(high)) or low > high:
                raise ValueError(f"RandomRanges.{f.name} must be a finite (low, high) with low <= high, got {(low, high)!r}")
            if f.name.endswith("_log") and low <= 0:
                raise ValueError(f"RandomRanges.{f.name} is log-uniform and needs low > 0, got {(low, high)!r}")
        if self.core_budget[0] < 1:
            raise ValueError(f"RandomRanges.core_budget must start at >= 1, got {self.core_budget!r}")
        if not 0.0 <= self.serial_fraction[0] <= self.serial_fraction[1] < 1.0:
            raise ValueError(f"RandomRanges.serial_fraction must lie in [0, 1), got {self.serial_fraction!r}")
        if not 0.0 < self.trainer_memory_fraction[0] <= self.trainer_memory_fraction[1] < 1.0:
            raise ValueError(
                f"RandomRanges.trainer_memory_fraction must lie in (0, 1), got {self.trainer_memory_fraction!r}"
            )


@dataclass(frozen=True)
class PipelineParams:
    """Everything that defines one RecGym-Pipeline-v0 environment (frozen, hashable, jit-static).

    Registered as a JAX pytree with no leaves: every field is static (it shapes the spaces or is a
    scenario constant), so ``jit`` specialises on the params and never retraces within one env.

    Attributes:
        scenario: Name of the scenario these params were built for (see :data:`SCENARIOS`).
        action_mode: ``"increment"`` (Discrete, InTune-style) or ``"absolute"`` (MultiDiscrete).
        profile: The workload and machine (the world before per-seed jitter and events).
        max_episode_steps: Steps (tuning intervals) per episode; the episode is truncated after
            it (the registered id uses the default, 100).
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
        randomize: Draw the whole world from ``random_ranges`` at reset (the ``random`` scenario).
        random_ranges: Ranges used when ``randomize`` is set.
        max_cores_per_stage: Most workers a stage may be given (the absolute action's upper bound).
        min_batch_log2: Smallest batch size is ``2 ** min_batch_log2``.
        max_batch_log2: Largest batch size is ``2 ** max_batch_log2``.
        max_prefetch: Largest prefetch depth (batches buffered for the trainer); the least is 0.
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
            The live pipeline's calibrated profiles use ``"demand"``.
    """

    scenario: str = "steady"
    action_mode: str = "increment"
    profile: PipelineProfile = field(default_factory=PipelineProfile)
    max_episode_steps: int = 100
    change_step: int = 50
    event_cost_factor: tuple[float, ...] = (1.0,) * NUM_STAGES
    event_core_factor: float = 1.0
    event_memory_factor: float = 1.0
    neighbour_cores: float = 0.0
    neighbour_p_on: float = 0.0
    neighbour_p_off: float = 1.0
    cost_jitter: float = 0.2
    randomize: bool = False
    random_ranges: RandomRanges = field(default_factory=RandomRanges)
    max_cores_per_stage: int = 32
    min_batch_log2: int = 6
    max_batch_log2: int = 13
    max_prefetch: int = 16
    initial_batch_log2: int = 8
    initial_prefetch: int = 1
    measurement_noise: float = 0.05
    reward_scale: float = 1e-3
    oom_penalty: float = 100.0
    oversubscription_overhead: float = 0.1
    oversubscription_basis: str = "allocated"

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {SCENARIOS}, got {self.scenario!r}")
        if self.action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode must be one of {ACTION_MODES}, got {self.action_mode!r}")
        if not isinstance(self.profile, PipelineProfile):
            raise ValueError(f"profile must be a PipelineProfile, got {type(self.profile).__name__}")
        if not isinstance(self.random_ranges, RandomRanges):
            raise ValueError(f"random_ranges must be a RandomRanges, got {type(self.random_ranges).__name__}")
        for name in ("max_episode_steps", "change_step", "max_cores_per_stage", "min_batch_log2",
                     "max_batch_log2", "max_prefetch", "initial_batch_log2", "initial_prefetch"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be an int, got {value!r}")
        if self.max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {self.max_episode_steps!r}")
        if self.change_step < 0:
            raise ValueError(f"change_step must be >= 0, got {self.change_step!r}")
        object.__setattr__(self, "event_cost_factor", tuple(float(v) for v in self.event_cost_factor))
        _check_tuple("event_cost_factor", self.event_cost_factor, low=0.0, low_open=True)
        _check("event_core_factor", self.event_core_factor, low=0.0, high=1.0, low_open=True)
        _check("event_memory_factor", self.event_memory_factor, low=0.0, high=1.0, low_open=True)
        _check("neighbour_cores", self.neighbour_cores, low=0.0)
        _check("neighbour_p_on", self.neighbour_p_on, low=0.0, high=1.0)
        _check("neighbour_p_off", self.neighbour_p_off, low=0.0, high=1.0)
        _check("cost_jitter", self.cost_jitter, low=0.0, high=3.0)
        if self.max_cores_per_stage < 1:
            raise ValueError(f"max_cores_per_stage must be >= 1, got {self.max_cores_per_stage!r}")
        if not 0 <= self.min_batch_log2 <= self.max_batch_log2 <= 20:
            raise ValueError(
                "batch sizes need 0 <= min_batch_log2 <= max_batch_log2 <= 20, got "
                f"min_batch_log2={self.min_batch_log2!r}, max_batch_log2={self.max_batch_log2!r}"
            )
        if not self.min_batch_log2 <= self.initial_batch_log2 <= self.max_batch_log2:
            raise ValueError(
                f"initial_batch_log2 must be in [{self.min_batch_log2}, {self.max_batch_log2}], "
                f"got {self.initial_batch_log2!r}"
            )
        if self.max_prefetch < 0:
            raise ValueError(f"max_prefetch must be >= 0, got {self.max_prefetch!r}")
        if not 0 <= self.initial_prefetch <= self.max_prefetch:
            raise ValueError(f"initial_prefetch must be in [0, {self.max_prefetch}], got {self.initial_prefetch!r}")
        _check("measurement_noise", self.measurement_noise, low=0.0, high=2.0)
        _check("reward_scale", self.reward_scale, low=0.0, low_open=True)
        _check("oom_penalty", self.oom_penalty, low=0.0)
        _check("oversubscription_overhead", self.oversubscription_overhead, low=0.0)
        if self.oversubscription_basis not in ("allocated", "demand"):
            raise ValueError(
                f"oversubscription_basis must be 'allocated' or 'demand', got {self.oversubscription_basis!r}"
            )

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

    @property
    def has_event(self) -> bool:
        """Whether a mid-episode change happens within the horizon."""
        return self.change_step < self.max_episode_steps


#: ``"format"`` tag of a profile file (see :func:`save_profile`).
PROFILE_FILE_FORMAT = "recgym-pipeline-profile/1"
#: :class:`PipelineParams` fields a profile file may carry besides the profile (measured with it).
PROFILE_FILE_PARAMS: tuple[str, ...] = ("oversubscription_overhead", "oversubscription_basis")


@dataclass(frozen=True)
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


def make_params(scenario: str = "steady", action_mode: str = "increment", **overrides) -> PipelineParams:
    """Params of a named scenario, with any field overridden.

    Scenarios (every one jitters each seed's stage costs by ``cost_jitter``):

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
        raise ValueError(f"scenario must be one of {SCENARIOS}, got {scenario!r}")
    if isinstance(overrides.get("profile"), str | os.PathLike):
        loaded = load_profile(overrides["profile"])
        overrides = {**loaded.params, **overrides, "profile": loaded.profile}
    known = {f.name for f in dataclasses.fields(PipelineParams)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown PipelineParams field(s) {unknown}; known fields: {sorted(known)}")
    preset: dict = {}
    if scenario == "drift":
        preset["event_cost_factor"] = (1.0, 2.5, 0.4, 1.0, 1.0, 1.0)
    elif scenario == "machine-change":
        preset.update(event_core_factor=0.5, event_memory_factor=0.75)
    elif scenario == "noisy-neighbours":
        preset.update(neighbour_cores=6.0, neighbour_p_on=0.15, neighbour_p_off=0.3)
    elif scenario == "memory-tight":
        preset["profile"] = PipelineProfile(
            worker_memory_gib=(0.25, 0.5, 1.0, 0.25, 0.25, 0.25),
            element_kib=(12.0, 24.0, 48.0, 48.0, 48.0, 48.0),
            memory_gib=40.0,
            trainer_memory_gib=26.0,
            shuffle_buffer=50_000,
        )
        preset["initial_batch_log2"] = 10
    elif scenario == "random":
        preset.update(randomize=True, neighbour_p_on=0.15, neighbour_p_off=0.3)
    preset.update(overrides)
    return PipelineParams(scenario=scenario, action_mode=action_mode, **preset)


def _register_static_pytree(cls) -> None:
    import jax

    jax.tree_util.register_dataclass(
        cls, data_fields=[], meta_fields=[f.name for f in dataclasses.fields(cls)]
    )


_register_static_pytree(PipelineParams)
