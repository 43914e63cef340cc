"""recgym.evaluation: the harness on the synthetic MovieLens world (determinism, paths, bad inputs)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recgym.envs.movielens import MOVIELENS_COLUMNS
from recgym.evaluation import (
    BASELINES,
    GENERIC_COLUMNS,
    EvaluationResult,
    evaluate,
    make_eval_env,
    mean_ci,
    paired_ratio_ci,
)
from recgym.policies import MostPopularPolicy, RandomPolicy


@pytest.fixture(scope="module")
def vec_env():
    return make_eval_env("RecGym-MovieLens-v0", num_envs=16, dataset="synthetic")


@pytest.fixture(scope="module")
def single_env():
    return make_eval_env("RecGym-MovieLens-v0", num_envs=None, dataset="synthetic")


def test_result_table_is_complete_and_sane(vec_env):
    result = evaluate(BASELINES["oracle-greedy"], vec_env, 20, seed=3)
    assert isinstance(result, EvaluationResult) and result.policy == "oracle-greedy"
    table = result.episodes
    assert list(table["episode"]) == list(range(20))
    assert list(table["seed"]) == [3 + e for e in range(20)]
    for col in GENERIC_COLUMNS + MOVIELENS_COLUMNS:
        assert col in table
    assert (table["length"] >= 1).all() and (table["length"] <= 200).all()
    assert ((table["ctr"] >= 0) & (table["ctr"] <= 1)).all()
    # Every episode ends, by the user leaving or the time limit, exactly one of the two.
    assert (table["terminated"] ^ table["truncated"]).all()
    # Single items: NDCG@1 of the oracle's own choice is 1; no slate, no intra-list diversity.
    np.testing.assert_allclose(table["ndcg"], 1.0)
    assert table["intra_list_diversity"].isna().all()
    assert 0 < result.coverage <= 1
    # Users cycle through the held-out population.
    pool = np.asarray(vec_env.unwrapped.params.world.user_pool)
    np.testing.assert_array_equal(table["user"], pool[np.arange(20) % len(pool)])
    summary = result.summary()
    assert set(summary) == set(GENERIC_COLUMNS + MOVIELENS_COLUMNS)
    mean, half = summary["return"]
    assert mean == pytest.approx(table["return"].mean()) and half > 0


def test_sampled_users_come_from_the_population(vec_env):
    table = evaluate(BASELINES["most-popular"], vec_env, 16, seed=0, user_order="sample").episodes
    pool = np.asarray(vec_env.unwrapped.params.world.user_pool)
    assert np.isin(table["user"], pool).all()
    assert table["user"].nunique() > 1


def test_same_seed_same_table_different_seed_differs(vec_env):
    a = evaluate(BASELINES["random"], vec_env, 12, seed=5).episodes
    b = evaluate(BASELINES["random"], vec_env, 12, seed=5).episodes
    pd.testing.assert_frame_equal(a, b)
    c = evaluate(BASELINES["random"], vec_env, 12, seed=6).episodes
    assert not np.array_equal(a["return"], c["return"])


def test_single_env_and_vector_env_give_the_same_episodes(vec_env, single_env):
    # 20 episodes on 16 envs: a full wave then a partial one, against one env at a time.
    vec = evaluate(BASELINES["boredom-aware"], vec_env, 20, seed=11).episodes
    one = evaluate(BASELINES["boredom-aware"], single_env, 20, seed=11).episodes
    np.testing.assert_array_equal(one["user"], vec["user"])
    np.testing.assert_array_equal(one["length"], vec["length"])
    np.testing.assert_array_equal(one["terminated"], vec["terminated"])
    np.testing.assert_allclose(one["return"], vec["return"], rtol=1e-4)
    np.testing.assert_allclose(one["ndcg"], vec["ndcg"], rtol=1e-4)


def test_slates_score_ndcg_and_intra_list_diversity():
    env = make_eval_env("RecGym-MovieLens-v0", num_envs=8, dataset="synthetic", slate_size=4)
    oracle = evaluate(BASELINES["oracle-greedy"], env, 8, seed=0).episodes
    np.testing.assert_allclose(oracle["ndcg"], 1.0)
    rand = evaluate(BASELINES["random"], env, 8, seed=0, ndcg_k=2).episodes
    assert ((rand["ndcg"] > 0) & (rand["ndcg"] < 1)).all()
    assert ((rand["intra_list_diversity"] >= 0) & (rand["intra_list_diversity"] <= 1)).all()


def test_candidate_mode_ranks_only_the_retrieved_candidates():
    kwargs = {"dataset": "synthetic", "n_candidates": 20, "slate_size": 3}
    vec = make_eval_env("RecGym-MovieLens-v0", num_envs=6, **kwargs)
    oracle = evaluate(BASELINES["oracle-greedy"], vec, 6, seed=2)
    # The ideal slate is the best of the candidates, which the oracle serves.
    np.testing.assert_allclose(oracle.episodes["ndcg"], 1.0)
    single = make_eval_env("RecGym-MovieLens-v0", num_envs=None, **kwargs)
    again = evaluate(BASELINES["oracle-greedy"], single, 6, seed=2)
    np.testing.assert_array_equal(again.episodes["length"], oracle.episodes["length"])
    np.testing.assert_allclose(again.episodes["return"], oracle.episodes["return"], rtol=1e-4)
    popular = evaluate(BASELINES["most-popular"], vec, 6, seed=2).episodes
    assert ((popular["ndcg"] > 0) & (popular["ndcg"] <= 1)).all()


def test_ready_policy_objects_and_custom_names(vec_env):
    world = vec_env.unwrapped.world
    policy = MostPopularPolicy(world.item_popularity)
    result = evaluate(policy, vec_env, 4, seed=0, name="pop")
    assert result.policy == "pop" and len(result.episodes) == 4


def test_bad_inputs(vec_env):
    with pytest.raises(ValueError, match="n_episodes"):
        evaluate(BASELINES["random"], vec_env, 0)
    with pytest.raises(ValueError, match="seed"):
        evaluate(BASELINES["random"], vec_env, 2, seed=-1)
    with pytest.raises(ValueError, match="user_order"):
        evaluate(BASELINES["random"], vec_env, 2, user_order="shuffle")
    with pytest.raises(ValueError, match="ndcg_k"):
        evaluate(BASELINES["random"], vec_env, 2, ndcg_k=2)
    with pytest.raises(TypeError, match="no episode metrics registered"):
        evaluate(lambda ctx: RandomPolicy(2), object(), 2)
    with pytest.raises(TypeError, match="unexpected keyword|ndcg_cutoff"):
        evaluate(BASELINES["random"], vec_env, 2, ndcg_cutoff=1)


def test_mean_ci_and_paired_ratio_ci_by_hand():
    mean, half = mean_ci(np.array([1.0, 2.0, 3.0]))
    assert mean == 2.0 and half == pytest.approx(4.302653 * 1.0 / math.sqrt(3), rel=1e-5)
    assert math.isnan(mean_ci(np.array([1.0]))[1])
    control = np.array([1.0, 2.0, 3.0, 4.0])
    ratio, low, high = paired_ratio_ci(2.0 * control, control)
    assert (ratio, low, high) == pytest.approx((2.0, 2.0, 2.0))
    treatment = np.array([1.5, 2.0, 3.5, 4.0])
    ratio, low, high = paired_ratio_ci(treatment, control)
    resid = treatment - ratio * control
    se = resid.std(ddof=1) / (2.0 * control.mean())
    assert ratio == pytest.approx(1.1)
    assert high - ratio == pytest.approx(3.182446 * se, rel=1e-5)
    assert ratio - low == pytest.approx(high - ratio)
    with pytest.raises(ValueError, match="paired"):
        paired_ratio_ci(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="positive"):
        paired_ratio_ci(np.ones(3), -np.ones(3))


def test_a_wave_ends_with_its_last_scored_episode(vec_env):
    """The last wave's spare envs (episodes >= n_episodes) are not stepped on for their own sake:
    the harness stops each wave when its scored episodes have all ended."""
    calls = []

    class Counting(RandomPolicy):
        def act_batch(self, observations, infos):
            calls.append(1)
            return super().act_batch(observations, infos)

    n_envs = vec_env.unwrapped.num_envs
    n_episodes = n_envs + 1  # a full wave, then one scored episode beside n_envs - 1 spare ones
    result = evaluate(Counting(vec_env.unwrapped.params.n_items), vec_env, n_episodes, seed=4)
    lengths = result.episodes["length"].to_numpy()
    assert len(calls) == lengths[:n_envs].max() + lengths[n_envs]
    # and the scored episodes are those of a run where every env is scored
    full = evaluate(RandomPolicy(vec_env.unwrapped.params.n_items), vec_env, 2 * n_envs, seed=4)
    pd.testing.assert_frame_equal(result.episodes, full.episodes.iloc[:n_episodes])
