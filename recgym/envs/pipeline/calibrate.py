"""Calibrate RecGym-Pipeline-v0 from the live pipeline on this machine.

``python -m recgym.envs.pipeline.calibrate --dataset ml-latest-small --out profile.json`` measures
the live pipeline (:mod:`recgym.envs.pipeline.live`) and writes a profile file;
``gym.make("RecGym-Pipeline-v0", profile="profile.json")`` then simulates this machine, and
``gym.make("RecGym-PipelineLive-v0", profile="profile.json")`` reports the simulator's optimum and
prediction beside every measurement. What it measures (``docs/environments/pipeline_live.md``
explains each):

1. **Costs in the running pipeline** (one worker per stage, several batch sizes): each stage's
   CPU seconds per sample (its processes' CPU time over the samples it processed, so the
   inter-process hand-off is included), split for the batch and prefetch stages into a
   per-sample part and a per-batch part by a least-squares fit in ``1 / B``; and the trainer's
   CPU seconds per step, fitted as ``t_batch + B t_sample``.
2. **Contention and memory in the running pipeline** (1 to ``max_workers`` workers per stage):
   how the CPU time per sample grows with workers beyond the cores gives the oversubscription
   overhead ``kappa``, and the cores its processes keep busy while cores stand idle gives the
   core efficiency (hand-offs between processes leave cores idle although work is queued);
   the pipeline's memory with one and with the most workers per stage gives
   the base memory (trainer, launcher, shared pages) and each worker's, split across stages by
   the workers' unique set sizes.
3. **Each stage alone** in ``c = 1 .. cores`` processes on prepared inputs: the loss of CPU
   efficiency gives the stage's Amdahl serial fraction.
4. The record size and the read bandwidth of the ratings file.

The profile uses the ``"demand"`` oversubscription basis (workers block when idle) and a trainer
on the pipeline's cores (``trainer_cpu_fraction = 1``): the live pipeline's trainer computes on
the CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from recgym.envs.pipeline import dynamics
from recgym.envs.pipeline.live.data import LiveSource, load_source
from recgym.envs.pipeline.live.pipeline import Allocation, LivePipeline
from recgym.envs.pipeline.live.runtime import pin_to_cpus
from recgym.envs.pipeline.live.stages import (
    STAGE_CLASSES,
    BatchStage,
    ShuffleStage,
    StageSettings,
    element_bytes,
)
from recgym.envs.pipeline.live.trainer import ModelSettings, default_compilation_cache_dir
from recgym.envs.pipeline.params import (
    NUM_STAGES,
    STAGES,
    PipelineParams,
    PipelineProfile,
    save_profile,
)

_GIB = float(1 << 30)
_BATCH = STAGES.index("batch")
_PREFETCH = STAGES.index("prefetch")
_SHUFFLE = STAGES.index("shuffle")


@dataclass(frozen=True)
class CalibrationConfig:
    """What the calibration measures and how long.

    Attributes:
        dataset: MovieLens name or path.
        core_budget: CPUs the pipeline runs on (the first ones this process may use).
        memory_budget_gib: Memory the pipeline may hold (the profile's ``memory_gib``).
        batch_sizes: Batch sizes of the cost measurement (at least two, for the per-batch fits).
        compiled_batch_sizes: Batch sizes the trainer compiles, as the env's will (the default:
            its defaults, 64 to 4,096): each compiled step is memory the trainer holds.
        prefetch: Prefetch depth during the cost measurement.
        interval_s: Seconds per measured interval.
        repeats: Intervals per batch size (their median is used).
        scaling_seconds: Seconds per isolated scaling run.
        max_scaling_workers: Largest process count of a scaling run (default: the cores).
        max_workers: Most workers per stage of the contention and memory measurements.
        stage_settings: What the stages compute (must match the env's).
        model_settings: The trainer's model (must match the env's).
    """

    dataset: str = "ml-latest-small"
    core_budget: int | None = None
    memory_budget_gib: float = 2.0
    batch_sizes: tuple[int, ...] = (64, 256, 1024, 4096)
    compiled_batch_sizes: tuple[int, ...] = tuple(2**k for k in range(6, 13))
    prefetch: int = 2
    interval_s: float = 1.0
    repeats: int = 3
    scaling_seconds: float = 1.0
    max_scaling_workers: int | None = None
    max_workers: int = 4
    stage_settings: StageSettings = StageSettings()
    model_settings: ModelSettings = ModelSettings()

    def __post_init__(self) -> None:
        if len(set(self.batch_sizes)) < 2 or min(self.batch_sizes) < 1:
            raise ValueError(f"batch_sizes needs two or more distinct sizes >= 1, got {self.batch_sizes!r}")
        for name in ("interval_s", "scaling_seconds", "memory_budget_gib"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats!r}")


def allowed_cpus() -> list[int]:
    """CPU ids this process may run on."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


