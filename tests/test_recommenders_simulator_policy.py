"""The recommenders as simulator policies: logged-data fitting, episode fold-in, no hidden state."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recgym.evaluation import BASELINES, evaluate, make_eval_env
from recgym.recommenders import ItemKNN, MatrixFactorization, Popularity
from recgym.recommenders.simulator_policy import (
    RECOMMENDER_POLICIES,
    RecommenderPolicy,
    recommender_policy,
    world_training_data,
)


@pytest.fixture(scope="module")
def vec_env():
    return make_eval_env("RecGym-MovieLens-v0", num_envs=8, dataset="synthetic")


def test_training_data_is_the_logged_history_of_train_users_only(vec_env):
    world = vec_env.unwrapped.world
    ratings, items = world_training_data(world)
    assert set(ratings["user_id"]) <= set(world.train_users.tolist())
    assert not set(ratings["user_id"]) & set(world.test_users.tolist())
    logged = world.logged_ratings
    expected = logged[np.isin(logged["user"], world.train_users)]
    assert len(ratings) == len(expected)
    assert len(items) == len(world.item_ids) and {"title", "genres", "tags"} <= set(items)


def test_policy_folds_in_the_episode_feedback_and_ignores_hidden_info():
    ratings = pd.DataFrame(
        {"user_id": [0, 0, 1, 1, 2], "item_id": [0, 1, 1, 2, 3], "rating": [5.0, 4, 4, 5, 1]}
    )
    model = ItemKNN(implicit=True, shrinkage=0.0).fit(ratings, pd.DataFrame(index=range(5)))
    policy = RecommenderPolicy(model, n_items=5)
    policy.reset(num_envs=2, seed=0)
    # Step 0 (reset info): cold users get the popularity fallback.
    first = policy.act_batch(np.zeros((2, 1)), {"user": np.array([7, 8])})
    assert first.tolist() == [1, 1]
    # Env 0 consumed item 0 (rating 5); env 1 clicked nothing. Hidden keys must not matter.
    info = {
        "clicked_item": np.array([0, -1]),
        "rating": np.array([5.0, 0.0]),
        "true_utility": np.array([[99.0], [-99.0]]),
        "satiation": np.ones((2, 3)),
    }
    scores = policy.scores(np.zeros((2, 1)), info)
    assert policy.history_items == [[0], []]
    np.testing.assert_allclose(scores[0], model.score_history([0], [5.0]))
    np.testing.assert_allclose(scores[1], model.score_history([]))
    hidden_free = {k: info[k] for k in ("clicked_item", "rating")}
    policy.reset(num_envs=2, seed=0)
    policy.observe(hidden_free)
    np.testing.assert_array_equal(policy.scores(np.zeros((2, 1)), {}), scores)
    # A new episode forgets the history.
    policy.begin_episode(np.array([True, False]))
    assert policy.history_items == [[], []]


def test_policy_rejects_a_mismatched_or_unfitted_model():
    with pytest.raises(ValueError, match="fitted"):
        RecommenderPolicy(Popularity(), n_items=3)
    model = Popularity().fit(pd.DataFrame({"user_id": [0], "item_id": [2]}))
    with pytest.raises(ValueError, match="n_items=5"):
        RecommenderPolicy(model, n_items=5)


def test_popularity_policy_equals_the_most_popular_baseline(vec_env):
    # Popularity by count on the train users' logged ratings IS the harness's logged popularity.
    ours = evaluate(recommender_policy(Popularity, "pop"), vec_env, 8, seed=1)
    theirs = evaluate(BASELINES["most-popular"], vec_env, 8, seed=1)
    np.testing.assert_array_equal(ours.episodes["return"], theirs.episodes["return"])


def test_every_recommender_policy_runs_deterministically(vec_env):
    for name, factory in RECOMMENDER_POLICIES.items():
        a = evaluate(factory, vec_env, 8, seed=2, name=name)
        b = evaluate(factory, vec_env, 8, seed=2, name=name)
        np.testing.assert_array_equal(a.episodes["return"], b.episodes["return"])
        assert a.policy == name and np.isfinite(a.episodes["return"]).all()


def test_mf_policy_learns_from_feedback_beyond_popularity(vec_env):
    """Folding in the episode's ratings must beat serving the same non-personalised list."""
    mf = evaluate(recommender_policy(MatrixFactorization, "mf"), vec_env, 32, seed=0)
    pop = evaluate(BASELINES["most-popular"], vec_env, 32, seed=0)
    assert mf.episodes["return"].mean() > pop.episodes["return"].mean()


def test_new_collaborative_filtering_policies_are_registered_and_fold_in_clicks(vec_env):
    from benchmarks.experiments.recommenders_offline import TUNED_KNN
    from recgym.evaluation import PolicyContext
    from recgym.recommenders import EASE

    assert {"EASE^R", "item-kNN (tuned)", "SLIM"} <= set(RECOMMENDER_POLICIES)
    world = vec_env.unwrapped.world
    ctx = PolicyContext(vec_env.unwrapped, world, len(world.item_ids), None, 8, seed=0)
    knn = RECOMMENDER_POLICIES["item-kNN (tuned)"](ctx).recommender
    assert {k: getattr(knn.config, k) for k in TUNED_KNN} == TUNED_KNN  # one tuned config
    ease = RECOMMENDER_POLICIES["EASE^R"](ctx)
    assert isinstance(ease.recommender, EASE) and ease.recommender.n_items == ctx.n_items
    # A short episode through the harness: folding in the clicks must beat random serving.
    ours = evaluate(RECOMMENDER_POLICIES["EASE^R"], vec_env, 16, seed=0, name="EASE^R")
    rand = evaluate(BASELINES["random"], vec_env, 16, seed=0)
    assert ours.policy == "EASE^R" and np.isfinite(ours.episodes["return"]).all()
    assert ours.episodes["return"].mean() > rand.episodes["return"].mean()
