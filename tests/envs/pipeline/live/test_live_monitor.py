"""The monitor's arithmetic: an interval's measurement from two snapshots, and the memory tracker."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from recgym.envs.pipeline.live import Allocation
from recgym.envs.pipeline.live.monitor import MemoryTracker, Snapshot, measure
from recgym.envs.pipeline.live.runtime import SlotCounters
from recgym.envs.pipeline.live.trainer import TrainerCounters


def _snapshot(t, samples, busy, cpu, trainer_samples, trainer_busy, trainer_idle, busy_cpu):
    totals = np.zeros((6, SlotCounters.SIZE))
    totals[:, SlotCounters.SAMPLES] = samples
    totals[:, SlotCounters.BUSY_S] = busy
    totals[:, SlotCounters.CPU_S] = cpu
    trainer = np.zeros(TrainerCounters.SIZE)
    trainer[TrainerCounters.SAMPLES] = trainer_samples
    trainer[TrainerCounters.STEPS] = trainer_samples / 100
    trainer[TrainerCounters.BUSY_S] = trainer_busy
    trainer[TrainerCounters.IDLE_S] = trainer_idle
    trainer[TrainerCounters.CPU_S] = trainer_busy
    return Snapshot(t, totals, trainer, busy_cpu)


def test_a_measurement_is_the_difference_of_two_snapshots():
    allocation = Allocation((1, 1, 2, 1, 1, 1), 100, 2)
    begin = _snapshot(10.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, busy_cpu=50.0)
    samples = np.array([1000, 1000, 1000, 1000, 900, 900.0])
    busy = np.array([0.1, 0.2, 0.5, 0.1, 0.05, 0.0])  # prefetch did no measurable work
    end = _snapshot(12.0, samples, busy, busy, 800.0, 0.4, 1.2, busy_cpu=53.0)
    m = measure(allocation, begin, end, memory_gib=0.5, oom=False)
    assert m.seconds == 2.0 and m.throughput == 400.0 and m.batches == 8
    np.testing.assert_allclose(m.stage_rate, samples / 2)
    # capacity = workers x samples per busy second; NaN where the stage did no work.
    np.testing.assert_allclose(m.stage_capacity[:5], np.array([1, 1, 2, 1, 1]) * samples[:5] / busy[:5])
    assert np.isnan(m.stage_capacity[5])
    np.testing.assert_allclose(m.stage_busy_fraction, busy / (np.array([1, 1, 2, 1, 1, 1]) * 2))
    assert m.trainer_rate == 2000.0 and m.trainer_idle_fraction == pytest.approx(0.6)
    assert m.pipeline_cores == pytest.approx((busy.sum() + 0.4) / 2)
    assert m.other_cores == pytest.approx(1.5 - m.pipeline_cores)


class FakeProcess:
    """A process whose PSS and RSS the test sets; counts the (expensive) PSS reads."""

    def __init__(self, pid, pss, rss):
        self.pid, self.pss, self.rss, self.reads = pid, pss, rss, 0

    def memory_info(self):
        return SimpleNamespace(rss=self.rss)

    def memory_full_info(self):
        self.reads += 1
        return SimpleNamespace(pss=self.pss)


def test_the_tracker_reads_new_processes_then_follows_their_resident_size(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr("recgym.envs.pipeline.live.monitor.time.monotonic", lambda: clock[0])
    tracker = MemoryTracker(refresh_s=10.0, tolerance_bytes=100.0)
    a, b = FakeProcess(1, pss=1000.0, rss=5000.0), FakeProcess(2, pss=2000.0, rss=6000.0)
    assert tracker.total([a, b]) == 3000.0 and (a.reads, b.reads) == (1, 1)
    # b gains 50 private bytes (within tolerance): tracked by its RSS, no read.
    b.pss, b.rss = 2050.0, 6050.0
    assert tracker.total([a, b]) == 3050.0 and b.reads == 1
    # a maps 400 bytes of shared pages (RSS +400, PSS +100): the estimate errs high until the
    # tracker re-reads the process that moved most — a.
    a.pss, a.rss = 1100.0, 5400.0
    assert tracker.total([a, b]) == pytest.approx(3150.0)
    assert a.reads == 2
    assert tracker.total([a, b]) == pytest.approx(3150.0)
    # A process that died is dropped.
    assert tracker.total([b]) == pytest.approx(2050.0) and list(tracker.known) == [2]


def test_the_tracker_refreshes_the_stalest_process_every_refresh_s(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr("recgym.envs.pipeline.live.monitor.time.monotonic", lambda: clock[0])
    tracker = MemoryTracker(refresh_s=1.0)
    procs = [FakeProcess(i, 100.0, 100.0) for i in range(3)]
    tracker.total(procs)
    for step in range(1, 7):
        clock[0] = float(step)
        tracker.total(procs)
    assert [p.reads for p in procs] == [3, 3, 3]  # one re-read per second, round robin
