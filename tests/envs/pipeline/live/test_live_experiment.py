"""benchmarks.experiments.pipeline_live: the allocations it draws and the figures its tables report.

The experiment itself measures the live pipeline (minutes); these tests check its arithmetic on
made-up measurements, so a wrong error, rank correlation or ratio in the tables fails here.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from benchmarks.common import RunContext
from benchmarks.experiments import EXPERIMENTS, pipeline_live
from recgym.envs.pipeline.live import Allocation
from recgym.envs.pipeline.params import PipelineProfile


def test_registered():
    assert EXPERIMENTS["pipeline_live"] == "benchmarks.experiments.pipeline_live"


def test_random_allocations_stay_in_the_space_and_heavy_ones_in_its_upper_half():
    rng = np.random.default_rng(0)
    for heavy in (False, True):
        draws = [pipeline_live.random_allocation(rng, heavy) for _ in range(200)]
        cores = np.asarray([a.cores for a in draws])
        low = pipeline_live.MAX_CORES // 2 + 1 if heavy else 1
        assert cores.min() == low and cores.max() == pipeline_live.MAX_CORES
        batches = {a.batch_size for a in draws}
        assert batches == {2**k for k in range(pipeline_live.MIN_BATCH_LOG2, pipeline_live.MAX_BATCH_LOG2 + 1)}
        assert {a.prefetch for a in draws} == set(range(pipeline_live.MAX_PREFETCH + 1))
    # every heavy allocation has at least 6 * 3 = 18 workers: the memory-heavy corner
    assert min(sum(pipeline_live.random_allocation(rng, True).cores) for _ in range(50)) >= pipeline_live.HEAVY_WORKERS


def test_tables_report_the_error_rank_correlation_and_ratio_of_the_measurements(tmp_path):
    rng = np.random.default_rng(1)
    measured = rng.uniform(50e3, 400e3, size=10)
    predicted = measured * rng.uniform(0.7, 1.3, size=10)
    validity = [
        {"allocation": Allocation((1 + i % 4,) * 6, 256, i % 3), "throughput": float(m), "memory_gib": 0.6,
         "other_cores": 0.5, "pipeline_cores": 1.5, "available_cores": 1.5, "predicted": float(p),
         "predicted_nominal": float(p) * 1.1, "predicted_memory_gib": 0.66}
        for i, (m, p) in enumerate(zip(measured, predicted))
    ]
    profile = PipelineProfile(core_budget=2, memory_gib=2.0, trainer_memory_gib=0.5, trainer_cpu_fraction=1.0)
    params = {"oversubscription_overhead": 0.04, "oversubscription_basis": "demand"}
    sim_best, best = Allocation((1,) * 6, 4096, 8), Allocation((2,) * 6, 2048, 8)
    baselines = [{"baseline": "oracle", "live": {"efficiency": 0.95, "crashed": "-"},
                  "simulated": {"efficiency": 1.0, "crashed": "-"}}]
    ctx = RunContext(quick=True, out_dir=tmp_path, dataset="ml-latest-small", synthetic=False, seed=0)
    calibration, validity_table, sim_to_real, baseline_table = pipeline_live._results(
        ctx, pipeline_live.QUICK, profile, params, 0.7, validity, sim_best, 500e3, 270e3, best, 300e3, 12, baselines,
        {"start": (1.0, 1.0, 1.0)}, 10.0)
    error = np.median(np.abs(predicted - measured) / measured)
    rho = stats.spearmanr(predicted, measured).statistic
    assert f"median |rel. error| {error:.1%}" in validity_table.title
    assert f"Spearman {rho:.3f}" in validity_table.title
    assert len(validity_table.rows) == 10 and (tmp_path / "pipeline_live_validity.png").stat().st_size > 0
    # memory-heavy: 3 or 4 workers per stage (18 or 24 workers), rows 2, 3, 6 and 7
    assert sum(r["kind"] == "memory-heavy" for r in validity_table.rows) == 4
    assert "0.90x" in sim_to_real.title  # 270k / 300k
    assert baseline_table.rows == [{"baseline": "oracle", "live efficiency": "0.950", "live crash": "-",
                                    "simulated efficiency": "1.000", "simulated crash": "-"}]
    assert [r["stage"] for r in calibration.rows] == ["read", "parse", "transform", "shuffle", "batch", "prefetch"]


@pytest.mark.parametrize(("oom", "cell"), [(False, "123.5"), (True, "OOM (0.900 GiB predicted)")])
def test_a_predicted_oom_reads_as_such(oom, cell):
    class Performance:
        throughput, memory_gib = (0.0 if oom else 123_456.0), 0.9

    Performance.oom = oom
    assert pipeline_live._simulated_cell(Performance) == cell
