"""benchmarks.tuner_diagnosis: the breakdown adds up, and the oracle's steady state has nothing to fix."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.tuner_diagnosis import (
    PHASES,
    diagnose,
    knob_breakdown,
    phase_breakdown,
    run_episodes,
)
from recgym.envs.pipeline.baselines import make_baseline


def oracle(params):
    return make_baseline("oracle", params)


def static_even(params):
    return make_baseline("static-even", params)


@pytest.mark.parametrize("factory", [oracle, static_even])
def test_the_phase_losses_add_up_to_the_shortfall_of_the_mean(factory):
    record = run_episodes(factory, "random", "absolute", [500_000, 500_001, 500_002])
    rows = phase_breakdown(record)
    assert len(rows) == 3 * len(PHASES)
    total = sum(row["loss"] for row in rows)
    assert total == pytest.approx(1.0 - record["efficiency"].mean(), abs=1e-9)
    assert sum(row["share of steps"] for row in rows) == pytest.approx(1.0)


def test_the_oracle_holds_the_optimum_in_the_steady_state_and_static_even_does_not():
    knobs = knob_breakdown(run_episodes(oracle, "steady", "absolute", [500_000, 500_001]))
    assert knobs["efficiency"] == pytest.approx(1.0, abs=1e-4)
    for fix in ("fix_prefetch", "fix_workers", "fix_batch"):
        assert knobs[fix] == pytest.approx(1.0, abs=1e-4)
    assert all(k["mean |difference|"] == 0 for k in knobs["knobs"].values())
    even = knob_breakdown(run_episodes(static_even, "steady", "absolute", [500_000, 500_001]))
    assert even["efficiency"] < 0.6
    # The optimum's workers (with the deepest prefetch that fits) close most of static-even's gap.
    assert even["fix_workers"] > even["efficiency"] + 0.3
    assert np.isfinite(even["knobs"]["total workers"]["mean difference"])


def test_the_diagnosis_refuses_the_held_out_seeds():
    with pytest.raises(ValueError, match="validation seeds"):
        diagnose(oracle, "absolute", random_pipelines=2, scenario_seeds=0, seed=999_999)  # reaches 1,000,000
