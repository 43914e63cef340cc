"""The live pipeline's processes: they run, resize, fail loudly and never outlive the pipeline.

Each test starts its own pipeline (a few seconds: the trainer imports JAX and compiles) with short
intervals and timeouts, and checks that every process it started is gone afterwards.
"""

from __future__ import annotations

import _thread
import os
import signal
import threading
import time

import numpy as np
import psutil
import pytest

from recgym.envs.pipeline.live import (
    Allocation,
    Fault,
    LivePipeline,
    StageHangError,
    WorkerFailedError,
)

ONE = Allocation((1,) * 6, 64, 1)


def _pipeline(source, **kwargs) -> LivePipeline:
    kwargs = {"batch_sizes": (64, 128), "stage_timeout_s": 5.0, "poll_s": 0.05, "memory_budget_gib": 8.0, **kwargs}
    return LivePipeline(source, **kwargs)


def _after(seconds: float, action) -> threading.Timer:
    timer = threading.Timer(seconds, action)
    timer.start()
    return timer


def test_it_runs_resizes_and_stops_cleanly(source, no_orphans):
    with _pipeline(source, max_workers_per_stage=2) as pipeline:
        pipeline.start(ONE)
        with pytest.raises(RuntimeError, match="already running"):
            pipeline.start(ONE)
        with pytest.raises(ValueError, match="max_workers_per_stage=2"):
            pipeline.apply(Allocation((3, 1, 1, 1, 1, 1), 64, 1))
        pids = set(pipeline.pids())
        assert len(pids) == 8  # launcher, trainer, six workers
        first = pipeline.run_interval(0.4)
        assert first.throughput > 0 and first.batches > 0 and 0 < first.memory_gib < 8.0
        assert np.all(first.stage_rate > 0)
        pipeline.apply(Allocation((1, 1, 2, 1, 1, 2), 128, 0))
        assert len(pipeline.worker_pids("transform")) == 2
        pipeline.run_interval(0.2)
        second = pipeline.run_interval(0.6)
        assert second.throughput > 0
        assert second.throughput * second.seconds / second.batches == pytest.approx(128, rel=0.05)
        pipeline.apply(ONE)
        assert len(pipeline.worker_pids("transform")) == 1
        third = pipeline.run_interval(0.4)  # the stopped workers exit and are reaped meanwhile
        assert third.throughput > 0
        all_pids = set(pipeline.pids())
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in all_pids | pids)


def test_a_killed_worker_is_reported_and_nothing_hangs(source, no_orphans):
    pipeline = _pipeline(source)
    pipeline.start(ONE)
    (victim,) = pipeline.worker_pids("transform")
    _after(0.2, lambda: os.kill(victim, signal.SIGKILL))
    start = time.monotonic()
    with pytest.raises(WorkerFailedError, match=r"stage 'transform' .*SIGKILL.*torn down"):
        pipeline.run_interval(5.0)
    assert time.monotonic() - start < 3.0
    assert not pipeline.running


def test_a_hanging_stage_is_detected_by_the_timeout(source, no_orphans):
    pipeline = _pipeline(source, stage_timeout_s=1.0, fault=Fault("hang", "parse", after_elements=4))
    start = time.monotonic()
    with pytest.raises(StageHangError, match=r"stage 'parse' .*stage_timeout_s=1"):
        pipeline.start(ONE)
        pipeline.run_interval(30.0)
    assert not pipeline.running
    assert time.monotonic() - start < 30.0


def test_a_stage_that_raises_reports_its_traceback(source, no_orphans):
    pipeline = _pipeline(source, fault=Fault("raise", "transform", after_elements=2))
    with pytest.raises(WorkerFailedError, match=r"(?s)stage 'transform'.*exited with code 1.*InjectedFault"):
        pipeline.start(ONE)
        pipeline.run_interval(10.0)
    assert not pipeline.running


def test_keyboard_interrupt_leaves_no_process(source, no_orphans):
    # interrupt_main() does nothing while SIGINT is ignored, so give this test Python's own Ctrl-C
    # handler: a test run started in the background of a non-interactive shell (`cmd &` in a CI
    # script, nohup) inherits SIGINT ignored, as POSIX shells do for background jobs, and Python
    # then leaves it ignored (CI's full run never delivered the interrupt for this reason)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        pipeline = _pipeline(source)
        pipeline.start(ONE)
        _after(0.3, _thread.interrupt_main)
        with pytest.raises(KeyboardInterrupt):
            pipeline.run_interval(30.0)  # long: a late timer thread on a loaded machine still interrupts it
        assert not pipeline.running
    finally:
        signal.signal(signal.SIGINT, previous)


def test_an_exception_in_the_controller_leaves_no_process(source, no_orphans, monkeypatch):
    pipeline = _pipeline(source)
    pipeline.start(ONE)
    calls = []

    def failing_memory():
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("monitor broke")
        return 0.1

    monkeypatch.setattr(pipeline, "memory_gib", failing_memory)
    with pytest.raises(RuntimeError, match="monitor broke"):
        pipeline.run_interval(5.0)
    assert not pipeline.running


def test_memory_over_the_budget_ends_the_interval_and_tears_down(source, no_orphans):
    # Every transform element leaks 8 MiB: memory climbs until the budget stops the pipeline.
    pipeline = _pipeline(source, fault=Fault("leak", "transform", after_elements=0, leak_mib=8))
    pipeline.start(ONE)
    pipeline.memory_budget_gib = pipeline.memory_gib() + 0.15
    start = time.monotonic()
    measurement = pipeline.run_interval(20.0)
    assert measurement.oom and measurement.memory_gib > pipeline.memory_budget_gib
    assert time.monotonic() - start < 20.0
    assert not pipeline.running and pipeline.pids() == []


def test_bad_arguments_raise_naming_the_field(source):
    with pytest.raises(ValueError, match="memory_budget_gib"):
        LivePipeline(source, memory_budget_gib=0)
    with pytest.raises(ValueError, match="max_workers_per_stage"):
        LivePipeline(source, max_workers_per_stage=0)
    with pytest.raises(ValueError, match="batch_sizes"):
        LivePipeline(source, batch_sizes=())
    with pytest.raises(ValueError, match="source must be a LiveSource"):
        LivePipeline("ml-latest-small")
    with pytest.raises(ValueError, match="Fault.kind"):
        Fault("explode", "read")
    with pytest.raises(ValueError, match="Allocation.cores"):
        Allocation((1, 1, 1), 64, 1)
    with pytest.raises(ValueError, match="Allocation.prefetch"):
        Allocation((1,) * 6, 64, -1)
    with pytest.raises(RuntimeError, match="not running"):
        LivePipeline(source).run_interval(0.1)
