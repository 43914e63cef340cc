"""The throughput and memory model of a DLRM ingestion pipeline, as pure functions.

Every function takes the array namespace ``xp`` first: ``numpy`` (the optimum and batched
evaluations), ``jax.numpy`` (under ``jit``/``vmap``) or :mod:`recgym.core.pyscalar` (the single
environment, on Python floats). Per-env values broadcast over leading batch axes. The stage axis is
a Python sequence of :data:`~recgym.envs.pipeline.params.NUM_STAGES` per-stage values (see
:func:`stages`): each formula is written once, element-wise, and runs on floats, on NumPy arrays and
on JAX tracers alike.

The model (formulas and sources in ``docs/environments/pipeline.md``):

* stage ``i`` with ``c`` workers runs at ``c_eff / s_i`` samples/s, ``c_eff = 1 / (f + (1-f)/c)``
  (Amdahl); the read stage is further capped by storage bandwidth;
* ``C`` allocated workers on ``A`` available cores slow every stage by ``A / (C + kappa (C - A))``
  when ``C > A`` (time slicing; ``kappa = 0`` is the proportional slowdown). That is the
  ``"allocated"`` basis, for workers that always compete for a core. On the ``"demand"`` basis
  (workers that block when they have no input, as in the live pipeline), the slowdown is the
  cores' share of the CPU time the pipeline asks for, ``min(1, A / (D (1 + kappa max(C - B, 0) / B)))``,
  with ``D = min(lambda0, mu) * (sum_i s_i + phi / mu)`` busy cores at the unslowed rate (``phi``:
  the fraction of the trainer's time spent on the same cores — 1 for a CPU trainer, whose own
  rate then slows by the same factor) and ``kappa`` the extra CPU time per sample, per worker
  beyond the machine's ``B`` cores (its core budget) per core, that switching between more workers
  than cores costs;
* the pipeline produces at the bottleneck rate ``lambda = min_i capacity_i`` into a prefetch buffer
  of ``P`` batches drained by the trainer at ``mu(B)``; the delivered throughput is that of an
  M/M/1/K queue with ``K = P + 1``: ``X = min(lambda, mu) (1 - r^K) / (1 - r^(K+1))``,
  ``r = min(lambda, mu) / max(lambda, mu)``;
* memory is the trainer's, plus each worker's resident memory and in-flight elements, plus the
  shuffle buffer and the prefetch buffer; above the cap the trainer is OOM-killed.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from recgym.core import pyscalar

#: Whether a worker of each stage holds a whole batch in flight (the batch and prefetch stages)
#: rather than one sample (read .. shuffle); see :func:`inflight_elements`.
INFLIGHT_PER_BATCH: tuple[bool, ...] = (False, False, False, False, True, True)
#: Stage index of the read stage (I/O capped), the shuffle stage, the batch stage (which pays the
#: per-batch overhead) and the prefetch stage (whose elements are the prefetch buffer's).
READ_STAGE = 0
SHUFFLE_STAGE = 3
BATCH_STAGE = 4
PREFETCH_STAGE = 5


def stages(x) -> Sequence[Any]:
    """The stage axis of ``x`` as a sequence of per-stage values.

    A list or tuple is returned as is; a 1-D NumPy array (one environment) becomes Python numbers
    (for :mod:`recgym.core.pyscalar`); any other array (batched NumPy, JAX) becomes the slices
    ``x[..., i]`` of its last axis.
    """
    kind = type(x)
    if kind is tuple or kind is list:
        return x
    if kind is np.ndarray and x.ndim == 1:
        return x.tolist()
    return [x[..., i] for i in range(x.shape[-1])]


def per_env(x):
    """``x[..., None]``, to broadcast a per-env value against a stage axis (a 0-d value as is)."""
    return x if getattr(x, "ndim", 0) == 0 else x[..., None]


def entry(x, k: int):
    """``x[..., k]``; ``x[k]`` for a list, a tuple or a 1-d array (a scalar, not a 0-d array: arithmetic on
    scalars is several times cheaper, and under ``vmap`` JAX sees the same unbatched indexing)."""
    return x[k] if type(x) is list or type(x) is tuple or x.ndim == 1 else x[..., k]


def amdahl_speedup(xp, cores, serial_fraction):
    """Amdahl speedup of ``cores`` workers over one: ``1 / (f + (1 - f) / c)``.

    Args:
        xp: Array namespace.
        cores: Worker counts (any shape, > 0).
        serial_fraction: Serial fraction ``f`` in ``[0, 1)``, broadcastable to ``cores``.

    Returns:
        Speedups, ``1`` at one core, approaching ``1 / f`` as ``c`` grows.
    """
    # = 1 / (f + (1 - f) / c), in the form with the fewest operations.
    return cores / (serial_fraction * (cores - 1.0) + 1.0)


def oversubscription_factor(xp, total_cores, available_cores, overhead=0.0):
    """Slowdown of every stage when ``C`` workers share ``A < C`` cores.

    ``A / (C + kappa (C - A))`` when ``C > A`` (the OS time-slices the workers; ``kappa`` adds a
    context-switch cost per excess worker), else 1.

    Args:
        xp: Array namespace.
        total_cores: ``C``, total workers allocated.
        available_cores: ``A``, cores actually available (> 0).
        overhead: ``kappa >= 0``.

    Returns:
        Factor in ``(0, 1]``.
    """
    excess = xp.maximum(total_cores - available_cores, 0.0)
    return available_cores / (available_cores + (1.0 + overhead) * excess)


#: How oversubscription is counted (``PipelineParams.oversubscription_basis``): by the workers
#: allocated, or by the CPU time the pipeline demands.
OVERSUBSCRIPTION_BASES: tuple[str, ...] = ("allocated", "demand")


def demand_oversubscription_factor(xp, busy_cores, total_workers, available_cores, overhead=0.0, core_budget=None):
    """Slowdown when blocking workers share ``A`` cores by the CPU time they demand.

    ``min(1, A / (D (1 + kappa max(C - B, 0) / B)))``: the pipeline gets the fraction of its
    demand the cores can serve; every sample's CPU time grows by ``kappa`` per worker beyond the
    machine's ``B`` cores, per core (context switches between more workers than cores). ``B`` is
    the core budget, not ``A``: what neighbours take lowers the cores the pipeline gets, not the
    cost of its own switching (on the live pipeline, a ``kappa`` fitted against ``A`` swung with
    the neighbours' load from one calibration to the next).

    Args:
        xp: Array namespace.
        busy_cores: ``D``, the cores the pipeline would keep busy if nothing slowed it (> 0).
        total_workers: ``C``, workers allocated (the trainer included when it shares the cores).
        available_cores: ``A`` (> 0).
        overhead: ``kappa >= 0``.
        core_budget: ``B`` (> 0); defaults to ``A``.

    Returns:
        Factor in ``(0, 1]``.
    """
    cores = available_cores if core_budget is None else core_budget
    excess = xp.maximum(total_workers - cores, 0.0)
    return xp.minimum(available_cores / (busy_cores * (1.0 + overhead * excess / cores)), 1.0)


def cpu_slowdown(
    xp,
    basis: str,
    cores,
    seconds_per_sample,
    serial_fraction,
    io_samples_per_second,
    trainer_rate,
    trainer_cpu_fraction,
    available_cores,
    overhead=0.0,
    core_budget=None,
    core_efficiency=1.0,
):
    """The oversubscription factor of an allocation on either basis (see the module docstring).

    Args:
        xp: Array namespace.
        basis: One of :data:`OVERSUBSCRIPTION_BASES` (static).
        cores: Per-stage workers.
        seconds_per_sample: Per-stage seconds per sample (:func:`stage_seconds_per_sample`).
        serial_fraction: Per-stage Amdahl serial fractions.
        io_samples_per_second: ``(...)`` the read stage's storage ceiling.
        trainer_rate: ``(...)`` the trainer's unslowed samples/s (:func:`trainer_rate`).
        trainer_cpu_fraction: ``(...)`` fraction of the trainer's time on the pipeline's cores.
        available_cores: ``(...)`` cores available.
        overhead: ``kappa``.
        core_budget: ``(...)`` the machine's cores (the ``"demand"`` basis' switching cost counts
            the workers beyond them; default ``available_cores``).
        core_efficiency: ``(...)`` in ``(0, 1]``, the fraction of the machine's cores the
            pipeline keeps busy when it has more work than cores and the cores to itself
            (:attr:`~recgym.envs.pipeline.params.PipelineProfile.core_efficiency`): the pipeline
            runs on ``min(core_efficiency * core_budget, available_cores)`` cores — neighbours
            first fill the cores its hand-offs leave idle. 1 for a work-conserving pipeline.

    Returns:
        The factor every stage's capacity is multiplied by.
    """
    budget = available_cores if core_budget is None else core_budget
    available_cores = xp.minimum(core_efficiency * budget, available_cores)
    workers = sum(stages(cores)) + trainer_cpu_fraction
    if basis == "allocated":
        return oversubscription_factor(xp, workers, available_cores, overhead)
    unslowed = stage_capacities(xp, cores, seconds_per_sample, serial_fraction, 1.0, io_samples_per_second)
    offered = xp.minimum(bottleneck_rate(xp, unslowed), trainer_rate)
    busy = offered * (sum(stages(seconds_per_sample)) + trainer_cpu_fraction / trainer_rate)
    return demand_oversubscription_factor(xp, busy, workers, available_cores, overhead, core_budget)


def shared_trainer_rate(xp, trainer_rate, slowdown, trainer_cpu_fraction):
    """The trainer's rate when the fraction ``phi`` of its time runs on cores slowed by ``slowdown``:
    ``mu (1 - phi + phi sigma)`` (``mu`` itself for an accelerator trainer, ``phi = 0``)."""
    return trainer_rate * (1.0 - trainer_cpu_fraction + trainer_cpu_fraction * slowdown)


def stage_seconds_per_sample(xp, cpu_seconds, batch_size, batch_overhead_seconds) -> list:
    """Per-sample CPU seconds of each stage including the batch stage's per-batch overhead.

    Args:
        xp: Array namespace.
        cpu_seconds: Per-stage CPU seconds per sample of one worker (see :func:`stages`).
        batch_size: ``(...)`` batch size ``B``.
        batch_overhead_seconds: ``(...)`` per-batch seconds of the batch stage.

    Returns:
        Per-stage seconds per sample (a list); the batch stage adds ``overhead / B``.
    """
    out = list(stages(cpu_seconds))
    out[BATCH_STAGE] = out[BATCH_STAGE] + batch_overhead_seconds / batch_size
    return out


def stage_capacities(xp, cores, seconds_per_sample, serial_fraction, slowdown, io_samples_per_second) -> list:
    """Samples/s each stage can process with its workers (what it would deliver if unblocked).

    Args:
        xp: Array namespace.
        cores: Per-stage workers (float; see :func:`stages`).
        seconds_per_sample: Per-stage CPU seconds per sample of one worker.
        serial_fraction: Per-stage Amdahl serial fractions.
        slowdown: ``(...)`` oversubscription factor (see :func:`oversubscription_factor`).
        io_samples_per_second: ``(...)`` storage ceiling of the read stage.

    Returns:
        Per-stage capacities in samples/s (a list).
    """
    caps = [
        amdahl_speedup(xp, c, f) * slowdown / s
        for c, s, f in zip(stages(cores), stages(seconds_per_sample), stages(serial_fraction))
    ]
    caps[READ_STAGE] = xp.minimum(caps[READ_STAGE], io_samples_per_second)
    return caps


def bottleneck_rate(xp, capacities):
    """``min_i capacity_i``, the rate the pipeline produces at (``lambda``)."""
    caps = stages(capacities)
    if xp is pyscalar:
        return min(caps)
    return functools.reduce(xp.minimum, caps)


def trainer_rate(xp, batch_size, trainer_batch_seconds, trainer_sample_seconds):
    """Samples/s the trainer consumes at batch size ``B``: ``B / (t_batch + B t_sample)``."""
    return batch_size / (trainer_batch_seconds + batch_size * trainer_sample_seconds)


def buffered_throughput(xp, producer_rate, consumer_rate, capacity):
    """Throughput of a producer and a consumer coupled by a finite buffer (M/M/1/K).

    With ``r = min/max`` of the two rates and ``K`` the buffer capacity,
    ``X = min(lambda, mu) (1 - r^K) / (1 - r^(K+1))``; at ``r = 1`` this is ``K / (K + 1)`` of the
    common rate, and as ``K`` grows ``X`` approaches ``min(lambda, mu)``. Symmetric in the two rates.

    Args:
        xp: Array namespace.
        producer_rate: ``lambda``, samples/s (>= 0).
        consumer_rate: ``mu``, samples/s (> 0).
        capacity: ``K >= 1`` (float): buffered batches plus the one in service.

    Returns:
        Delivered samples/s.
    """
    slow = xp.minimum(producer_rate, consumer_rate)
    fast = xp.maximum(producer_rate, consumer_rate)
    # (1 - r^K) / (1 - r^(K+1)) through expm1 of K log r, accurate up to r = 1, where the ratio
    # tends to K / (K + 1); the 1e-7 shift keeps log r < 0 there (a relative change below 1e-6).
    log_ratio = xp.log(slow / fast + 1e-30) - 1e-7
    return slow * (xp.expm1(capacity * log_ratio) / xp.expm1((capacity + 1.0) * log_ratio))


def inflight_elements(xp, batch_size) -> list:
    """Per-stage samples one worker holds in flight at batch size ``B`` (1, or ``B`` for the batch
    and prefetch stages, see :data:`INFLIGHT_PER_BATCH`)."""
    return [batch_size if per_batch else 1.0 for per_batch in INFLIGHT_PER_BATCH]


def memory_gib(
    xp,
    cores,
    batch_size,
    prefetch,
    worker_memory_gib,
    element_gib,
    shuffle_buffer,
    trainer_memory_gib,
):
    """Host memory the trainer process uses (GiB) under an allocation.

    ``trainer + sum_i c_i (w_i + n_i e_i) + S e_shuffle + P B e_prefetch`` where ``n_i`` is the
    elements a worker holds in flight (one sample, or a whole batch for batch and prefetch).

    Args:
        xp: Array namespace.
        cores: Per-stage workers (float; see :func:`stages`).
        batch_size: ``(...)`` batch size.
        prefetch: ``(...)`` prefetch depth in batches.
        worker_memory_gib: Per-stage resident memory per worker.
        element_gib: Per-stage size of one buffered sample.
        shuffle_buffer: ``(...)`` elements in the shuffle buffer.
        trainer_memory_gib: ``(...)`` the trainer's own memory.

    Returns:
        ``(...)`` GiB.
    """
    elements = stages(element_gib)
    workers = sum([
        c * (w + e * n)
        for c, w, e, n in zip(stages(cores), stages(worker_memory_gib), elements, inflight_elements(xp, batch_size))
    ])
    buffers = shuffle_buffer * elements[SHUFFLE_STAGE] + prefetch * batch_size * elements[PREFETCH_STAGE]
    return trainer_memory_gib + workers + buffers


def buffer_memory_gib(xp, cores, batch_size, prefetch, element_gib, shuffle_buffer):
    """The buffers-only memory estimate tf.data's AUTOTUNE budgets (GiB).

    Counts in-flight elements, the shuffle buffer and the prefetch buffer, but neither the workers'
    resident memory nor the trainer's — the blind spot of AUTOTUNE's RAM rule.
    """
    elements = stages(element_gib)
    total = shuffle_buffer * elements[SHUFFLE_STAGE] + prefetch * batch_size * elements[PREFETCH_STAGE]
    for c, e, n in zip(stages(cores), elements, inflight_elements(xp, batch_size)):
        total = total + c * e * n
    return total
