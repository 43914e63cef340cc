"""RecGym-PipelineLive-v0: RecGym-Pipeline-v0's spaces over a real pipeline on this machine.

Each step applies the action to the :class:`~recgym.envs.pipeline.live.pipeline.LivePipeline`,
lets it run one tuning interval and returns what the monitor measured, laid out exactly as the
simulator's observation (:data:`~recgym.envs.pipeline.dynamics.OBSERVATION_NAMES`). The spaces,
the increment actions (:func:`~recgym.envs.pipeline.dynamics.apply_action`), the reward and the
``-oom_penalty`` crash are the simulator's, so every :class:`recgym.policies.Policy` that tunes
the simulator — the baseline tuners, a trained tuner — runs here unchanged. See
``docs/environments/pipeline_live.md``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import gymnasium as gym
import numpy as np
import psutil
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec

from recgym.envs.pipeline import dynamics
from recgym.envs.pipeline.live.data import DEFAULT_CHUNK_BYTES, load_source
from recgym.envs.pipeline.live.monitor import Measurement
from recgym.envs.pipeline.live.pipeline import Allocation, LivePipeline
from recgym.envs.pipeline.live.runtime import Fault
from recgym.envs.pipeline.live.stages import StageSettings, element_bytes
from recgym.envs.pipeline.live.trainer import ModelSettings, default_compilation_cache_dir
from recgym.envs.pipeline.params import (
    NUM_STAGES,
    STAGES,
    PipelineParams,
    PipelineProfile,
    load_profile,
    make_params,
)

_GIB = float(1 << 30)


def live_params(
    core_budget: int,
    memory_budget_gib: float,
    action_mode: str,
    profile: PipelineProfile | None = None,
    **overrides,
) -> PipelineParams:
    """The :class:`PipelineParams` describing a live env: its bounds, reward and the profile.

    The profile is the calibrated one when given (its core budget and memory replaced by the
    env's), else a nominal one carrying only the budgets. Spaces, the increment actions and the
    baseline tuners read these params exactly as they read the simulator's.
    """
    if profile is None:
        profile = PipelineProfile(core_budget=core_budget, memory_gib=memory_budget_gib,
                                  trainer_memory_gib=min(0.25, memory_budget_gib / 2), trainer_cpu_fraction=1.0)
    else:
        trainer = min(profile.trainer_memory_gib, memory_budget_gib * 0.999)
        profile = dataclasses.replace(profile, core_budget=core_budget, memory_gib=memory_budget_gib,
                                      trainer_memory_gib=trainer)
    return make_params("steady", action_mode, profile=profile, cost_jitter=0.0, measurement_noise=0.0, **overrides)


def observation_space(params: PipelineParams) -> spaces.Box:
    """The simulator's observation space for ``params`` (``Box(26,)`` float32, same bounds)."""
    low = np.zeros(dynamics.OBS_DIM, dtype=np.float32)
    high = np.full(dynamics.OBS_DIM, dynamics.OBS_CEILING, dtype=np.float32)
    low[dynamics.OBS_CORES] = 1.0
    high[dynamics.OBS_CORES] = params.max_cores_per_stage
    low[dynamics.OBS_BATCH] = 2.0**params.min_batch_log2
    high[dynamics.OBS_BATCH] = 2.0**params.max_batch_log2
    high[dynamics.OBS_PREFETCH] = params.max_prefetch
    high[dynamics.OBS_IDLE] = 1.0
    low[dynamics.OBS_AVAILABLE] = 1.0
    low[dynamics.OBS_BUDGET] = 1.0
    return spaces.Box(low=low, high=high, dtype=np.float32)


def action_space(params: PipelineParams) -> spaces.Space:
    """``Discrete(17)`` (increment) or ``MultiDiscrete([cmax]*6 + [n_batch, max_prefetch + 1])``."""
    if params.action_mode == "increment":
        return spaces.Discrete(params.num_increment_actions)
    nvec = [params.max_cores_per_stage] * NUM_STAGES + [params.num_batch_sizes, params.max_prefetch + 1]
    return spaces.MultiDiscrete(np.asarray(nvec, dtype=np.int64))


def check_action(params: PipelineParams, action) -> Any:
    """Validate an action as the simulator does; the ``ValueError`` names the entry, value and range."""
    arr = np.asarray(action)
    if not np.issubdtype(arr.dtype, np.integer):
        if not (np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
            raise ValueError(f"actions must be integers, got {action!r} (dtype {arr.dtype})")
        arr = arr.astype(np.int64)
    if params.action_mode == "increment":
        n = params.num_increment_actions
        if arr.shape != ():
            raise ValueError(f"an increment action is one integer in [0, {n}), got shape {arr.shape}")
        if not 0 <= int(arr) < n:
            raise ValueError(f"increment action must be in [0, {n}) ({', '.join(dynamics.INCREMENT_ACTION_NAMES)}), "
                             f"got {int(arr)}")
        return int(arr)
    if arr.shape != (NUM_STAGES + 2,):
        raise ValueError(f"an absolute action has {NUM_STAGES + 2} entries (cores-1 per stage, batch index, "
                         f"prefetch), got shape {arr.shape}")
    nvec = action_space(params).nvec
    names = [f"cores[{s}] - 1" for s in STAGES] + ["batch-size index", "prefetch"]
    for j, (value, n) in enumerate(zip(arr.tolist(), nvec.tolist())):
        if not 0 <= value < n:
            raise ValueError(f"absolute action entry {j} ({names[j]}) must be in [0, {n}), got {value}")
    return arr


def _check_number(name: str, value, low: float, high: float = math.inf, integer: bool = False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, int | np.integer if integer else int | float | np.number)
    if not ok or not math.isfinite(float(value)) or not low <= float(value) <= high:
        kind = "an int" if integer else "a number"
        raise ValueError(f"{name} must be {kind} in [{low:g}, {high:g}], got {value!r}")


class LivePipelineEnv(gym.Env):
    """RecGym-PipelineLive-v0: tune a real DLRM ingestion pipeline over MovieLens on this machine.

    **Description.** The pipeline of ``docs/environments/pipeline_live.md`` runs in worker
    processes on ``core_budget`` CPUs (read -> parse -> transform -> shuffle -> batch -> prefetch)
    and feeds a trainer process taking real training steps of a small DLRM. One step applies the
    action, runs one interval of ``interval_s`` seconds and reports what the monitor measured.

    **Action Space** and **Observation Space**: those of RecGym-Pipeline-v0 for the same bounds
    (``Discrete(17)`` increments or ``MultiDiscrete`` absolute allocations; ``Box(26,)``). Live
    readings: ``rate_<stage>`` is the stage's measured capacity (its workers times the samples one
    worker processes per busy second), ``utilisation_<stage>`` the simulator's demand/capacity
    ratio of those capacities, ``memory_used_gib`` the peak PSS of the pipeline's processes over
    the interval, ``available_cores`` the budget less the cores other processes kept busy.

    **Rewards.** ``reward_scale`` x measured throughput (thousands of samples/s by default);
    ``-oom_penalty`` when the pipeline's memory goes over ``memory_budget_gib``.

    **Starting State.** One worker per stage, batch ``2**initial_batch_log2``, prefetch
    ``initial_prefetch``; the reset observation measures it over one interval. The first reset
    starts the processes (seconds: the trainer compiles one step per batch size).

    **Episode End.** Termination: memory over the budget (the pipeline is torn down; the next
    reset starts it again). Truncation: ``max_episode_steps`` steps.

    **Arguments.** See ``__init__``. Live measurements are not reproducible by seed; ``seed``
    fixes the data order, the negative samples and the model's initialisation.

    Args:
        dataset: MovieLens name or path (resolved by :mod:`recgym.datasets`).
        core_budget: CPUs the pipeline may use (it is pinned to them); default: all this process may.
        memory_budget_gib: Memory the pipeline's processes may hold (PSS, GiB).
        interval_s: Seconds one step runs and measures.
        action_mode: ``"increment"`` or ``"absolute"``.
        profile: A calibrated profile (a path written by ``python -m
            recgym.envs.pipeline.calibrate`` or a :class:`PipelineProfile`): the simulator of this
            machine. With one, ``info`` carries the simulator's ``optimum``, ``optimal_action``,
            ``efficiency`` and ``predicted_throughput``, and :attr:`params` its profile.
        max_cores_per_stage: Most workers a stage may have.
        min_batch_log2, max_batch_log2: Batch sizes are ``2**k`` for ``k`` in this range.
        max_prefetch: Deepest prefetch buffer.
        initial_batch_log2, initial_prefetch: Batch size and prefetch depth at reset.
        max_episode_steps: Steps before truncation.
        reward_scale, oom_penalty: As in RecGym-Pipeline-v0.
        settle_s: After a change of allocation, seconds run (and watched) before the interval is
            measured, so new workers are up; 0 measures the transition too.
        stage_timeout_s: Longest a worker may spend on one element, or the trainer wait for data,
            before the step raises :class:`~recgym.envs.pipeline.live.pipeline.StageHangError`.
        start_timeout_s: Longest the processes may take to start.
        poll_s: How often the monitor checks health and memory within an interval.
        negatives, shuffle_buffer, chunk_bytes, hash_buckets: What the stages compute.
        model: The trainer's model.
        seed: Seed of the data order, the negatives, the shuffle and the model.
        data_home, download: As :func:`recgym.datasets.load_movielens`.
        fault: A fault to inject into the workers (tests of the failure handling).
        render_mode: Unused.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        dataset: str | os.PathLike = "ml-latest-small",
        *,
        core_budget: int | None = None,
        memory_budget_gib: float = 2.0,
        interval_s: float = 0.5,
        action_mode: str = "increment",
        profile: str | os.PathLike | PipelineProfile | None = None,
        max_cores_per_stage: int = 4,
        min_batch_log2: int = 6,
        max_batch_log2: int = 12,
        max_prefetch: int = 8,
        initial_batch_log2: int = 8,
        initial_prefetch: int = 1,
        max_episode_steps: int = 100,
        reward_scale: float = 1e-3,
        oom_penalty: float = 100.0,
        settle_s: float = 0.1,
        stage_timeout_s: float = 10.0,
        start_timeout_s: float = 180.0,
        poll_s: float = 0.1,
        negatives: int = 2,
        shuffle_buffer: int = 8192,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        hash_buckets: int = 1 << 14,
        model: ModelSettings | None = None,
        seed: int = 0,
        data_home: str | os.PathLike | None = None,
        download: bool = True,
        fault: Fault | None = None,
        render_mode: str | None = None,
    ):
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
        if core_budget is None:
            core_budget = len(cpus)
        _check_number("core_budget", core_budget, 1, len(cpus), integer=True)
        machine_gib = psutil.virtual_memory().total / _GIB
        _check_number("memory_budget_gib", memory_budget_gib, 1e-3, 0.9 * machine_gib)
        _check_number("interval_s", interval_s, 1e-3, 3600.0)
        _check_number("settle_s", settle_s, 0.0, 3600.0)
        _check_number("max_episode_steps", max_episode_steps, 1, math.inf, integer=True)
        if render_mode is not None:
            raise ValueError(f"RecGym-PipelineLive-v0 has no render modes, got render_mode={render_mode!r}")
        if isinstance(profile, str | os.PathLike):
            loaded = load_profile(profile)
            profile, measured = loaded.profile, loaded.params
        else:
            measured = {}
        if profile is not None and not isinstance(profile, PipelineProfile):
            raise ValueError(f"profile must be a path, a PipelineProfile or None, got {type(profile).__name__}")
        self.calibrated = profile is not None
        self.params = live_params(
            int(core_budget), float(memory_budget_gib), action_mode, profile,
            max_cores_per_stage=max_cores_per_stage, min_batch_log2=min_batch_log2,
            max_batch_log2=max_batch_log2, max_prefetch=max_prefetch, initial_batch_log2=initial_batch_log2,
            initial_prefetch=initial_prefetch, max_episode_steps=max_episode_steps, reward_scale=reward_scale,
            oom_penalty=oom_penalty, **(measured or {"oversubscription_basis": "demand", "oversubscription_overhead": 0.0}),
        )
        self.interval_s = float(interval_s)
        self.settle_s = float(settle_s)
        self.stage_settings = StageSettings(negatives=negatives, hash_buckets=hash_buckets,
                                            shuffle_buffer=shuffle_buffer, seed=seed)
        self.source = load_source(dataset, data_home=data_home, download=download, chunk_bytes=chunk_bytes)
        self.element_gib = np.asarray(element_bytes(self.source, self.stage_settings), dtype=np.float32) / _GIB
        self.pipeline = LivePipeline(
            self.source,
            stage_settings=self.stage_settings,
            model_settings=model or ModelSettings(seed=seed),
            batch_sizes=self.params.batch_sizes,
            max_workers_per_stage=self.params.max_cores_per_stage,
            memory_budget_gib=float(memory_budget_gib),
            stage_timeout_s=stage_timeout_s,
            start_timeout_s=start_timeout_s,
            poll_s=poll_s,
            cpus=tuple(cpus[: int(core_budget)]),
            compilation_cache_dir=default_compilation_cache_dir(),
            fault=fault,
        )
        self.observation_space = observation_space(self.params)
        self.action_space = action_space(self.params)
        self._allocation: tuple[int, ...] | None = None
        self._last_capacity = np.full(NUM_STAGES, np.nan)
        self._time = 0
        self._crashed = False

    @property
    def spec(self) -> EnvSpec | None:
        """The registration's spec, with ``max_episode_steps`` = the env's own time limit.

        The registration adds no ``TimeLimit`` (the env truncates itself, as every recgym env does),
        so the spec ``gym.make`` attaches reports the ``max_episode_steps`` the env was built with.
        """
        return self.__dict__.get("_spec")

    @spec.setter
    def spec(self, spec: EnvSpec | None) -> None:
        limit = int(self.params.max_episode_steps)
        if spec is not None and spec.max_episode_steps != limit:
            spec = dataclasses.replace(spec, max_episode_steps=limit)
        self._spec = spec

    # -- gymnasium API -----------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start (or restart) the pipeline at the starting allocation and measure one interval."""
        super().reset(seed=seed)
        if options:
            raise ValueError(f"RecGym-PipelineLive-v0 takes no reset options, got {sorted(options)}")
        p = self.params
        self._allocation = (1,) * NUM_STAGES + (p.initial_batch_log2, p.initial_prefetch)
        allocation = self._as_allocation(self._allocation)
        if self.pipeline.running:
            self.pipeline.apply(allocation)
            self._settle()
        else:
            self.pipeline.start(allocation)
        self._time = 0
        self._crashed = False
        measurement = self.pipeline.run_interval(self.interval_s)
        obs, info = self._observe(measurement)
        return obs, info

    def step(self, action):
        """Apply ``action``, run one interval, report the measurement (see the class docstring)."""
        if self._allocation is None or self._crashed:
            raise RuntimeError("call reset() first (the episode ended or never started)")
        checked = check_action(self.params, action)
        new = dynamics.apply_action(np, self.params, self._allocation, checked)
        if new != self._allocation:
            self._allocation = new
            self.pipeline.apply(self._as_allocation(new))
            measurement = self._settle()
        else:
            measurement = None
        if measurement is None or not measurement.oom:
            measurement = self.pipeline.run_interval(self.interval_s)
        self._time += 1
        obs, info = self._observe(measurement)
        terminated = bool(measurement.oom)
        if terminated:
            reward = -float(self.params.oom_penalty)
            self._crashed = True
        else:
            reward = float(measurement.throughput * self.params.reward_scale)
        truncated = (not terminated) and self._time >= self.params.max_episode_steps
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        """Stop every process of the pipeline."""
        self.pipeline.close()
        super().close()

    # -- helpers -----------------------------------------------------------------------------------

    def _settle(self) -> Measurement | None:
        """Run (and watch) ``settle_s`` after a change; returns that run's measurement (OOM counts)."""
        if self.settle_s <= 0:
            return None
        return self.pipeline.run_interval(self.settle_s)

    @staticmethod
    def _as_allocation(entries: tuple[int, ...]) -> Allocation:
        return Allocation(tuple(entries[:NUM_STAGES]), 2 ** int(entries[NUM_STAGES]), int(entries[NUM_STAGES + 1]))

    def _observe(self, m: Measurement) -> tuple[np.ndarray, dict[str, Any]]:
        p = self.params
        known = np.isfinite(m.stage_capacity)
        self._last_capacity = np.where(known, m.stage_capacity, self._last_capacity)
        # A stage that did no work this interval reports its last known capacity (else its rate).
        capacity = np.where(np.isfinite(self._last_capacity), self._last_capacity, m.stage_rate)
        trainer_rate = m.trainer_rate if math.isfinite(m.trainer_rate) else m.throughput
        available = float(np.clip(p.profile.core_budget - m.other_cores, 1.0, p.profile.core_budget))
        alive = 0.0 if m.oom else 1.0
        rates = [float(c) for c in capacity]
        lowest, second = sorted([*rates, trainer_rate])[:2]
        utilisation = [(lowest if c > lowest else second) / c * alive if c > 0 else 0.0 for c in rates]
        allocation = self._allocation
        values = (
            list(allocation[:NUM_STAGES])
            + [c * dynamics.RATE_UNIT * alive for c in rates]
            + utilisation
            + [
                2.0 ** allocation[NUM_STAGES],
                allocation[NUM_STAGES + 1],
                m.throughput * dynamics.RATE_UNIT * alive,
                m.trainer_idle_fraction,
                m.memory_gib,
                p.profile.memory_gib,
                available,
                p.profile.core_budget,
            ]
        )
        obs = np.clip(np.asarray(values, dtype=np.float32), self.observation_space.low, self.observation_space.high)
        info: dict[str, Any] = {
            "throughput": m.throughput * alive,
            "measured_throughput": m.throughput * alive,
            "memory_gib": m.memory_gib,
            "memory_cap_gib": p.profile.memory_gib,
            "available_cores": available,
            "oom": bool(m.oom),
            "after_change": False,
            "neighbour_on": bool(available < p.profile.core_budget - 0.5),
            "bottleneck_stage": int(np.argmin(rates)),
            "trainer_rate": trainer_rate,
            "element_gib": self.element_gib.copy(),
            "shuffle_buffer": np.float32(self.stage_settings.shuffle_buffer),
            "stage_rate": m.stage_rate.copy(),
            "stage_busy_fraction": m.stage_busy_fraction.copy(),
            "stage_cpu_seconds": m.stage_cpu_seconds.copy(),
            "pipeline_cores": m.pipeline_cores,
            "other_cores": m.other_cores,
            "interval_s": m.seconds,
            "loss": m.loss,
        }
        if self.calibrated:
            info.update(self._simulated(available, m))
        return obs, info

    def _simulated(self, available: float, m: Measurement) -> dict[str, Any]:
        """What the calibrated simulator says of this interval's conditions and allocation."""
        from recgym.envs.pipeline.calibrate import predict, simulated_optimum

        predicted = predict(self.params, self._as_allocation(self._allocation), available)
        best, optimum = simulated_optimum(self.params, available)
        throughput = 0.0 if m.oom else m.throughput
        p = self.params
        return {
            "predicted_throughput": float(predicted.throughput),
            "predicted_memory_gib": float(predicted.memory_gib),
            "optimum": optimum,
            "efficiency": throughput / optimum if optimum > 0 else 0.0,
            "optimal_action": np.asarray(
                [c - 1 for c in best.cores] + [int(math.log2(best.batch_size)) - p.min_batch_log2, best.prefetch],
                dtype=np.int64,
            ),
        }