# -- 1, 2. costs, contention and memory in the running pipeline -------------------------------------------------------------


def measure_costs(pipeline: LivePipeline, config: CalibrationConfig, log=print) -> list[dict]:
    """Per batch size: the median per-stage CPU seconds per sample, the trainer's CPU seconds per
    step, and the pipeline's memory (one worker per stage)."""
    records = []
    for batch_size in config.batch_sizes:
        allocation = Allocation((1,) * NUM_STAGES, int(batch_size), config.prefetch)
        pipeline.apply(allocation)
        pipeline.run_interval(max(config.interval_s / 2, 0.2))  # settle
        runs = [pipeline.run_interval(config.interval_s) for _ in range(config.repeats)]
        per_sample = np.median([m.stage_cpu_seconds / np.maximum(m.stage_rate * m.seconds, 1.0) for m in runs], axis=0)
        steps = [m.throughput * m.seconds / batch_size for m in runs]
        trainer_step = float(np.median([m.trainer_cpu_seconds / max(s, 1e-9) for m, s in zip(runs, steps)]))
        record = {
            "batch_size": int(batch_size),
            "stage_cpu_seconds_per_sample": per_sample.tolist(),
            "trainer_cpu_seconds_per_step": trainer_step,
            "throughput": float(np.median([m.throughput for m in runs])),
            "other_cores": float(np.median([m.other_cores for m in runs])),
        }
        records.append(record)
        log(f"  B={batch_size:5d}: throughput {record['throughput']:9.0f}/s, stage CPU us/sample "
            f"{np.array2string(per_sample * 1e6, precision=2)}, trainer {trainer_step * 1e3:.3f} ms/step, "
            f"other load {record['other_cores']:.2f} cores")
    return records


def measure_memory(pipeline: LivePipeline, config: CalibrationConfig, most: int) -> dict:
    """Memory at one and at ``most`` workers per stage: the totals (the median over intervals of
    each interval's peak PSS, the quantity the budget applies to) and each worker's unique set
    size (USS) at ``most``."""
    totals = {}
    uss = {}
    for workers in (1, most):
        allocation = Allocation((workers,) * NUM_STAGES, int(config.batch_sizes[0]), config.prefetch)
        pipeline.apply(allocation)
        pipeline.run_interval(max(config.interval_s / 2, 0.2))
        totals[workers] = float(np.median([pipeline.run_interval(config.interval_s).memory_gib
                                           for _ in range(config.repeats)]))
        uss = pipeline.process_memory_gib("uss")
    per_stage = [float(np.median([v for k, v in uss.items() if k.startswith(f"{stage}/")])) for stage in STAGES]
    return {"workers": [1, most], "total_gib": [totals[1], totals[most]], "worker_uss_gib": per_stage}


def fit_memory(memory: dict, shuffle_share_gib: float) -> tuple[float, list[float]]:
    """Base memory and per-worker memory of each stage from :func:`measure_memory`.

    The two totals fix the base and the memory of one worker of every stage together
    (``M_c = base + c sum_i w_i``); the split across stages follows the workers' unique sizes.
    """
    (c1, c2), (m1, m2) = memory["workers"], memory["total_gib"]
    per_set = max((m2 - m1) / (c2 - c1), 1e-6)  # one worker of each stage
    uss = np.maximum(np.asarray(memory["worker_uss_gib"], dtype=np.float64), 1e-6)
    uss[_SHUFFLE] = max(uss[_SHUFFLE] - shuffle_share_gib, 1e-6)
    weights = per_set * uss / uss.sum()
    return float(m1 - c1 * per_set), weights.tolist()


