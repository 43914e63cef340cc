"""What the live pipeline's monitor measures, and how.

* :class:`Measurement` — one interval's readings: per-stage rates, capacities, busy fractions and
  CPU time, the trainer's throughput, rate and idle fraction, the peak memory and the cores busy
  on the pipeline's CPUs;
* :func:`measure` — a measurement from two :class:`Snapshot` of the cumulative counters every
  worker and the trainer keep in shared memory;
* :class:`MemoryTracker` — the pipeline's memory (PSS summed over its processes), cheaply enough to
  sample several times a second;
* :func:`busy_cpu_seconds` — the operating system's busy time of the pipeline's CPUs (what other
  programs use is that less the pipeline's own CPU time).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import psutil

from recgym.envs.pipeline.live.runtime import SlotCounters
from recgym.envs.pipeline.live.trainer import TrainerCounters

if TYPE_CHECKING:
    from recgym.envs.pipeline.live.pipeline import Allocation


@dataclass(frozen=True)
class Measurement:
    """What the monitor measured over one interval. Rates in samples/s, memory in GiB.

    Attributes:
        seconds: Wall-clock length of the interval.
        allocation: The allocation the interval ran.
        stage_rate: ``(6,)`` samples each stage processed per second.
        stage_capacity: ``(6,)`` each stage's capacity: its workers times the samples one worker
            processes per busy second (time slicing included; NaN if the stage did no work).
        stage_busy_fraction: ``(6,)`` busy seconds over ``workers x seconds``.
        stage_cpu_seconds: ``(6,)`` CPU seconds the stage's worker processes used.
        throughput: Samples the trainer trained on per second.
        batches: Training steps the trainer took.
        trainer_rate: Samples the trainer trains per second of computing (its capacity; NaN if it
            trained on nothing).
        trainer_idle_fraction: Fraction of the interval the trainer waited for a batch.
        trainer_cpu_seconds: CPU seconds the trainer used.
        memory_gib: Peak memory (PSS, see the module docstring) over the interval's samples.
        busy_cores: Cores the operating system reports busy on the pipeline's CPUs (anyone's work).
        oom: Memory went over the budget: the pipeline was torn down mid-interval.
        loss: The trainer's last training loss.
    """

    seconds: float
    allocation: Allocation
    stage_rate: np.ndarray
    stage_capacity: np.ndarray
    stage_busy_fraction: np.ndarray
    stage_cpu_seconds: np.ndarray
    throughput: float
    batches: int
    trainer_rate: float
    trainer_idle_fraction: float
    trainer_cpu_seconds: float
    memory_gib: float
    busy_cores: float = math.nan
    oom: bool = False
    loss: float = math.nan

    @property
    def pipeline_cores(self) -> float:
        """Cores the pipeline's workers and trainer kept busy (their CPU seconds per second)."""
        return float(self.stage_cpu_seconds.sum() + self.trainer_cpu_seconds) / self.seconds

    @property
    def other_cores(self) -> float:
        """Cores other processes kept busy on the pipeline's CPUs (noisy neighbours; >= 0)."""
        return max(self.busy_cores - self.pipeline_cores, 0.0) if math.isfinite(self.busy_cores) else 0.0


@dataclass
class Snapshot:
    """Cumulative counters at one moment (what :func:`measure` differences)."""

    time: float
    stage_totals: np.ndarray  # (6, SlotCounters.SIZE)
    trainer: np.ndarray
    busy_cpu_seconds: float  # the OS's busy time summed over the pipeline's CPUs



