"""The throughput and memory model against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recgym.envs.pipeline import dynamics, model
from recgym.envs.pipeline.params import make_params

f32 = np.float32


def test_amdahl_speedup_hand_values():
    # f = 0.1, c = 4: 1 / (0.1 + 0.9 / 4) = 1 / 0.325
    assert model.amdahl_speedup(np, f32(4.0), f32(0.1)) == pytest.approx(1 / 0.325, rel=1e-6)
    assert model.amdahl_speedup(np, f32(1.0), f32(0.3)) == pytest.approx(1.0)
    assert model.amdahl_speedup(np, f32(8.0), f32(0.0)) == pytest.approx(8.0)
    # Never beyond 1 / f however many cores.
    assert model.amdahl_speedup(np, f32(1e6), f32(0.05)) < 20.0


def test_oversubscription_slowdown_hand_values():
    assert model.oversubscription_factor(np, f32(24.0), f32(16.0)) == pytest.approx(16 / 24)
    # kappa = 0.5: 16 / (16 + 1.5 * 8) = 16 / 28
    assert model.oversubscription_factor(np, f32(24.0), f32(16.0), 0.5) == pytest.approx(16 / 28)
    assert model.oversubscription_factor(np, f32(12.0), f32(16.0), 0.5) == 1.0


def test_trainer_rate_hand_value():
    # B = 256, 2 ms per batch + 10 us per sample: 256 / 4.56 ms
    assert model.trainer_rate(np, f32(256.0), f32(2e-3), f32(10e-6)) == pytest.approx(256 / 4.56e-3, rel=1e-5)


def test_buffer_correction_hand_values():
    # M/M/1/K, lambda = 1, mu = 2, K = 1: p_K = (1 - 0.5) 0.5 / (1 - 0.25) = 1/3, X = 2/3.
    assert model.buffered_throughput(np, f32(1.0), f32(2.0), f32(1.0)) == pytest.approx(2 / 3, rel=1e-6)
    # Symmetric in the two rates.
    assert model.buffered_throughput(np, f32(2.0), f32(1.0), f32(1.0)) == pytest.approx(2 / 3, rel=1e-6)
    # lambda = mu: K / (K + 1) of the rate.
    assert model.buffered_throughput(np, f32(5.0), f32(5.0), f32(3.0)) == pytest.approx(5 * 3 / 4, rel=1e-6)
    # K = 2, r = 0.5: (1 - 0.25) / (1 - 0.125) = 6/7.
    assert model.buffered_throughput(np, f32(1.0), f32(2.0), f32(2.0)) == pytest.approx(6 / 7, rel=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    lam=st.floats(1.0, 1e6),
    mu=st.floats(1.0, 1e6),
    k=st.integers(1, 40),
)
def test_buffer_correction_bounds_and_monotone(lam, mu, k):
    x = float(model.buffered_throughput(np, f32(lam), f32(mu), f32(k)))
    x_more = float(model.buffered_throughput(np, f32(lam), f32(mu), f32(k + 1)))
    assert 0.0 < x <= min(lam, mu) * (1 + 1e-6)
    assert x_more >= x * (1 - 1e-6)
    assert x >= min(lam, mu) * k / (k + 1) * (1 - 1e-5)  # the worst case is equal rates


def _hand_world(**changes):
    params = make_params("steady", cost_jitter=0.0)
    world = dynamics.sample_world(np, params, np.full(dynamics.WORLD_UNIFORMS, 0.5, f32))
    fields = {
        **vars(world),
        "cpu_seconds": np.asarray([10e-6, 40e-6, 100e-6, 5e-6, 5e-6, 5e-6], f32),
        "serial_fraction": np.zeros(6, f32),
        "batch_overhead_seconds": f32(0.0),
        "io_samples_per_second": f32(1e9),
        "worker_memory_gib": np.asarray([0.5, 0.5, 1.0, 0.25, 0.25, 0.25], f32),
        "element_gib": np.full(6, 1e-6, f32),
        "shuffle_buffer": f32(1000.0),
        "trainer_memory_gib": f32(10.0),
        "memory_gib": f32(20.0),
        "core_budget": f32(16.0),
        "trainer_batch_seconds": f32(0.0),
        "trainer_sample_seconds": f32(1e-9),
    }
    fields.update(changes)
    return dynamics.PipelineWorld(**fields)


def _perf(world, cores, batch_log2=8, prefetch=4, overhead=0.0, after=False, neighbour=False):
    cond = dynamics.conditions(np, world, np.asarray(after), np.asarray(neighbour))
    return dynamics.performance(
        np, world, cond, np.asarray(cores, np.int32), np.int32(batch_log2), np.int32(prefetch), overhead
    )


def test_bottleneck_throughput_hand_value():
    # Capacities: 1/10us = 100k, 2/40us = 50k, 4/100us = 40k, 200k x3 -> transform (40k) bottleneck;
    # the trainer (1e9/s) is far faster, so the buffer correction is negligible.
    perf = _perf(_hand_world(), [1, 2, 4, 1, 1, 1])
    np.testing.assert_allclose(perf.capacities, [1e5, 5e4, 4e4, 2e5, 2e5, 2e5], rtol=1e-5)
    assert float(perf.throughput) == pytest.approx(4e4, rel=1e-4)


def test_read_stage_is_io_capped():
    perf = _perf(_hand_world(io_samples_per_second=f32(3e4)), [4, 2, 4, 1, 1, 1])
    assert float(perf.capacities[0]) == pytest.approx(3e4)
    assert float(perf.throughput) == pytest.approx(3e4, rel=1e-4)


def test_oversubscription_slows_every_stage_in_proportion():
    world = _hand_world(core_budget=f32(8.0))
    fits = _perf(world, [1, 2, 2, 1, 1, 1])  # 8 workers on 8 cores
    over = _perf(world, [2, 4, 4, 2, 2, 2])  # 16 workers on 8 cores: everything at half speed
    assert float(fits.slowdown) == 1.0 and float(over.slowdown) == pytest.approx(0.5)
    np.testing.assert_allclose(over.capacities, 2 * np.asarray(fits.capacities) * 0.5, rtol=1e-5)


def test_amdahl_scaling_in_stage_capacity():
    world = _hand_world(serial_fraction=np.full(6, 0.2, f32))
    perf = _perf(world, [1, 1, 5, 1, 1, 1])
    # transform: 1 / (0.2 + 0.8 / 5) = 1 / 0.36 speedup on 100 us
    assert float(perf.capacities[2]) == pytest.approx(1 / 0.36 / 100e-6, rel=1e-5)


def test_batch_overhead_amortised_over_batch_size():
    world = _hand_world(batch_overhead_seconds=f32(1e-3))
    small = _perf(world, [1] * 6, batch_log2=6)  # 5 us + 1 ms / 64
    big = _perf(world, [1] * 6, batch_log2=10)  # 5 us + 1 ms / 1024
    assert float(small.capacities[4]) == pytest.approx(1 / (5e-6 + 1e-3 / 64), rel=1e-5)
    assert float(big.capacities[4]) == pytest.approx(1 / (5e-6 + 1e-3 / 1024), rel=1e-5)


def test_memory_and_oom_threshold_hand_values():
    world = _hand_world()
    cores = [1, 2, 4, 1, 1, 1]
    # trainer 10 + workers (0.5 + 2*0.5 + 4*1 + 3*0.25 = 6.25) + in-flight elements
    # (1e-6 * (1 + 2 + 4 + 1) + 1e-6 * 256 * (1 + 1)) + shuffle 1000e-6 + prefetch 4 * 256 * 1e-6
    expected = 10 + 6.25 + 1e-6 * (8 + 512) + 1e-3 + 1e-6 * 1024
    perf = _perf(world, cores)
    assert float(perf.memory_gib) == pytest.approx(expected, rel=1e-6)
    below = _perf(_hand_world(memory_gib=f32(expected * 1.0001)), cores)
    above = _perf(_hand_world(memory_gib=f32(expected * 0.9999)), cores)
    assert not bool(below.oom) and float(below.throughput) > 0
    assert bool(above.oom) and float(above.throughput) == 0.0


def test_buffer_estimate_ignores_workers_and_trainer():
    world = _hand_world()
    c = np.asarray([1, 2, 4, 1, 1, 1], f32)
    est = model.buffer_memory_gib(np, c, f32(256.0), f32(4.0), world.element_gib, world.shuffle_buffer)
    assert float(est) == pytest.approx(1e-6 * (8 + 512) + 1e-3 + 1e-6 * 1024, rel=1e-6)


def test_events_change_conditions():
    world = _hand_world(
        event_cost_factor=np.asarray([1, 1, 2.5, 1, 1, 1], f32),
        event_core_factor=f32(0.5),
        event_memory_factor=f32(0.75),
        neighbour_cores=f32(6.0),
    )
    before = dynamics.conditions(np, world, np.asarray(False), np.asarray(False))
    after = dynamics.conditions(np, world, np.asarray(True), np.asarray(True))
    assert float(after.cpu_seconds[2]) == pytest.approx(2.5 * float(before.cpu_seconds[2]))
    assert float(after.available_cores) == pytest.approx(16 * 0.5 - 6)
    assert float(after.memory_cap_gib) == pytest.approx(15.0)
