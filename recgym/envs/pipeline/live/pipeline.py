"""The controller of the live pipeline: start, resize, measure one interval, tear down.

:class:`LivePipeline` owns every process of the pipeline (see :mod:`~recgym.envs.pipeline.live.runtime`)
and is the only object that changes them. It

* starts the launcher and the trainer, waits until the trainer has compiled its steps, applies the
  first :class:`Allocation` and lets data flow until the trainer has taken its first batches;
* applies an allocation: forks workers for the stages that get more, asks the surplus workers of
  the others to finish their element and stop, sets the batch size and the prefetch depth;
* measures an interval (:meth:`LivePipeline.run_interval`): it reads every worker's and the
  trainer's cumulative counters at the start and the end, and in between, every ``poll_s``, checks
  the processes' health and samples the pipeline's memory. The
  :class:`~recgym.envs.pipeline.live.monitor.Measurement` it returns
  holds per-stage rates, capacities (samples per busy second times workers) and busy fractions,
  the throughput into the trainer, the trainer's rate and idle fraction, and the peak memory;
* tears everything down on :meth:`LivePipeline.close`, on any error, on ``KeyboardInterrupt``, when
  memory goes over the budget, and (through a finaliser) when it is garbage-collected.

Memory is the proportional set size (PSS) summed over the launcher, the workers and the trainer:
each process's resident pages, with a page shared by ``n`` processes counted ``1/n`` in each, so
the pages the forked workers share with the launcher count once — the resident memory the
pipeline adds to the machine.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import signal
import time
import weakref
from dataclasses import dataclass, field

import numpy as np
import psutil

from recgym.envs.pipeline.live.data import LiveSource
from recgym.envs.pipeline.live.monitor import (
    Measurement,
    MemoryTracker,
    Snapshot,
    allowed_cpus,
    busy_cpu_seconds,
    measure,
)
from recgym.envs.pipeline.live.runtime import (
    POLL_S,
    Control,
    Fault,
    SharedState,
    SlotCounters,
    SlotState,
    launcher_main,
)
from recgym.envs.pipeline.live.stages import StageSettings
from recgym.envs.pipeline.live.trainer import ModelSettings, TrainerCounters, trainer_main
from recgym.envs.pipeline.params import NUM_STAGES, STAGES

_GIB = float(1 << 30)


class LivePipelineError(RuntimeError):
    """The live pipeline failed; it has been torn down (no process of it is left running)."""


class WorkerFailedError(LivePipelineError):
    """A worker or the trainer exited without being asked to (killed, crashed, raised)."""


class StageHangError(LivePipelineError):
    """A worker (or the trainer) spent longer than the stage timeout on one element, or no sample
    reached the trainer for that long."""


@dataclass(frozen=True)
class Allocation:
    """A configuration of the pipeline.

    Attributes:
        cores: Workers per stage, in :data:`~recgym.envs.pipeline.params.STAGES` order (each >= 1).
        batch_size: Samples per batch (>= 1).
        prefetch: Batches the prefetch buffer holds ahead of the trainer (>= 0).
    """

    cores: tuple[int, ...]
    batch_size: int
    prefetch: int

    def __post_init__(self) -> None:
        cores = tuple(self.cores)
        if len(cores) != NUM_STAGES or any(isinstance(c, bool) or not isinstance(c, int | np.integer) or c < 1 for c in cores):
            raise ValueError(f"Allocation.cores must be {NUM_STAGES} ints >= 1 (one per stage {STAGES}), got {self.cores!r}")
        object.__setattr__(self, "cores", tuple(int(c) for c in cores))
        for name, low in (("batch_size", 1), ("prefetch", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
                raise ValueError(f"Allocation.{name} must be an int >= {low}, got {value!r}")
            object.__setattr__(self, name, int(value))

    @property
    def total_workers(self) -> int:
        """Workers over all stages."""
        return sum(self.cores)


@dataclass
class _Handles:
    """The processes a pipeline started (what the finaliser tears down)."""

    launcher: multiprocessing.Process | None = None
    trainer: multiprocessing.Process | None = None
    conn: object = None
    shared: SharedState | None = None
    workers: dict = field(default_factory=dict)  # slot -> psutil.Process


def _started(process) -> bool:
    return process is not None and process.pid is not None


def _teardown(handles: _Handles) -> None:
    """Kill every process of the pipeline and reap it (safe to call twice)."""
    shared = handles.shared
    if shared is not None:
        states = shared.states()
        states[:, SlotState.STOP] = np.where(states[:, SlotState.STAGE] >= 0, 2, states[:, SlotState.STOP])
        shared.trainer_stop.value = 1
    if handles.conn is not None:
        with contextlib.suppress(OSError, ValueError):
            handles.conn.send(("shutdown",))
    if _started(handles.trainer) and handles.trainer.exitcode is None:
        handles.trainer.kill()
    # The launcher kills and reaps its workers; if it cannot, they are killed here by pid
    # (psutil checks the creation time, so a recycled pid is never hit).
    if _started(handles.launcher):
        handles.launcher.join(timeout=3.0)
    for worker in list(handles.workers.values()):
        with contextlib.suppress(psutil.Error):
            worker.kill()
    if _started(handles.launcher):
        if handles.launcher.exitcode is None:
            handles.launcher.kill()
        handles.launcher.join(timeout=5.0)
    if _started(handles.trainer):
        handles.trainer.join(timeout=5.0)
    for worker in list(handles.workers.values()):
        with contextlib.suppress(psutil.Error):
            worker.wait(timeout=1.0)
    if handles.conn is not None:
        with contextlib.suppress(OSError):
            handles.conn.close()
    if shared is not None:
        shared.close()
    handles.launcher = handles.trainer = handles.conn = handles.shared = None
    handles.workers.clear()


class LivePipeline:
    """A running ingestion pipeline over a MovieLens ratings file (see the module docstring).

    Args:
        source: The dataset to stream (:func:`~recgym.envs.pipeline.live.data.load_source`).
        stage_settings: What the stages compute.
        model_settings: The trainer's model.
        batch_sizes: Batch sizes the trainer compiles ahead (an allocation may use others; the
            trainer then pads a batch to the next compiled size, or compiles).
        max_workers_per_stage: Most workers a stage may have.
        memory_budget_gib: Memory (PSS, GiB) the pipeline may use; above it the pipeline is torn
            down and the interval reports ``oom``.
        stage_timeout_s: Longest a worker or the trainer may spend on one element, and longest
            no sample may reach the trainer, before :class:`StageHangError`.
        start_timeout_s: Longest the launcher and the trainer may take to start (the trainer
            compiles one step per batch size meanwhile).
        poll_s: How often the monitor checks health and samples memory during an interval.
        pss_refresh_s: How often the monitor re-reads one process's PSS (the others are tracked by
            their resident size between reads; see :meth:`memory_gib`).
        channel_capacity: Elements each queue between two stages holds.
        cpus: CPU ids the pipeline's processes may run on (Linux affinity; ``None``: all this
            process may use). :class:`~recgym.envs.pipeline.live.env.LivePipelineEnv` pins the
            pipeline to ``core_budget`` CPUs.
        compilation_cache_dir: The trainer's persistent JAX compilation cache (``None``: off).
        fault: A fault to inject (tests of the failure handling).
    """

    def __init__(
        self,
        source: LiveSource,
        *,
        stage_settings: StageSettings | None = None,
        model_settings: ModelSettings | None = None,
        batch_sizes: tuple[int, ...] = (256,),
        max_workers_per_stage: int = 4,
        memory_budget_gib: float = 4.0,
        stage_timeout_s: float = 10.0,
        start_timeout_s: float = 180.0,
        poll_s: float = 0.1,
        pss_refresh_s: float = 0.5,
        channel_capacity: int = 4,
        cpus: tuple[int, ...] | None = None,
        compilation_cache_dir: str | None = None,
        fault: Fault | None = None,
    ):
        if not isinstance(source, LiveSource):
            raise ValueError(f"source must be a LiveSource (see load_source), got {type(source).__name__}")
        if isinstance(max_workers_per_stage, bool) or not isinstance(max_workers_per_stage, int) or max_workers_per_stage < 1:
            raise ValueError(f"max_workers_per_stage must be an int >= 1, got {max_workers_per_stage!r}")
        for name, value in (("memory_budget_gib", memory_budget_gib), ("stage_timeout_s", stage_timeout_s),
                            ("start_timeout_s", start_timeout_s), ("poll_s", poll_s),
                            ("pss_refresh_s", pss_refresh_s)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if isinstance(channel_capacity, bool) or not isinstance(channel_capacity, int) or channel_capacity < 1:
            raise ValueError(f"channel_capacity must be an int >= 1, got {channel_capacity!r}")
        if not batch_sizes or any(isinstance(b, bool) or not isinstance(b, int | np.integer) or b < 1 for b in batch_sizes):
            raise ValueError(f"batch_sizes must be a non-empty sequence of ints >= 1, got {batch_sizes!r}")
        if fault is not None and not isinstance(fault, Fault):
            raise ValueError(f"fault must be a Fault or None, got {type(fault).__name__}")
        self.source = source
        self.stage_settings = stage_settings or StageSettings()
        self.model_settings = model_settings or ModelSettings()
        self.batch_sizes = tuple(sorted({int(b) for b in batch_sizes}))
        self.max_workers_per_stage = max_workers_per_stage
        self.memory_budget_gib = float(memory_budget_gib)
        self.stage_timeout_s = float(stage_timeout_s)
        self.start_timeout_s = float(start_timeout_s)
        self.poll_s = float(poll_s)
        self._memory = MemoryTracker(float(pss_refresh_s))
        self.channel_capacity = channel_capacity
        self.cpus = tuple(sorted(set(int(c) for c in cpus))) if cpus is not None else allowed_cpus()
        self.compilation_cache_dir = None if compilation_cache_dir is None else str(compilation_cache_dir)
        self.fault = fault
        self.allocation: Allocation | None = None
        self._handles = _Handles()
        self._procs: dict[str, psutil.Process] = {}
        self._finalizer = weakref.finalize(self, _teardown, self._handles)
        self._retired = np.zeros((NUM_STAGES, SlotCounters.SIZE))
        self._last_progress = (0.0, 0.0)  # (trainer samples, monotonic time they last grew)

    # -- life cycle -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the pipeline's processes are up."""
        return self._handles.shared is not None

    def start(self, allocation: Allocation, warmup_batches: int = 2) -> None:
        """Start the processes, apply ``allocation`` and wait until batches reach the trainer.

        Raises:
            LivePipelineError: A process failed to start in ``start_timeout_s`` (torn down).
        """
        if self.running:
            raise RuntimeError("the pipeline is already running; close() it first")
        ctx = multiprocessing.get_context("spawn")
        max_slots = 2 * NUM_STAGES * self.max_workers_per_stage
        shared = SharedState.create(ctx, max_slots, self.channel_capacity, allocation.prefetch, TrainerCounters.SIZE)
        handles = self._handles
        handles.shared = shared
        self._retired[:] = 0.0
        try:
            parent_conn, child_conn = ctx.Pipe()
            handles.conn = parent_conn
            handles.launcher = ctx.Process(
                target=launcher_main,
                args=(child_conn, shared, self.source, self.stage_settings, self.fault, self.cpus),
                name="recgym-live-launcher",  # not daemonic: it forks the workers
            )
            handles.trainer = ctx.Process(
                target=trainer_main,
                args=(shared.trainer_counters, shared.prefetch, shared.trainer_stop, self.model_settings,
                      self.stage_settings.hash_buckets, self.source.n_genres, self.batch_sizes, POLL_S,
                      shared.report_trainer_error, self.cpus, self.compilation_cache_dir),
                name="recgym-live-trainer", daemon=True,
            )
            handles.launcher.start()
            handles.trainer.start()
            child_conn.close()
            self._procs = {"launcher": psutil.Process(handles.launcher.pid), "trainer": psutil.Process(handles.trainer.pid)}
            self.allocation = None
            self.apply(allocation)
            deadline = time.monotonic() + self.start_timeout_s
            trainer = shared.trainer()
            while trainer[TrainerCounters.STEPS] < warmup_batches:
                self._check_health(starting=True)
                if time.monotonic() > deadline:
                    raise LivePipelineError(
                        f"the pipeline did not deliver {warmup_batches} batches to the trainer within "
                        f"start_timeout_s={self.start_timeout_s:g} s (trainer compiled: "
                        f"{bool(trainer[TrainerCounters.READY])})"
                    )
                time.sleep(POLL_S)
            self._last_progress = (trainer[TrainerCounters.SAMPLES], time.monotonic())
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Tear every process down (idempotent)."""
        _teardown(self._handles)
        self.allocation = None

    def __enter__(self) -> LivePipeline:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def pids(self) -> list[int]:
        """Pids of the pipeline's live processes (launcher, trainer, workers)."""
        out = []
        for proc in [*self._procs.values(), *self._handles.workers.values()]:
            with contextlib.suppress(psutil.Error):
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    out.append(proc.pid)
        return out

    def trainer_samples(self) -> float:
        """Samples the trainer has trained on since the start (a counter read; no monitoring)."""
        return float(self._shared.trainer()[TrainerCounters.SAMPLES])

    def worker_pids(self, stage: str) -> list[int]:
        """Pids of the running workers of ``stage`` (not those stopping)."""
        index = STAGES.index(stage)
        states = self._shared.states()
        return [int(states[s, SlotState.PID]) for s in self._active_slots(index)
                if states[s, SlotState.STATUS] == SlotState.RUNNING]

    @property
    def _shared(self) -> SharedState:
        if self._handles.shared is None:
            raise RuntimeError("the pipeline is not running (start() it)")
        return self._handles.shared

    # -- configuration --------------------------------------------------------------------------

    def _active_slots(self, stage: int) -> list[int]:
        states = self._shared.states()
        mask = (states[:, SlotState.STAGE] == stage) & (states[:, SlotState.STOP] == 0) & (
            (states[:, SlotState.STATUS] == SlotState.STARTING) | (states[:, SlotState.STATUS] == SlotState.RUNNING)
        )
        return [int(s) for s in np.flatnonzero(mask)]

    def apply(self, allocation: Allocation) -> None:
        """Resize the stages and set the batch size and prefetch depth (no wait for a steady state).

        Raises:
            ValueError: More workers for a stage than ``max_workers_per_stage``.
            LivePipelineError: The launcher did not start a worker in time (torn down).
        """
        if not isinstance(allocation, Allocation):
            raise ValueError(f"allocation must be an Allocation, got {type(allocation).__name__}")
        too_many = [(s, c) for s, c in zip(STAGES, allocation.cores) if c > self.max_workers_per_stage]
        if too_many:
            raise ValueError(f"at most max_workers_per_stage={self.max_workers_per_stage} workers per stage, got {too_many}")
        shared = self._shared
        try:
            controls = shared.controls()
            controls[Control.BATCH_SIZE] = allocation.batch_size
            n_shuffle = allocation.cores[STAGES.index("shuffle")]
            controls[Control.SHUFFLE_SHARE] = -(-self.stage_settings.shuffle_buffer // n_shuffle)
            if shared.prefetch.capacity != allocation.prefetch:
                shared.prefetch.set_capacity(allocation.prefetch)
            states = shared.states()
            starting = []
            for stage, target in enumerate(allocation.cores):
                active = self._active_slots(stage)
                for slot in active[target:]:  # the newest stop first (their buffers are smallest)
                    states[slot, SlotState.STOP] = 1
                for _ in range(target - len(active)):
                    slot = self._free_slot()
                    states[slot, SlotState.STAGE] = stage
                    states[slot, SlotState.STOP] = 0
                    states[slot, SlotState.STATUS] = SlotState.STARTING
                    shared.counters()[slot] = 0.0
                    self._handles.conn.send(("start", slot))
                    starting.append(slot)
            deadline = time.monotonic() + self.start_timeout_s
            while starting:
                if not self._handles.conn.poll(max(deadline - time.monotonic(), 0.0)):
                    raise LivePipelineError(f"the launcher did not start {len(starting)} worker(s) within "
                                            f"start_timeout_s={self.start_timeout_s:g} s")
                _, slot, pid = self._handles.conn.recv()
                self._handles.workers[slot] = psutil.Process(pid)
                starting.remove(slot)
            self.allocation = allocation
        except (LivePipelineError, OSError, EOFError, TimeoutError) as err:
            self.close()
            if isinstance(err, LivePipelineError):
                raise
            raise LivePipelineError(f"could not apply the allocation: {err!r}") from err
        except BaseException:
            self.close()
            raise

    def _free_slot(self) -> int:
        self._recycle()
        states = self._shared.states()
        free = np.flatnonzero(states[:, SlotState.STATUS] == SlotState.FREE)
        if not free.size:
            raise LivePipelineError("no free worker slot: too many workers are still stopping")
        return int(free[0])

    def _recycle(self) -> None:
        """Free the slots of workers that stopped when asked (their counters join their stage's)."""
        shared = self._shared
        states, counters = shared.states(), shared.counters()
        for slot in np.flatnonzero(states[:, SlotState.STATUS] == SlotState.EXITED):
            if states[slot, SlotState.STOP] and states[slot, SlotState.EXITCODE] == 0:
                stage = int(states[slot, SlotState.STAGE])
                self._retired[stage] += counters[slot]
                self._retired[stage, SlotCounters.BUSY_SINCE] = 0.0
                counters[slot] = 0.0
                states[slot] = (-1, 0, 0, SlotState.FREE, 0)
                self._handles.workers.pop(int(slot), None)

    # -- monitoring -----------------------------------------------------------------------------

    def _fail(self, error: LivePipelineError):
        self.close()
        raise error

    def _check_health(self, starting: bool = False) -> None:
        """Raise (after tearing down) if a process died unasked or hangs; recycle stopped slots."""
        handles = self._handles
        shared = self._shared
        for name in ("launcher", "trainer"):
            process = getattr(handles, name)
            if process.exitcode is not None:
                error = shared.error_of(shared.trainer_error_slot).strip() if name == "trainer" else ""
                self._fail(WorkerFailedError(
                    f"the {name} process (pid {process.pid}) exited with code {process.exitcode}"
                    f"{_signal_text(process.exitcode)}; the pipeline was torn down" + (f":\n{error}" if error else "")))
        states, counters = shared.states(), shared.counters()
        exited = np.flatnonzero(states[:, SlotState.STATUS] == SlotState.EXITED)
        for slot in exited:
            code = int(states[slot, SlotState.EXITCODE])
            if not states[slot, SlotState.STOP] or code != 0:
                stage = STAGES[int(states[slot, SlotState.STAGE])]
                error = shared.error_of(int(slot)).strip()
                detail = f":\n{error}" if error else ""
                self._fail(WorkerFailedError(
                    f"a worker of stage {stage!r} (pid {int(states[slot, SlotState.PID])}) exited with code "
                    f"{code}{_signal_text(code)} without being asked to; the pipeline was torn down{detail}"))
        self._recycle()
        now = time.monotonic()
        running = states[:, SlotState.STATUS] == SlotState.RUNNING
        since = counters[:, SlotCounters.BUSY_SINCE].copy()  # one read: workers keep writing it
        stuck = np.flatnonzero(running & (since > 0) & (now - since > self.stage_timeout_s))
        if stuck.size:
            slot = int(stuck[0])
            self._fail(StageHangError(
                f"a worker of stage {STAGES[int(states[slot, SlotState.STAGE])]!r} (pid "
                f"{int(states[slot, SlotState.PID])}) has spent {now - since[slot]:.1f} s on one element, more "
                f"than stage_timeout_s={self.stage_timeout_s:g}; the pipeline was torn down"))
        trainer = shared.trainer()
        busy_since = trainer[TrainerCounters.BUSY_SINCE]
        if busy_since > 0 and now - busy_since > self.stage_timeout_s:
            self._fail(StageHangError(
                f"the trainer has spent {now - busy_since:.1f} s on one step, more than "
                f"stage_timeout_s={self.stage_timeout_s:g}; the pipeline was torn down"))
        if not starting:
            samples, since_progress = self._last_progress
            if trainer[TrainerCounters.SAMPLES] > samples:
                self._last_progress = (trainer[TrainerCounters.SAMPLES], now)
            elif now - since_progress > self.stage_timeout_s:
                self._fail(StageHangError(
                    f"no sample reached the trainer for {now - since_progress:.1f} s (more than "
                    f"stage_timeout_s={self.stage_timeout_s:g}); per-stage samples so far: "
                    f"{dict(zip(STAGES, self._stage_totals()[:, SlotCounters.SAMPLES].astype(int).tolist()))}; "
                    "the pipeline was torn down"))

    def memory_gib(self) -> float:
        """The pipeline's memory now: PSS summed over its processes (GiB; see the module docstring),
        tracked cheaply by :class:`~recgym.envs.pipeline.live.monitor.MemoryTracker`."""
        return self._memory.total([*self._procs.values(), *self._handles.workers.values()]) / _GIB

    def process_memory_gib(self, kind: str = "pss") -> dict[str, float]:
        """Memory of each process now (GiB), keyed ``"launcher"``, ``"trainer"`` and ``"<stage>/<slot>"``.

        Args:
            kind: ``"pss"`` (shared pages split among their sharers), ``"uss"`` (pages only this
                process holds: what it adds to the machine) or ``"rss"``.
        """
        if kind not in ("pss", "uss", "rss"):
            raise ValueError(f"kind must be 'pss', 'uss' or 'rss', got {kind!r}")
        out = {}
        states = self._shared.states()
        named = list(self._procs.items()) + [
            (f"{STAGES[int(states[slot, SlotState.STAGE])]}/{slot}", proc) for slot, proc in self._handles.workers.items()
        ]
        for name, proc in named:
            with contextlib.suppress(psutil.Error):
                info = proc.memory_info() if kind == "rss" else proc.memory_full_info()
                out[name] = getattr(info, kind) / _GIB
        return out

    def _stage_totals(self) -> np.ndarray:
        shared = self._shared
        states, counters = shared.states(), shared.counters()
        totals = self._retired.copy()
        for stage in range(NUM_STAGES):
            totals[stage] += counters[states[:, SlotState.STAGE] == stage].sum(axis=0)
        return totals

    def _snapshot(self) -> Snapshot:
        self._recycle()
        return Snapshot(time.monotonic(), self._stage_totals(), self._shared.trainer().copy(),
                         busy_cpu_seconds(self.cpus))

    def run_interval(self, seconds: float) -> Measurement:
        """Run the current allocation for ``seconds`` and measure it.

        Returns:
            The interval's :class:`Measurement`; if memory went over the budget the pipeline has
            been torn down and the measurement has ``oom=True`` (rates measured up to then).

        Raises:
            WorkerFailedError: A process died unasked (the pipeline was torn down).
            StageHangError: A process hung or no data reached the trainer (torn down).
        """
        if not self.running or self.allocation is None:
            raise RuntimeError("the pipeline is not running (start() it)")
        try:
            allocation = self.allocation
            begin = self._snapshot()
            deadline = begin.time + float(seconds)
            peak = 0.0
            oom = False
            while True:
                self._check_health()
                memory = self.memory_gib()
                peak = max(peak, memory)
                if memory > self.memory_budget_gib:
                    oom = True
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                time.sleep(min(self.poll_s, left))
            end = self._snapshot()
        except LivePipelineError:
            raise
        except BaseException:
            self.close()  # an error or Ctrl-C: leave nothing running
            raise
        if oom:
            self.close()
        return measure(allocation, begin, end, peak, oom)


def _signal_text(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f" (killed by {signal.Signals(-code).name})"
    return ""