def allowed_cpus() -> tuple[int, ...]:
    """CPU ids this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return tuple(sorted(os.sched_getaffinity(0)))
    return tuple(range(os.cpu_count() or 1))


def busy_cpu_seconds(cpus: tuple[int, ...]) -> float:
    """Seconds the CPUs ``cpus`` have spent busy since boot (everything but idle and I/O wait)."""
    per_cpu = psutil.cpu_times(percpu=True)
    total = 0.0
    for cpu in cpus:
        if cpu < len(per_cpu):
            t = per_cpu[cpu]
            total += sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    return total


class MemoryTracker:
    """The PSS of a set of processes, cheaply enough to sample several times a second.

    Reading a process's PSS makes the kernel walk its page tables (milliseconds for a JAX
    process), so :meth:`total` reads it for one process per call at most and tracks the others by
    their resident size, which is cheap to read: ``PSS ~ PSS_then + (RSS_now - RSS_then)``. The
    estimate errs high (a page a process maps from a sharer counts whole), so the process re-read
    is the one whose resident size moved most since its last read — a newly forked worker, as it
    touches the pages it shares with the launcher — or, when none moved by more than
    ``tolerance_bytes``, the one read longest ago, every ``refresh_s``.

    Args:
        refresh_s: Seconds between two reads when no estimate has moved.
        tolerance_bytes: Resident-size change that makes an estimate worth a read.
    """

    def __init__(self, refresh_s: float, tolerance_bytes: float = float(1 << 20)):
        self.refresh_s = refresh_s
        self.tolerance_bytes = tolerance_bytes
        self.known: dict[int, tuple[float, float, float]] = {}  # pid -> (pss, rss then, when)
        self.last_refresh = -math.inf

    def total(self, processes) -> float:
        """The summed PSS of ``processes`` (``psutil.Process``; the dead are skipped), bytes."""
        now = time.monotonic()
        alive, rss_now, total, read_new = [], {}, 0.0, False
        for proc in processes:
            with contextlib.suppress(psutil.Error):
                rss = float(proc.memory_info().rss)
                known = self.known.get(proc.pid)
                if known is None:  # a new process: read its PSS now
                    known = self.known[proc.pid] = (float(proc.memory_full_info().pss), rss, now)
                    read_new = True
                alive.append(proc)
                rss_now[proc.pid] = rss
                total += known[0] + (rss - known[1])
        if read_new:
            self.last_refresh = now  # this call has read enough
        elif alive:
            proc = max(alive, key=lambda p: abs(rss_now[p.pid] - self.known[p.pid][1]))
            drift = abs(rss_now[proc.pid] - self.known[proc.pid][1])
            if drift <= self.tolerance_bytes:
                proc = None
                if now - self.last_refresh >= self.refresh_s:
                    proc = min(alive, key=lambda p: self.known[p.pid][2])
            if proc is not None:
                with contextlib.suppress(psutil.Error):
                    pss, rss_then = float(proc.memory_full_info().pss), float(proc.memory_info().rss)
                    old = self.known[proc.pid]
                    total += pss - (old[0] + (rss_then - old[1]))
                    self.known[proc.pid] = (pss, rss_then, now)
                self.last_refresh = now
        live = {p.pid for p in alive}
        for pid in [pid for pid in self.known if pid not in live]:
            del self.known[pid]
        return total


def measure(allocation: Allocation, begin: Snapshot, end: Snapshot, memory_gib: float, oom: bool) -> Measurement:
    """The :class:`Measurement` of the interval between two snapshots."""
    seconds = max(end.time - begin.time, 1e-9)
    delta = end.stage_totals - begin.stage_totals
    trainer = end.trainer - begin.trainer
    cores = np.asarray(allocation.cores, dtype=np.float64)
    samples = delta[:, SlotCounters.SAMPLES]
    busy = delta[:, SlotCounters.BUSY_S]
    with np.errstate(divide="ignore", invalid="ignore"):
        capacity = np.where(busy > 0, cores * samples / busy, np.nan)
    t_busy = trainer[TrainerCounters.BUSY_S]
    return Measurement(
        seconds=seconds,
        allocation=allocation,
        stage_rate=samples / seconds,
        stage_capacity=capacity,
        stage_busy_fraction=np.clip(busy / (cores * seconds), 0.0, 1.0),
        stage_cpu_seconds=delta[:, SlotCounters.CPU_S],
        throughput=float(trainer[TrainerCounters.SAMPLES] / seconds),
        batches=int(trainer[TrainerCounters.STEPS]),
        trainer_rate=float(trainer[TrainerCounters.SAMPLES] / t_busy) if t_busy > 0 else math.nan,
        trainer_idle_fraction=float(np.clip(trainer[TrainerCounters.IDLE_S] / seconds, 0.0, 1.0)),
        trainer_cpu_seconds=float(trainer[TrainerCounters.CPU_S]),
        memory_gib=float(memory_gib),
        busy_cores=(end.busy_cpu_seconds - begin.busy_cpu_seconds) / seconds,
        oom=oom,
        loss=float(end.trainer[TrainerCounters.LOSS]),
    )
