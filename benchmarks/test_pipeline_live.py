"""Overhead of the live pipeline's monitor and of resizing, at a fixed allocation.

``python -m pytest benchmarks/test_pipeline_live.py --benchmark-only`` (full windows; with
``--benchmark-disable`` each body runs once, briefly, as a smoke test). The figures are stored in
each benchmark's ``extra_info``:

* ``test_monitor_overhead``: the same pipeline at one allocation, measured over alternating
  windows without the monitor (two reads of the trainer's sample counter around a sleep) and with
  it (:meth:`~recgym.envs.pipeline.live.LivePipeline.run_interval`: health checks and memory
  sampling every ``poll_s``); ``overhead`` is ``1 - monitored / unmonitored`` of the median
  throughputs, and ``monitor_cores`` the CPU the controller itself used per second of monitoring
  (what the monitor takes from the pipeline's cores).
* ``test_resize_overhead``: windows in which a stage is grown by one worker and shrunk back
  (fork, start, stop, reap) against windows at the same allocation without a resize.

Throughput on a shared machine wanders with other programs' load: the windows alternate so both
sides see the same conditions, and the load average is recorded.
"""

from __future__ import annotations

import os
import time

import numpy as np
import psutil
import pytest

from recgym.envs.pipeline.live import Allocation, LivePipeline, load_source
from recgym.envs.pipeline.live.trainer import default_compilation_cache_dir

BASE = Allocation((1, 1, 1, 1, 1, 1), 1024, 2)
GROWN = Allocation((1, 1, 2, 1, 1, 1), 1024, 2)


@pytest.fixture(scope="module")
def pipeline(movielens_home):
    pipe = LivePipeline(load_source("ml-latest-small"), batch_sizes=(1024,), poll_s=0.1, memory_budget_gib=8.0,
                        compilation_cache_dir=default_compilation_cache_dir())
    pipe.start(BASE)
    pipe.run_interval(1.0)  # past the start-up transient
    yield pipe
    pipe.close()


def _unmonitored(pipe: LivePipeline, seconds: float) -> float:
    start, samples = time.monotonic(), pipe.trainer_samples()
    time.sleep(seconds)
    return (pipe.trainer_samples() - samples) / (time.monotonic() - start)


def _sizes(benchmark) -> tuple[float, int]:
    return (0.3, 1) if benchmark.disabled else (2.0, 8)


def test_monitor_overhead(benchmark, pipeline):
    window, rounds = _sizes(benchmark)
    me = psutil.Process()
    results = {"unmonitored": [], "monitored": [], "monitor_cores": []}

    def run():
        for _ in range(rounds):
            results["unmonitored"].append(_unmonitored(pipeline, window))
            cpu = me.cpu_times()
            measured = pipeline.run_interval(window)
            used = me.cpu_times()
            results["monitored"].append(measured.throughput)
            results["monitor_cores"].append((used.user + used.system - cpu.user - cpu.system) / measured.seconds)

    benchmark.pedantic(run, rounds=1, iterations=1)
    unmonitored, monitored = np.median(results["unmonitored"]), np.median(results["monitored"])
    assert unmonitored > 0 and monitored > 0
    benchmark.extra_info.update(
        window_s=window, rounds=rounds, unmonitored_throughput=float(unmonitored), monitored_throughput=float(monitored),
        overhead=float(1.0 - monitored / unmonitored), monitor_cores=float(np.median(results["monitor_cores"])),
        loadavg=os.getloadavg()[0],
    )


def test_resize_overhead(benchmark, pipeline):
    window, rounds = _sizes(benchmark)
    results = {"steady": [], "resized": []}

    def run():
        for _ in range(rounds):
            results["steady"].append(pipeline.run_interval(window).throughput)
            start, samples = time.monotonic(), pipeline.trainer_samples()
            pipeline.apply(GROWN)
            time.sleep(window / 2)
            pipeline.apply(BASE)
            pipeline.run_interval(max(window - (time.monotonic() - start), 0.05))  # reaps the stopped worker
            results["resized"].append((pipeline.trainer_samples() - samples) / (time.monotonic() - start))

    benchmark.pedantic(run, rounds=1, iterations=1)
    steady, resized = np.median(results["steady"]), np.median(results["resized"])
    assert steady > 0 and resized > 0
    benchmark.extra_info.update(
        window_s=window, rounds=rounds, steady_throughput=float(steady), resized_throughput=float(resized),
        overhead=float(1.0 - resized / steady), loadavg=os.getloadavg()[0],
    )
