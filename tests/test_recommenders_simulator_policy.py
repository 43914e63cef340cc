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
    base = vec_env.unwrapped
    ctx = PolicyContext(env=base, params=base.params, num_envs=8, seed=0, world=world,
                        n_items=len(world.item_ids), slate_size=None)
    knn = RECOMMENDER_POLICIES["item-kNN (tuned)"](ctx).recommender
    assert {k: getattr(knn.config, k) for k in TUNED_KNN} == TUNED_KNN  # one tuned config
    ease = RECOMMENDER_POLICIES["EASE^R"](ctx)
    assert isinstance(ease.recommender, EASE) and ease.recommender.n_items == ctx.n_items
    # A short episode through the harness: folding in the clicks must beat random serving.
    ours = evaluate(RECOMMENDER_POLICIES["EASE^R"], vec_env, 16, seed=0, name="EASE^R")
    rand = evaluate(BASELINES["random"], vec_env, 16, seed=0)
    assert ours.policy == "EASE^R" and np.isfinite(ours.episodes["return"]).all()
    assert ours.episodes["return"].mean() > rand.episodes["return"].mean()


class _EveryEnvEveryStep(RecommenderPolicy):
    """The reference: a fresh fold-in of every env's history at every step (no reuse, no skipping)."""

    def scores(self, observations, infos):
        self.observe(infos)
        rows = [self.recommender.score_history(items, ratings if self.use_ratings else None)
                for items, ratings in zip(self.history_items, self.history_ratings)]
        out = np.stack(rows)
        return np.where(np.isfinite(out), out, -np.inf)


def _scored_actions(policy, active):
    """Wrap ``policy.act_batch`` to log the actions of the envs the harness scores, step by step."""
    log, act = [], policy.act_batch

    def act_batch(observations, infos):
        actions = act(observations, infos)
        log.append(np.asarray(actions)[active()].copy())
        return actions

    policy.act_batch = act_batch
    return log


@pytest.mark.parametrize("slate_size", [None, 3])
@pytest.mark.parametrize("name", ["matrix factorization", "item-kNN", "content-based", "ensemble"])
def test_reusing_unchanged_scores_and_skipping_unscored_envs_changes_nothing(name, slate_size):
    """The fast fold-in (reuse while no click, cold scores once, unscored envs skipped) serves
    exactly what refolding every env at every step serves: same actions, same episodes."""
    env_kwargs = {} if slate_size is None else {"slate_size": slate_size}
    env = make_eval_env("RecGym-MovieLens-v0", num_envs=6, dataset="synthetic", **env_kwargs)
    runs = {}
    for kind in ("fast", "reference"):
        logs = []

        def factory(ctx, kind=kind, logs=logs):
            fast = RECOMMENDER_POLICIES[name](ctx)
            assert fast.scored is not None  # the harness's bookkeeping reaches the policy
            policy = fast if kind == "fast" else _EveryEnvEveryStep(
                fast.recommender, ctx.n_items, ctx.slate_size, name=name)
            logs.append(_scored_actions(policy, ctx.access.active))
            return policy

        runs[kind] = (evaluate(factory, env, 9, seed=3, name=name), logs[0])  # two waves, one partial
    (fast, fast_log), (ref, ref_log) = runs["fast"], runs["reference"]
    pd.testing.assert_frame_equal(fast.episodes, ref.episodes)
    assert fast.coverage == ref.coverage
    assert len(fast_log) == len(ref_log) and len(fast_log) > 2
    for ours, theirs in zip(fast_log, ref_log, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    # the episodes ended at different steps, so some steps skipped envs (the saving is exercised)
    assert fast.episodes["length"].nunique() > 1


def test_scored_mask_of_another_batch_is_ignored_and_a_changing_one_rejected(vec_env):
    """A hook answering for another batch than the policy was reset for (an off-policy replay, a
    single env) is not consulted: every env is scored; one that changes size mid-run is an error."""
    model = Popularity().fit(pd.DataFrame({"user_id": [0, 1], "item_id": [0, 1], "rating": [4.0, 5.0]}),
                             pd.DataFrame(index=range(3)))
    nothing_scored = RecommenderPolicy(model, n_items=3, scored=lambda: np.zeros(5, dtype=bool))
    plain = RecommenderPolicy(model, n_items=3)
    for policy in (nothing_scored, plain):
        policy.reset(num_envs=2)
    infos = {"clicked_item": np.array([1, -1]), "rating": np.array([5.0, 0.0])}
    np.testing.assert_array_equal(nothing_scored.scores(np.zeros((2, 1)), infos),
                                  plain.scores(np.zeros((2, 1)), infos))
    assert np.any(plain.scores(np.zeros((2, 1)), {}) != 0)  # the comparison is of real scores

    sizes = iter([2, 5])
    changing = RecommenderPolicy(model, n_items=3, scored=lambda: np.ones(next(sizes), dtype=bool))
    changing.reset(num_envs=2)
    with pytest.raises(ValueError, match="scored\\(\\) answered for 5 envs.*num_envs=2"):
        changing.act_batch(np.zeros((2, 1)), {})