def measure_contention(pipeline: LivePipeline, config: CalibrationConfig, most: int, log=print) -> dict:
    """CPU seconds per sample of the whole pipeline (stages and trainer) with 1 to ``most``
    workers per stage, at the middle batch size of the cost measurement: what switching between
    more workers costs.

    The worker counts are measured up and then down again (``1..most, most..1``): a drift over the
    measurement (other programs' load, the trainer warming up) then weighs on both ends alike
    instead of reading as a cost of the workers. The batch size is one the trainer compiled (a
    batch of another size is padded to the next compiled one, which would inflate the trainer's
    cost per sample).
    """
    batch_size = int(sorted(config.batch_sizes)[len(config.batch_sizes) // 2])
    rows = []
    for workers in [*range(1, most + 1), *range(most, 0, -1)]:
        pipeline.apply(Allocation((workers,) * NUM_STAGES, batch_size, config.prefetch))
        pipeline.run_interval(max(config.interval_s / 2, 0.2))
        runs = [pipeline.run_interval(config.interval_s) for _ in range(config.repeats)]
        per_sample = float(np.median([m.pipeline_cores / max(m.throughput, 1.0) for m in runs]))
        rows.append({"workers": workers * NUM_STAGES, "cpu_seconds_per_sample": per_sample,
                     "other_cores": float(np.median([m.other_cores for m in runs])),
                     "pipeline_cores": float(np.median([m.pipeline_cores for m in runs]))})
        log(f"  {workers * NUM_STAGES:3d} workers: {per_sample * 1e6:.3f} us CPU per sample, "
            f"{rows[-1]['pipeline_cores']:.2f} cores busy (other load {rows[-1]['other_cores']:.2f} cores)")
    return {"batch_size": batch_size, "rows": rows}


def fit_contention(rows: list[dict], cores: int, trainer_cpu_fraction: float = 1.0) -> float:
    """``kappa`` of ``D = D0 (1 + kappa max(C - B, 0) / B)`` by least squares on the measured CPU
    seconds per sample ``D`` (``D0`` fitted too); clipped to ``[0, 10]``.

    ``C`` counts the workers and the trainer's share of a core, ``B`` is the core budget, as in
    :func:`recgym.envs.pipeline.model.demand_oversubscription_factor`.
    """
    workers = np.asarray([r["workers"] for r in rows], dtype=np.float64) + trainer_cpu_fraction
    excess = np.maximum(workers - cores, 0.0) / cores
    d = np.asarray([r["cpu_seconds_per_sample"] for r in rows], dtype=np.float64)
    (d0, slope), *_ = np.linalg.lstsq(np.stack([np.ones_like(excess), excess], axis=1), d, rcond=None)
    return float(np.clip(slope / d0, 0.0, 10.0)) if d0 > 0 else 0.0


def fit_core_efficiency(rows: list[dict], cores: int, idle_threshold: float = 0.1) -> float:
    """The fraction of the cores the pipeline keeps busy when it has more work than cores.

    Read from the contention rows with at least two workers per stage (all oversubscribed: work
    is always queued somewhere) in which cores stood idle — neither the pipeline nor other
    programs used at least ``idle_threshold`` of a core, so the pipeline had cores it could not
    fill: there it used ``core_efficiency * cores``. The median over those rows, clipped to
    ``[0.05, 1]``. Rows without idle cores say nothing (other programs filled the gaps: the
    pipeline got all the cores they left), and without any such row the pipeline is taken as
    work-conserving (1): a calibration on a saturated machine cannot see its idle gaps.
    """
    ratios = [r["pipeline_cores"] / cores for r in rows
              if r["workers"] >= 2 * NUM_STAGES and "pipeline_cores" in r
              and cores - r["other_cores"] - r["pipeline_cores"] >= idle_threshold]
    if not ratios:
        return 1.0
    return float(np.clip(np.median(ratios), 0.05, 1.0))


def _fit_inverse(batch_sizes, values) -> tuple[float, float]:
    """Least squares ``value = a + b / B`` with ``a, b >= 0``: returns ``(a, b)``."""
    x = 1.0 / np.asarray(batch_sizes, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    design = np.stack([np.ones_like(x), x], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
    if b < 0:
        return float(max(y.mean(), 1e-12)), 0.0
    if a <= 0:
        return float(max(np.min(y - b * x), 1e-9)), float(b)
    return float(a), float(b)


# -- 3. scaling in isolation ----------------------------------------------------------------------


def _stage_inputs(stage: int, source: LiveSource, settings: StageSettings, batch_size: int, n_chunks: int = 16):
    """Inputs of ``stage``: the first chunks of the stream run through the stages before it."""
    elements: list = list(range(n_chunks))
    for upstream in range(stage):
        impl = _make(upstream, source, settings, batch_size)
        produced = []
        for element in elements:
            produced += impl.process(element)
        produced += impl.flush()
        elements = produced
    return elements


def _make(stage: int, source: LiveSource, settings: StageSettings, batch_size: int):
    cls = STAGE_CLASSES[stage]
    if cls is ShuffleStage:
        return cls(source, settings, worker_slot=0, share=lambda: settings.shuffle_buffer)
    if cls is BatchStage:
        return cls(source, settings, batch_size=lambda: batch_size)
    return cls(source, settings)


def _scaling_worker(conn, source: LiveSource, settings: StageSettings, batch_size: int, cpus) -> None:
    """A scaling process: on ``(stage, start, seconds)`` it runs that stage's work on prepared
    inputs from ``start`` (monotonic) for ``seconds`` and replies ``(samples, cpu_seconds)``."""
    pin_to_cpus(cpus)
    inputs: dict[int, list] = {}
    while True:
        try:
            command = conn.recv()
        except EOFError:
            return
        if command is None:
            return
        stage, start, seconds = command
        if stage not in inputs:
            inputs[stage] = _stage_inputs(stage, source, settings, batch_size)
        impl = _make(stage, source, settings, batch_size)
        items = inputs[stage]
        while time.monotonic() < start:
            time.sleep(0.001)
        cpu0 = time.process_time()
        samples, k = 0, 0
        while time.monotonic() < start + seconds:
            item = items[k % len(items)]
            out = impl.process(item)
            samples += out[0].samples if stage == 0 else item.samples
            k += 1
        conn.send((samples, time.process_time() - cpu0))


def measure_scaling(source: LiveSource, config: CalibrationConfig, cpus: list[int], log=print) -> dict:
    """Each stage's work alone in ``c`` processes, ``c`` from 1 to ``max_scaling_workers``.

    Returns:
        A dict: ``counts``, the process counts; ``rates``, ``(6, n)`` samples per wall second;
        ``cpu_rates``, ``(6, n)`` samples per CPU second (summed over the processes).
    """
    most = config.max_scaling_workers or len(cpus)
    ctx = multiprocessing.get_context("spawn")
    batch_size = int(np.median(config.batch_sizes))
    conns, processes = [], []
    try:
        for _ in range(most):
            parent, child = ctx.Pipe()
            process = ctx.Process(target=_scaling_worker, args=(child, source, config.stage_settings, batch_size, cpus),
                                  daemon=True)
            process.start()
            child.close()
            conns.append(parent)
            processes.append(process)
        counts = list(range(1, most + 1))
        rates = np.zeros((NUM_STAGES, len(counts)))
        cpu_rates = np.zeros((NUM_STAGES, len(counts)))
        for stage in range(NUM_STAGES):
            for j, c in enumerate(counts):
                start = time.monotonic() + (2.0 if j == 0 and stage == 0 else 0.3)
                for conn in conns[:c]:
                    conn.send((stage, start, config.scaling_seconds))
                replies = [conn.recv() for conn in conns[:c]]
                samples = sum(r[0] for r in replies)
                rates[stage, j] = samples / config.scaling_seconds
                cpu_rates[stage, j] = samples / max(sum(r[1] for r in replies), 1e-9)
            log(f"  {STAGES[stage]:>9}: samples per CPU second with 1..{most} processes "
                f"{np.array2string(cpu_rates[stage], precision=0, suppress_small=True, max_line_width=200)}")
        return {"counts": counts, "rates": rates.tolist(), "cpu_rates": cpu_rates.tolist()}
    finally:
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.send(None)
                conn.close()
        for process in processes:
            process.join(timeout=5.0)
            if process.exitcode is None:
                process.kill()
                process.join(timeout=5.0)


def fit_scaling(counts, cpu_rates, cores: int) -> list[float]:
    """Amdahl serial fractions from CPU efficiencies of ``c <= cores`` processes.

    A run's efficiency ``e_c`` is its samples per CPU second over a single process's: what ``c``
    processes lose to contention (shared caches, memory bandwidth). CPU time is each process's
    own, so the fit does not depend on what other programs run on the machine meanwhile. With
    the cores all ours, ``c`` processes run ``c e_c`` times as fast as one, so Amdahl's
    ``f = (1 / e_c - 1) / (c - 1)``; the median over ``1 < c <= cores``, clipped to ``[0, 0.99]``.
    """
    counts = np.asarray(counts, dtype=np.float64)
    cpu_rates = np.asarray(cpu_rates, dtype=np.float64)
    fractions = []
    for stage_rates in cpu_rates:
        efficiency = stage_rates / stage_rates[0]
        within = (counts > 1) & (counts <= cores)
        f = float(np.median((1.0 / efficiency[within] - 1.0) / (counts[within] - 1.0))) if within.any() else 0.0
        fractions.append(float(np.clip(f, 0.0, 0.99)))
    return fractions


# -- predictions of the calibrated simulator --------------------------------------------------------


def _world_and_conditions(params: PipelineParams, available_cores: float | None):
    world = dynamics.sample_world(np, params, np.full(dynamics.world_uniforms(params), 0.5, dtype=np.float32))
    available = float(params.profile.core_budget if available_cores is None else available_cores)
    cond = dynamics.Conditions(list(world.cpu_seconds), max(available, 1e-3), float(params.profile.memory_gib))
    return world, cond


def predict(params: PipelineParams, allocation: Allocation, available_cores: float | None = None) -> dynamics.Performance:
    """What the simulator of ``params`` says ``allocation`` delivers (true values, no noise).

    Args:
        params: Params holding the calibrated profile (e.g. :func:`~recgym.envs.pipeline.live.env.live_params`).
        allocation: Workers per stage, batch size (a power of two) and prefetch depth.
        available_cores: Cores free for the pipeline (default: the profile's core budget); the
            live monitor measures it as the budget less what other processes used.

    Returns:
        The simulator's :class:`~recgym.envs.pipeline.dynamics.Performance` (throughput 0 when
        out of memory; ``memory_gib`` regardless).
    """
    world, cond = _world_and_conditions(params, available_cores)
    batch_log2 = int(round(math.log2(allocation.batch_size)))
    if 2**batch_log2 != allocation.batch_size:
        raise ValueError(f"the simulator's batch sizes are powers of two, got {allocation.batch_size}")
    return dynamics.performance(np, world, cond, list(allocation.cores), batch_log2, allocation.prefetch,
                                params.oversubscription_overhead, params.oversubscription_basis)


def simulated_optimum(params: PipelineParams, available_cores: float | None = None) -> tuple[Allocation, float]:
    """The simulator's exact optimum (:mod:`recgym.envs.pipeline.optimum`) as an allocation, and
    its predicted throughput (samples/s)."""
    from recgym.envs.pipeline.optimum import optimal_config

    world, cond = _world_and_conditions(params, available_cores)
    batched = dynamics.PipelineWorld(**{k: np.asarray(getattr(world, k), dtype=np.float32)
                                        for k in dynamics.PipelineWorld.__dataclass_fields__})
    cond = dynamics.Conditions(np.asarray(cond.cpu_seconds, dtype=np.float32), np.float32(cond.available_cores),
                               np.float32(cond.memory_cap_gib))
    best = optimal_config(np, params, batched, cond)
    allocation = Allocation(tuple(int(c) for c in np.asarray(best.cores).tolist()), 2 ** int(best.batch_log2),
                            int(best.prefetch))
    return allocation, float(best.throughput)


# -- 4. the file ------------------------------------------------------------------------------------


def read_bandwidth_mib_s(path: Path, seconds: float = 0.3) -> float:
    """MiB/s of reading ``path`` in 1 MiB blocks (from the page cache after the first pass)."""
    size = path.stat().st_size
    read = 0
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while time.perf_counter() - start < seconds:
            if not f.read(1 << 20):
                f.seek(0)
                continue
            read += min(1 << 20, size)
    return read / (1 << 20) / max(time.perf_counter() - start, 1e-9)


def calibrate(config: CalibrationConfig, log=print) -> tuple[PipelineProfile, dict, dict]:
    """Measure the live pipeline and fit a profile (see the module docstring).

    Returns:
        ``(profile, params, metadata)``: the profile, the params fields measured with it
        (``oversubscription_overhead``, ``oversubscription_basis``) and the raw measurements.
    """
    cpus = allowed_cpus()
    budget = config.core_budget or len(cpus)
    if not 1 <= budget <= len(cpus):
        raise ValueError(f"core_budget must be in [1, {len(cpus)}] on this machine, got {budget!r}")
    cpus = cpus[:budget]

    source = load_source(config.dataset)
    settings = config.stage_settings
    log(f"calibrating on {len(cpus)} core(s) {cpus}: {source.name}, {source.n_ratings:,} ratings, {source.n_chunks} chunks")
    log("1. costs in the running pipeline (one worker per stage)")
    most = config.max_workers
    pipeline = LivePipeline(source, stage_settings=settings, model_settings=config.model_settings,
                            batch_sizes=tuple(sorted(set(config.batch_sizes) | set(config.compiled_batch_sizes))),
                            max_workers_per_stage=most,
                            memory_budget_gib=config.memory_budget_gib * 4, cpus=tuple(cpus),
                            compilation_cache_dir=default_compilation_cache_dir())
    with pipeline:
        pipeline.start(Allocation((1,) * NUM_STAGES, int(config.batch_sizes[0]), config.prefetch))
        costs = measure_costs(pipeline, config, log)
        log(f"2. contention: 1..{most}..1 workers per stage")
        contention = measure_contention(pipeline, config, most, log)
        memory = measure_memory(pipeline, config, most)
    kappa = fit_contention(contention["rows"], len(cpus))
    efficiency = fit_core_efficiency(contention["rows"], len(cpus))
    if not any(len(cpus) - r["other_cores"] - r["pipeline_cores"] >= 0.1 for r in contention["rows"]):
        log("  no core stood idle during the contention runs (other programs filled them): the core "
            "efficiency cannot be measured and is taken as 1; calibrate on a quiet machine")
    elements = element_bytes(source, settings)
    base_gib, worker_gib = fit_memory(memory, settings.shuffle_buffer * elements[_SHUFFLE] / most / _GIB)
    log(f"  oversubscription overhead kappa={kappa:.3f}; core efficiency {efficiency:.3f}; "
        f"memory: {base_gib:.3f} GiB base + per worker "
        f"{np.array2string(np.asarray(worker_gib) * 1024, precision=1)} MiB")
    log("3. each stage alone in 1..cores processes (Amdahl)")
    scaling = measure_scaling(source, config, cpus, log)
    fractions = fit_scaling(scaling["counts"], scaling["cpu_rates"], len(cpus))
    log(f"  serial fractions {np.round(fractions, 3).tolist()}")

    batch_sizes = [r["batch_size"] for r in costs]
    per_sample = np.asarray([r["stage_cpu_seconds_per_sample"] for r in costs])  # (n_B, 6)
    cpu = np.median(per_sample, axis=0)
    batch_sample, batch_overhead = _fit_inverse(batch_sizes, per_sample[:, _BATCH])
    prefetch_sample, prefetch_overhead = _fit_inverse(batch_sizes, per_sample[:, _PREFETCH])
    cpu[_BATCH], cpu[_PREFETCH] = batch_sample, prefetch_sample
    step = [r["trainer_cpu_seconds_per_step"] for r in costs]
    t_sample, t_batch = _fit_inverse(batch_sizes, np.asarray(step) / np.asarray(batch_sizes))
    record_kib = source.bytes_per_rating / settings.samples_per_rating / 1024.0
    profile = PipelineProfile(
        cpu_seconds_per_sample=tuple(float(max(c, 1e-9)) for c in cpu),
        serial_fraction=tuple(fractions),
        worker_memory_gib=tuple(worker_gib),
        element_kib=tuple(e / 1024.0 for e in elements),
        # The per-batch cost of collating and of handing a batch to the trainer (the batch and
        # prefetch stages) is one term of the model: the batch stage's.
        batch_overhead_seconds=batch_overhead + prefetch_overhead,
        read_bandwidth_mib_s=read_bandwidth_mib_s(source.ratings_path),
        record_kib=record_kib,
        core_budget=len(cpus),
        memory_gib=float(config.memory_budget_gib),
        trainer_memory_gib=float(min(max(base_gib, 0.0), config.memory_budget_gib * 0.999)),
        shuffle_buffer=int(settings.shuffle_buffer),
        trainer_batch_seconds=t_batch,
        trainer_sample_seconds=max(t_sample, 1e-9),
        trainer_cpu_fraction=1.0,
        core_efficiency=efficiency,
    )
    params = {"oversubscription_overhead": kappa, "oversubscription_basis": "demand"}
    metadata = {
        "dataset": source.name,
        "cpus": cpus,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0]},
        "loadavg_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "config": {k: v for k, v in asdict(config).items() if k not in ("stage_settings", "model_settings")},
        "stage_settings": asdict(settings),
        "model_settings": asdict(config.model_settings),
        "costs": costs,
        "memory": memory,
        "contention": contention,
        "scaling": scaling,
        "fits": {"batch_overhead_seconds": batch_overhead, "prefetch_overhead_seconds": prefetch_overhead},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return profile, params, metadata


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m recgym.envs.pipeline.calibrate",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ml-latest-small", help="MovieLens name or path")
    parser.add_argument("--out", type=Path, default=Path("profile.json"), help="profile file to write")
    parser.add_argument("--core-budget", type=int, default=None, help="CPUs to use (default: all)")
    parser.add_argument("--memory-budget-gib", type=float, default=2.0, help="the profile's memory cap")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds per measured interval")
    parser.add_argument("--repeats", type=int, default=3, help="intervals per batch size")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 1024, 4096],
                        help="batch sizes of the cost measurement (two or more)")
    parser.add_argument("--compiled-batch-sizes", type=int, nargs="+", default=[2**k for k in range(6, 13)],
                        help="batch sizes the trainer compiles (the env's; each holds memory)")
    parser.add_argument("--max-workers", type=int, default=4, help="most workers per stage (contention, memory)")
    parser.add_argument("--scaling-seconds", type=float, default=1.0, help="seconds per isolated scaling run")
    parser.add_argument("--quick", action="store_true", help="short intervals, one repeat (CI, smoke tests)")
    args = parser.parse_args(argv)
    config = CalibrationConfig(
        dataset=args.dataset,
        core_budget=args.core_budget,
        memory_budget_gib=args.memory_budget_gib,
        batch_sizes=tuple(args.batch_sizes),
        compiled_batch_sizes=tuple(args.compiled_batch_sizes),
        interval_s=min(args.interval, 0.4) if args.quick else args.interval,
        repeats=1 if args.quick else args.repeats,
        scaling_seconds=min(args.scaling_seconds, 0.3) if args.quick else args.scaling_seconds,
        max_workers=args.max_workers,
    )
    start = time.perf_counter()
    profile, params, metadata = calibrate(config)
    metadata["command"] = "python -m recgym.envs.pipeline.calibrate " + " ".join(argv if argv is not None else sys.argv[1:])
    metadata["seconds"] = time.perf_counter() - start
    save_profile(args.out, profile, params, metadata)
    print(f"wrote {args.out} ({metadata['seconds']:.0f} s); profile:")
    print(json.dumps({f: getattr(profile, f) for f in profile.__dataclass_fields__} | params, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
