"""The calibration: its fits recover known parameters, and the command writes a usable profile."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import recgym  # noqa: F401  (registers the ids)
from recgym.envs.pipeline import calibrate
from recgym.envs.pipeline.live import Allocation
from recgym.envs.pipeline.live.env import live_params
from recgym.envs.pipeline.params import PipelineProfile, load_profile


@given(st.floats(1e-8, 1e-5), st.floats(0.0, 1e-3))
@settings(max_examples=30, deadline=None)
def test_the_per_batch_fit_recovers_both_terms(per_sample, per_batch):
    sizes = [64, 256, 1024, 4096]
    a, b = calibrate._fit_inverse(sizes, [per_sample + per_batch / s for s in sizes])
    assert a == pytest.approx(per_sample, rel=1e-6, abs=1e-12)
    assert b == pytest.approx(per_batch, rel=1e-6, abs=1e-12)


@given(st.floats(0.0, 0.2), st.lists(st.floats(0.0, 1.5), min_size=4, max_size=4))
@settings(max_examples=30, deadline=None)
def test_the_contention_fit_recovers_kappa_whatever_other_programs_take(kappa, others):
    rows = [{"workers": workers, "other_cores": other,
             "cpu_seconds_per_sample": 4e-6 * (1 + kappa * max(workers + 1 - 2, 0) / 2)}
            for workers, other in zip((6, 12, 18, 24), others)]
    assert calibrate.fit_contention(rows, 2) == pytest.approx(kappa, abs=1e-9)


@given(st.floats(0.3, 0.9), st.lists(st.floats(0.0, 0.15), min_size=8, max_size=8))
@settings(max_examples=30, deadline=None)
def test_the_core_efficiency_fit_reads_the_cores_used_while_cores_stood_idle(efficiency, others):
    """Rows of 2+ workers per stage with idle cores: the pipeline used efficiency x cores; one
    worker per stage (the rows of 6 workers) may be demand-limited and is left out."""
    rows = [{"workers": workers, "other_cores": other, "cpu_seconds_per_sample": 5e-6,
             "pipeline_cores": (efficiency if workers >= 12 else 0.1) * 2}
            for workers, other in zip((6, 12, 18, 24, 24, 18, 12, 6), others)]
    assert calibrate.fit_core_efficiency(rows, 2) == pytest.approx(efficiency, rel=1e-9)


def test_the_core_efficiency_fit_reads_one_when_no_core_stood_idle():
    # profile metadata written before the field existed: no pipeline_cores
    assert calibrate.fit_core_efficiency([{"workers": 12, "other_cores": 0.0, "cpu_seconds_per_sample": 5e-6}], 2) == 1.0
    # neighbours filled every idle moment: the pipeline's gaps cannot be seen
    rows = [{"workers": 12, "other_cores": 0.7, "pipeline_cores": 1.3, "cpu_seconds_per_sample": 5e-6}]
    assert calibrate.fit_core_efficiency(rows, 2) == 1.0
    # rows with and without idle cores: only the former count
    rows += [{"workers": 18, "other_cores": 0.05, "pipeline_cores": 1.5, "cpu_seconds_per_sample": 5e-6}]
    assert calibrate.fit_core_efficiency(rows, 2) == pytest.approx(0.75)


@given(st.lists(st.floats(0.0, 0.5), min_size=6, max_size=6))
@settings(max_examples=30, deadline=None)
def test_the_scaling_fit_recovers_amdahl_fractions(fractions):
    counts = [1, 2, 3, 4]
    # c processes with serial fraction f deliver c / (1 + f (c - 1)) times one's rate on c cores:
    # their CPU efficiency is 1 / (1 + f (c - 1)).
    cpu_rates = [[1e6 / (1 + f * (c - 1)) for c in counts] for f in fractions]
    np.testing.assert_allclose(calibrate.fit_scaling(counts, cpu_rates, cores=4), fractions, atol=1e-9)


def test_the_memory_fit_recovers_base_and_workers():
    per_worker = np.array([1.0, 2.0, 6.0, 3.0, 2.0, 2.0]) / 1024  # GiB
    shuffle_share = 0.5 / 1024
    uss = per_worker.copy()
    uss[3] += shuffle_share  # a shuffle worker's unique memory holds its share of the buffer
    memory = {"workers": [1, 4], "total_gib": [0.4 + per_worker.sum(), 0.4 + 4 * per_worker.sum()],
              "worker_uss_gib": uss.tolist()}
    base, workers = calibrate.fit_memory(memory, shuffle_share)
    assert base == pytest.approx(0.4)
    np.testing.assert_allclose(workers, per_worker, rtol=1e-6)


def _params():
    profile = PipelineProfile(
        cpu_seconds_per_sample=(1e-7, 3e-7, 8e-7, 4e-7, 3e-7, 2e-7), serial_fraction=(0.0,) * 6,
        worker_memory_gib=(0.004,) * 6, element_kib=(0.01, 0.01, 0.11, 0.11, 0.11, 0.11),
        batch_overhead_seconds=2e-4, core_budget=2, memory_gib=0.55, trainer_memory_gib=0.45, shuffle_buffer=8192,
        trainer_batch_seconds=5e-4, trainer_sample_seconds=1.6e-6, trainer_cpu_fraction=1.0)
    return live_params(2, 0.55, "absolute", profile, max_cores_per_stage=4, min_batch_log2=6, max_batch_log2=12,
                       max_prefetch=8, oversubscription_basis="demand", oversubscription_overhead=0.02)


def test_the_simulated_optimum_is_what_predict_says_and_beats_random_allocations():
    params = _params()
    best, throughput = calibrate.simulated_optimum(params)
    assert calibrate.predict(params, best).throughput == pytest.approx(throughput, rel=1e-5)
    rng = np.random.default_rng(0)
    for _ in range(50):
        allocation = Allocation(tuple(int(c) for c in rng.integers(1, 5, 6)), 2 ** int(rng.integers(6, 13)),
                                int(rng.integers(0, 9)))
        assert calibrate.predict(params, allocation).throughput <= throughput * (1 + 1e-6)
    # Fewer free cores, less throughput.
    assert calibrate.predict(params, best, available_cores=1.0).throughput < throughput
    with pytest.raises(ValueError, match="powers of two"):
        calibrate.predict(params, Allocation((1,) * 6, 100, 1))


def test_the_command_writes_a_profile_the_simulator_runs(source, tmp_path, no_orphans):
    out = tmp_path / "profile.json"
    assert calibrate.main(["--dataset", "ml-latest-small", "--out", str(out), "--quick", "--batch-sizes", "64", "128",
                           "--compiled-batch-sizes", "64", "128",
                           "--max-workers", "2", "--interval", "0.2", "--scaling-seconds", "0.1"]) == 0
    loaded = load_profile(out)
    assert loaded.params["oversubscription_basis"] == "demand"
    assert loaded.profile.trainer_cpu_fraction == 1.0 and loaded.profile.core_budget >= 1
    assert 0.05 <= loaded.profile.core_efficiency <= 1.0
    assert all("pipeline_cores" in row for row in loaded.metadata["contention"]["rows"])
    assert all(c > 0 for c in loaded.profile.cpu_seconds_per_sample)
    assert {"costs", "contention", "memory", "scaling", "command"} <= set(loaded.metadata)
    env = gym.make("RecGym-Pipeline-v0", profile=out, max_cores_per_stage=4, min_batch_log2=6, max_batch_log2=7,
                   initial_batch_log2=6, track_optimum=True)
    obs, info = env.reset(seed=0)
    assert info["optimum"] > 0
