"""RecGym-Pipeline in the evaluation harness: make_eval_env, PipelineMetrics, single vs vector."""

from __future__ import annotations

import numpy as np
import pytest

from recgym.envs.pipeline import HELD_OUT_SEED_START, PipelineVectorOptimum
from recgym.envs.pipeline.baselines import make_baseline
from recgym.envs.pipeline.evaluation import PIPELINE_COLUMNS
from recgym.evaluation import evaluate, make_eval_env


def _oracle(ctx):
    return make_baseline("oracle", ctx.params)


def test_make_eval_env_adds_the_optimum_instrumentation():
    vec = make_eval_env("RecGym-Pipeline-v0", num_envs=3, scenario="drift")
    single = make_eval_env("RecGym-Pipeline-v0", num_envs=None, scenario="drift")
    assert isinstance(vec, PipelineVectorOptimum)
    assert "PipelineOptimum" in str(single)  # gym.make adds its checker wrappers around it
    vec.close()
    single.close()


def test_single_and_vector_envs_score_the_same_episodes():
    kwargs = {"scenario": "machine-change", "action_mode": "absolute"}
    vec = make_eval_env("RecGym-Pipeline-v0", num_envs=3, **kwargs)
    single = make_eval_env("RecGym-Pipeline-v0", num_envs=None, **kwargs)
    a = evaluate(_oracle, vec, 4, seed=HELD_OUT_SEED_START)  # two waves, the second with a spare env
    b = evaluate(_oracle, single, 4, seed=HELD_OUT_SEED_START)
    assert a.metric_columns == ("return", "length", *PIPELINE_COLUMNS)
    assert a.episodes["seed"].tolist() == [HELD_OUT_SEED_START + e for e in range(4)]
    for column in ("return", "efficiency", "efficiency_before_change", "efficiency_after_change", "oom"):
        np.testing.assert_allclose(a.episodes[column], b.episodes[column], rtol=1e-6, err_msg=column)
    # the oracle follows the optimum of the conditions just seen: near 1 outside the change step
    assert a.episodes["efficiency"].min() > 0.9
    assert (a.episodes["oom"] == 0).all()


def test_metrics_follow_their_definitions():
    env = make_eval_env("RecGym-Pipeline-v0", num_envs=None, scenario="memory-tight", action_mode="absolute")
    result = evaluate(lambda ctx: make_baseline("all-cores", ctx.params), env, 2, seed=HELD_OUT_SEED_START)
    table = result.episodes
    # an OOM crash ends the episode; its remaining steps count 0 in the horizon mean
    crashed = table["oom"] == 1.0
    assert (table.loc[crashed, "terminated"]).all()
    assert (table.loc[crashed, "length"] < result.settings["horizon"]).all()
    assert result.settings["change_step"] == 50


def test_an_env_without_the_optimum_gets_a_clear_error():
    env = make_eval_env("RecGym-Pipeline-v0", num_envs=2, track_optimum=False)
    with pytest.raises(ValueError, match="track_optimum=True"):
        evaluate(lambda ctx: make_baseline("static-even", ctx.params), env, 2)
