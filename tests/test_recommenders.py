"""The recommenders on tiny hand-made data with known answers, plus the shared API contract."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recgym.recommenders import (
    EASE,
    SLIM,
    ContentBased,
    Ensemble,
    ItemKNN,
    MatrixFactorization,
    Popularity,
    PopularityConfig,
    Recommender,
    attach_tags,
)
from recgym.recommenders.base import top_k
from recgym.recommenders.matrix_factorization import sample_negatives


def _frame(rows) -> pd.DataFrame:
    users, items, ratings = zip(*rows)
    return pd.DataFrame(
        {"user_id": np.array(users), "item_id": np.array(items), "rating": np.array(ratings, float)}
    )


# item 0 is rated by every user, item 1 by two, items 2-4 by one; user 4 rated only item 0.
TOY = _frame(
    [
        (0, 0, 4.0), (0, 1, 5.0), (0, 2, 1.0),
        (1, 0, 3.0), (1, 1, 4.0), (1, 3, 2.0),
        (2, 0, 5.0), (2, 4, 5.0),
        (3, 0, 2.0), (3, 2, 1.0),
        (4, 0, 4.0),
    ]
)  # fmt: skip
TOY_ITEMS = pd.DataFrame(
    {
        "item_id": np.arange(6),
        "title": [
            "Alien (1979)",
            "Aliens (1986)",
            "Toy Story (1995)",
            "Heat (1995)",
            "Alien (1979)",  # content-identical to item 0
            "Casino (1995)",  # never rated
        ],
        "genres": [
            ("Horror", "Sci-Fi"),
            ("Action", "Sci-Fi"),
            ("Animation", "Children"),
            ("Crime",),
            ("Horror", "Sci-Fi"),
            ("Crime", "Drama"),
        ],
    }
)


def _all_models() -> list[Recommender]:
    return [
        Popularity(kind="count"),
        Popularity(kind="mean"),
        Popularity(kind="weighted", quantile=0.5),
        ContentBased(),
        MatrixFactorization(n_factors=2, n_iters=5, seed=3),
        ItemKNN(n_neighbours=3, shrinkage=1.0),
        ItemKNN(similarity="adjusted_cosine", implicit=False),
        ItemKNN(similarity="asymmetric_cosine", asymmetry=0.3, implicit=True, shrinkage=2.0),
        EASE(l2=1.0),
        EASE(l2=0.5, implicit=False),
        SLIM(l1=0.1, l2=0.5, n_candidates=3),
        Ensemble(
            [MatrixFactorization(n_factors=2, n_iters=3), Popularity(kind="mean")],
            validation_fraction=0.3,
            seed=1,
        ),
    ]


MODEL_IDS = [
    "pop-count",
    "pop-mean",
    "pop-weighted",
    "content",
    "mf",
    "knn",
    "knn-adj",
    "knn-asym",
    "ease",
    "ease-ratings",
    "slim",
    "ensemble",
]


# ----------------------------------------------------------------------------- Popularity


def test_popularity_count_the_popular_item_wins():
    model = Popularity().fit(TOY, TOY_ITEMS)
    ids, scores = model.recommend(99, 3)  # a cold user: non-personalised anyway
    assert ids[0] == 0 and scores[0] == 5.0
    np.testing.assert_array_equal(ids, [0, 1, 2])  # 1 and 2 have 2 votes; 2 < ... tie by id
    assert scores.tolist() == [5.0, 2.0, 2.0]
    # User 0 has seen 0, 1, 2: the best remaining are the one-vote items 3 and 4 (tie: by id).
    np.testing.assert_array_equal(model.recommend(0, 2)[0], [3, 4])
    with pytest.raises(TypeError, match="does not predict ratings"):
        model.predict([0], [0])


def test_popularity_mean_and_imdb_weighted_rating_by_hand():
    mean = Popularity(kind="mean").fit(TOY, TOY_ITEMS)
    assert mean.item_scores[0] == pytest.approx(18 / 5)
    assert mean.item_scores[4] == 5.0
    c = TOY["rating"].mean()
    assert mean.item_scores[5] == pytest.approx(c)  # unrated: the global mean
    assert mean.recommend(99, 1)[0][0] == 4

    weighted = Popularity(kind="weighted", quantile=0.5).fit(TOY, TOY_ITEMS)
    votes = np.array([5, 2, 2, 1, 1])
    m = float(np.quantile(votes, 0.5))
    assert weighted.m == m == 2.0
    r1 = 4.5
    assert weighted.predict(0, 1)[()] == pytest.approx(2 / 4 * r1 + 2 / 4 * c)
    r0 = 18 / 5
    assert weighted.score(0, 0)[()] == pytest.approx(5 / 7 * r0 + 2 / 7 * c)
    # The one-vote 5-star item is pulled two thirds of the way towards C.
    assert weighted.score(0, 4)[()] == pytest.approx(1 / 3 * 5.0 + 2 / 3 * c)


def test_popularity_config_rejects_bad_values():
    with pytest.raises(ValueError, match="kind must be"):
        PopularityConfig(kind="votes")
    with pytest.raises(ValueError, match=r"quantile must lie in \[0, 1\]; got 1.5"):
        Popularity(kind="weighted", quantile=1.5)


# ----------------------------------------------------------------------------- content based


def test_content_identical_item_is_most_similar():
    model = ContentBased().fit(TOY, TOY_ITEMS)
    ids, sims = model.similar_items(0, k=3)
    assert ids[0] == 4 and sims[0] == pytest.approx(1.0)
    assert ids[1] == 1  # shares the Sci-Fi genre
    assert sims[1] < 1.0
    assert model.item_features.shape[0] == 6
    assert any(name == "genre:Sci-Fi" for name in model.vocabulary)
    assert any(name == "title:alien" for name in model.vocabulary)


def test_content_profile_follows_the_ratings():
    # A user who loved the crime film is recommended the other crime film first.
    ratings = _frame([(0, 3, 5.0), (0, 2, 1.0), (1, 0, 3.0)])
    model = ContentBased().fit(ratings, TOY_ITEMS)
    assert model.recommend(0, 1)[0][0] == 5
    with pytest.raises(TypeError, match="does not predict ratings"):
        model.predict(0, 1)


def test_content_tags_enter_the_vectors():
    tags = pd.DataFrame({"user_id": [0, 1], "item_id": [2, 3], "tag": ["Pixar", "pixar "]})
    items = attach_tags(TOY_ITEMS, tags)
    assert items["tags"][2] == ("pixar",) and items["tags"][0] == ()
    only_tags = ContentBased(genre_weight=0, title_weight=0).fit(TOY, items)
    ids, sims = only_tags.similar_items(2, k=1)
    assert ids[0] == 3 and sims[0] == pytest.approx(1.0)


def test_content_needs_items_and_explicit_ratings_for_centring():
    with pytest.raises(ValueError, match="needs the items table"):
        ContentBased().fit(TOY)
    with pytest.raises(ValueError, match="missing column 'genres'"):
        ContentBased().fit(TOY, TOY_ITEMS.drop(columns="genres"))
    with pytest.raises(ValueError, match="centred"):
        ContentBased(weighting="centred").fit(TOY.drop(columns="rating"), TOY_ITEMS)
    with pytest.raises(ValueError, match="at least one of"):
        ContentBased(genre_weight=0, tag_weight=0, title_weight=0)


# ----------------------------------------------------------------------------- matrix factorisation


def test_mf_recovers_a_planted_low_rank_matrix():
    rng = np.random.default_rng(0)
    n_users, n_items, rank = 80, 60, 2
    full = 3.0 + rng.normal(0, 1, (n_users, rank)) @ rng.normal(0, 1, (rank, n_items))
    mask = rng.random(full.shape) < 0.4
    users, items = np.nonzero(mask)
    ratings = pd.DataFrame({"user_id": users, "item_id": items, "rating": full[users, items]})
    model = MatrixFactorization(
        n_factors=2, reg=0.1, bias_reg=0.1, reg_exponent=0.0, n_iters=50, clip=False
    ).fit(ratings)
    hu, hi = np.nonzero(~mask)
    held_out_rmse = np.sqrt(np.mean((model.predict(hu, hi) - full[hu, hi]) ** 2))
    assert held_out_rmse < 0.05 * full.std()
    # ...and ranks each user's unseen items in the true order.
    best_true = np.where(mask, -np.inf, full).argmax(axis=1)
    assert np.mean([model.recommend(u, 1)[0][0] == best_true[u] for u in range(n_users)]) > 0.9


def test_mf_cold_user_gets_the_bias_baseline_and_predictions_are_clipped():
    model = MatrixFactorization(n_factors=2, n_iters=5).fit(TOY, TOY_ITEMS)
    m = model.model
    expected = m.global_mean + m.item_bias[[0, 1, 5]]
    np.testing.assert_allclose(model.score(1000, [0, 1, 5]), expected, rtol=1e-6)
    preds = model.predict(np.repeat(np.arange(5), 6), np.tile(np.arange(6), 5))
    assert preds.min() >= 1.0 and preds.max() <= 5.0


def test_sample_negatives_avoids_observed_pairs():
    users = np.array([0, 0, 1, 2, 2, 2])
    items = np.array([0, 1, 2, 0, 1, 2])
    nu, ni = sample_negatives(users, items, 50, 2, seed=0)
    observed = set(zip(users.tolist(), items.tolist()))
    pairs = list(zip(nu.tolist(), ni.tolist()))
    assert not observed & set(pairs)
    assert len(set(pairs)) == len(pairs) == 12
    np.testing.assert_array_equal(np.bincount(nu, minlength=3), [4, 2, 6])
    again = sample_negatives(users, items, 50, 2, seed=0)
    np.testing.assert_array_equal(again[1], ni)
    assert not np.array_equal(sample_negatives(users, items, 50, 2, seed=1)[1], ni)
    # A user who rated 3 of 4 items has one negative to give, however many are asked for.
    dense_u, dense_i = sample_negatives(np.zeros(3, int), np.arange(3), 4, 5, seed=0)
    assert dense_u.tolist() == [0] and dense_i.tolist() == [3]


def test_mf_implicit_mode_ranks_interacted_items_above_others():
    rng = np.random.default_rng(1)
    # Two taste groups: users 0-19 use items 0-9, users 20-39 use items 10-19.
    rows = [
        (u, i) for u in range(40) for i in range(20) if (u < 20) == (i < 10) and rng.random() < 0.6
    ]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id"])
    model = MatrixFactorization(negatives=1, n_factors=2, reg=0.3, n_iters=15).fit(frame)
    hits = total = 0
    for user in range(40):
        seen = set(frame.loc[frame.user_id == user, "item_id"])
        unseen_in_group = [i for i in range(20) if (i < 10) == (user < 20) and i not in seen]
        ids, _ = model.recommend(user, len(unseen_in_group))
        hits += len(set(ids.tolist()) & set(unseen_in_group))
        total += len(unseen_in_group)
    assert hits / total > 0.9  # a uniform ranking would score about 0.3


# ----------------------------------------------------------------------------- item kNN


def test_item_knn_similarities_and_scores_by_hand():
    # Binary cosine of items over users {0,1}x{0,1,2}: item 0 = users{0,1}, item 1 = {0,1},
    # item 2 = {0}. cos(0,1) = 1, cos(0,2) = cos(1,2) = 1/sqrt(2).
    rows = _frame([(0, 0, 5.0), (0, 1, 3.0), (0, 2, 4.0), (1, 0, 2.0), (1, 1, 4.0), (2, 3, 1.0)])
    model = ItemKNN(implicit=True, shrinkage=0.0, n_neighbours=5).fit(rows)
    s = model.neighbours.toarray()
    assert s[0, 1] == pytest.approx(1.0) and s[0, 2] == pytest.approx(1 / math.sqrt(2))
    assert s[0, 0] == 0 and s[3].sum() == 0  # no self-similarity; item 3 shares no user
    # User 1 rated items 0 and 1; the score of item 2 sums s_20 + s_21.
    assert model.score(1, 2)[()] == pytest.approx(2 / math.sqrt(2))
    ids, _ = model.similar_items(0, k=2)
    np.testing.assert_array_equal(ids, [1, 2])
    # Shrinkage n/(n+h): item pairs 0-1 share two users, 0-2 one.
    shrunk = ItemKNN(implicit=True, shrinkage=1.0).fit(rows).neighbours.toarray()
    assert shrunk[0, 1] == pytest.approx(2 / 3) and shrunk[0, 2] == pytest.approx(
        0.5 / math.sqrt(2)
    )
    # Top-1 neighbours keep only the best.
    top1 = ItemKNN(implicit=True, shrinkage=0.0, n_neighbours=1).fit(rows).neighbours
    assert top1.getnnz(axis=1).max() == 1


def test_item_knn_adjusted_cosine_centres_by_user_mean():
    rows = _frame([(0, 0, 5.0), (0, 1, 1.0), (1, 0, 1.0), (1, 1, 5.0)])
    model = ItemKNN(similarity="adjusted_cosine", shrinkage=0.0).fit(rows)
    # Centred columns are exact opposites: similarity -1, so no positive neighbour is kept.
    assert model.neighbours.nnz == 0
    plain = ItemKNN(similarity="cosine", shrinkage=0.0).fit(rows)
    assert plain.neighbours[0, 1] == pytest.approx(10 / 26)


def test_item_knn_asymmetric_cosine_by_hand():
    # Binary: item 0 has users {0, 1}, item 2 has {0}; they share one user. With alpha = 0.25
    # the scored item's norm^2 enters as n^0.25 and the neighbour's as n^0.75.
    rows = _frame([(0, 0, 5.0), (0, 1, 3.0), (0, 2, 4.0), (1, 0, 2.0), (1, 1, 4.0), (2, 3, 1.0)])
    asym = ItemKNN(
        similarity="asymmetric_cosine", asymmetry=0.25, implicit=True, shrinkage=0.0
    ).fit(rows)
    s = asym.neighbours.toarray()
    assert s[0, 2] == pytest.approx(1 / 2**0.25)  # scored item 0 (2 users), neighbour 2 (1)
    assert s[2, 0] == pytest.approx(1 / 2**0.75)  # scored item 2 (1 user), neighbour 0 (2)
    assert s[0, 1] == pytest.approx(2 / (2**0.25 * 2**0.75))  # equal norms: the cosine, 1
    # alpha = 0.5 is the cosine bit for bit, with ratings or binary, shrunk or not.
    for implicit in (True, False):
        cos = ItemKNN(implicit=implicit, shrinkage=3.0).fit(TOY).neighbours
        half = ItemKNN(
            similarity="asymmetric_cosine", asymmetry=0.5, implicit=implicit, shrinkage=3.0
        ).fit(TOY).neighbours
        assert (cos != half).nnz == 0
    with pytest.raises(ValueError, match=r"asymmetry must lie in \[0, 1\]; got 1.5"):
        ItemKNN(similarity="asymmetric_cosine", asymmetry=1.5)
    with pytest.raises(ValueError, match="asymmetry=0.3 needs similarity='asymmetric_cosine'"):
        ItemKNN(asymmetry=0.3)


def test_item_knn_prediction_is_baseline_plus_weighted_residuals():
    model = ItemKNN(shrinkage=0.0, bias_damping=0.0).fit(TOY, TOY_ITEMS)
    u, i = 3, 1  # user 3 rated items 0 and 2
    base = lambda uu, ii: model.global_mean + model.user_bias[uu] + model.item_bias[ii]  # noqa: E731
    s = model.neighbours.toarray()
    resid = {j: r - base(u, j) for j, r in [(0, 2.0), (2, 1.0)]}
    num = sum(s[i, j] * resid[j] for j in resid)
    den = sum(abs(s[i, j]) for j in resid)
    expected = np.clip(base(u, i) + num / den, 1.0, 5.0)
    assert model.predict(u, i)[()] == pytest.approx(expected)
    # A cold user gets mu + b_i; an item without neighbours among the user's items, the baseline.
    assert model.predict(50, 1)[()] == pytest.approx(model.global_mean + model.item_bias[1])
    assert model.predict(4, 5)[()] == pytest.approx(np.clip(base(4, 5), 1, 5))
    # Cold users are ranked by popularity.
    assert model.recommend(50, 1)[0][0] == 0


# ----------------------------------------------------------------------------- ensemble


def test_ensemble_with_a_zero_weight_equals_its_other_member():
    mf_alone = MatrixFactorization(n_factors=2, n_iters=5, seed=4).fit(TOY, TOY_ITEMS)
    blend = Ensemble(
        [MatrixFactorization(n_factors=2, n_iters=5, seed=4), Popularity(kind="count")],
        weights=(1.0, 0.0),
    ).fit(TOY, TOY_ITEMS)
    users = np.repeat(np.arange(6), 6)
    items = np.tile(np.arange(6), 6)
    np.testing.assert_array_equal(blend.score(users, items), mf_alone.score(users, items))
    np.testing.assert_array_equal(blend.predict(users, items), mf_alone.predict(users, items))
    for user in (0, 3, 77):
        for a, b in zip(blend.recommend(user, 4), mf_alone.recommend(user, 4)):
            np.testing.assert_array_equal(a, b)


def test_ensemble_fits_weights_on_validation_data():
    rng = np.random.default_rng(0)
    n_users, n_items = 60, 40
    full = 3.0 + rng.normal(0, 1, (n_users, 2)) @ rng.normal(0, 1, (2, n_items))
    users, items = np.nonzero(rng.random(full.shape) < 0.5)
    ratings = pd.DataFrame({"user_id": users, "item_id": items, "rating": full[users, items]})
    blend = Ensemble(
        [
            MatrixFactorization(n_factors=2, reg=0.1, bias_reg=0.1, reg_exponent=0, n_iters=30),
            Popularity(kind="count"),
        ],
        seed=0,
        validation_fraction=0.2,
    ).fit(ratings)
    # The exact model carries the blend: weight near 1, the uninformative count near 0.
    assert blend.weights[0] == pytest.approx(1.0, abs=0.1)
    assert abs(blend.weights[1] * np.bincount(items).std()) < 0.1
    same = Ensemble(
        [MatrixFactorization(n_factors=2, n_iters=30), Popularity(kind="count")],
        seed=0,
        validation_fraction=0.2,
    )
    again = Ensemble(
        [MatrixFactorization(n_factors=2, n_iters=30), Popularity(kind="count")],
        seed=0,
        validation_fraction=0.2,
    )
    np.testing.assert_array_equal(same.fit(ratings).weights, again.fit(ratings).weights)


def test_ensemble_implicit_target_and_bad_configs():
    frame = TOY.drop(columns="rating")
    blend = Ensemble(
        [ItemKNN(implicit=True), Popularity()], target="implicit", validation_fraction=0.3
    )
    blend.fit(frame)
    assert np.all(np.isfinite(blend.weights)) and not blend.predicts_ratings
    with pytest.raises(ValueError, match="at least one member"):
        Ensemble([])
    with pytest.raises(ValueError, match="weights has 1 entries for 2 members"):
        Ensemble([Popularity(), Popularity()], weights=(1.0,))
    with pytest.raises(ValueError, match="validation_fraction"):
        Ensemble([Popularity()], validation_fraction=1.0)
    with pytest.raises(TypeError, match="members must be Recommenders"):
        Ensemble(["popularity"])


# ----------------------------------------------------------------------------- the shared contract


@pytest.mark.parametrize("model", _all_models(), ids=MODEL_IDS)
def test_contract_recommend_scores_and_unknown_ids(model: Recommender):
    model.fit(TOY, TOY_ITEMS)
    assert model.n_users == 5 and model.n_items == 6
    for user in (0, 2, 4):
        ids, scores = model.recommend(user, 10)
        seen = set(TOY.loc[TOY.user_id == user, "item_id"])
        assert ids.dtype == np.int64 and scores.dtype == np.float64
        assert not seen & set(ids.tolist())
        assert len(ids) == 6 - len(seen)
        assert np.all(np.diff(scores) <= 0)
        np.testing.assert_allclose(scores, model.score(user, ids))
        with_seen, _ = model.recommend(user, 10, exclude_seen=False)
        assert len(with_seen) == 6
    # Rows of score_all equal pairwise scores.
    all_scores = model.score_all([0, 3, 999])
    np.testing.assert_allclose(all_scores[1], model.score(3, np.arange(6)))
    # Unknown items: NaN; unknown (cold) users: finite fallback, the same for every cold user.
    out = model.score([0, 1, 999, 1000], [7, 2, 2, 2])
    assert np.isnan(out[0]) and np.all(np.isfinite(out[1:]))
    assert out[2] == out[3]
    cold_ids, _ = model.recommend(12345, 3)
    assert len(cold_ids) == 3
    np.testing.assert_array_equal(all_scores[2], model.score_all([777])[0])
    if model.predicts_ratings:
        pred = model.predict([0, 999, 0], [1, 1, 6])
        assert np.all(np.isfinite(pred[:2])) and np.isnan(pred[2])
        assert 1.0 <= pred[0] <= 5.0


@pytest.mark.parametrize("model", _all_models(), ids=MODEL_IDS)
def test_contract_bad_inputs(model: Recommender):
    with pytest.raises(RuntimeError, match="not fitted"):
        model.score(0, 0)
    with pytest.raises(ValueError, match="ratings is empty"):
        model.fit(TOY.iloc[:0], TOY_ITEMS)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['item_id'\]"):
        model.fit(TOY.drop(columns="item_id"), TOY_ITEMS)
    with pytest.raises(TypeError, match="DataFrame"):
        model.fit(TOY.to_numpy(), TOY_ITEMS)
    bad = TOY.copy()
    bad.loc[0, "user_id"] = -1
    with pytest.raises(ValueError, match="ratings.user_id must be non-negative; got -1"):
        model.fit(bad, TOY_ITEMS)
    with pytest.raises(ValueError, match="duplicate"):
        model.fit(pd.concat([TOY, TOY.iloc[:1]]), TOY_ITEMS)
    with pytest.raises(ValueError, match="outside the items table"):
        model.fit(TOY, TOY_ITEMS.iloc[:3])
    nan = TOY.copy()
    nan.loc[2, "rating"] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.fit(nan, TOY_ITEMS)
    model.fit(TOY, TOY_ITEMS)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        model.recommend(0, 0)
    with pytest.raises(ValueError, match="item_ids must be non-negative"):
        model.score([0], [-2])
    with pytest.raises(ValueError, match="user_ids must be integer ids"):
        model.score([0.5], [1])


@pytest.mark.parametrize("model", _all_models(), ids=MODEL_IDS)
def test_contract_deterministic(model: Recommender):
    first = model.fit(TOY, TOY_ITEMS).score_all(np.arange(6))
    second = model.fit(TOY, TOY_ITEMS).score_all(np.arange(6))
    np.testing.assert_array_equal(first, second)


def test_seeds_matter_for_the_seeded_models():
    a = MatrixFactorization(n_factors=2, n_iters=3, seed=0).fit(TOY).score_all([0, 1])
    b = MatrixFactorization(n_factors=2, n_iters=3, seed=1).fit(TOY).score_all([0, 1])
    assert not np.array_equal(a, b)


def test_config_overrides_and_type_checks():
    from recgym.recommenders import MatrixFactorizationConfig

    base = MatrixFactorizationConfig(n_factors=4)
    model = MatrixFactorization(base, seed=9)
    assert model.config.n_factors == 4 and model.config.seed == 9
    with pytest.raises(TypeError, match="config must be a MatrixFactorizationConfig"):
        MatrixFactorization(PopularityConfig())
    with pytest.raises(ValueError, match="n_factors must be a positive integer; got 0"):
        MatrixFactorization(n_factors=0)
    with pytest.raises(ValueError, match="n_neighbours"):
        ItemKNN(n_neighbours=0)
    with pytest.raises(ValueError, match="similarity must be"):
        ItemKNN(similarity="pearson")


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.sampled_from([0.0, 1.0, 2.0, -np.inf, np.nan]), min_size=1, max_size=12),
    st.integers(1, 15),
)
def test_top_k_matches_a_stable_sort(values, k):
    scores = np.array(values)
    ids, top = top_k(scores, k)
    finite = [i for i in range(len(values)) if np.isfinite(values[i])]
    expected = sorted(finite, key=lambda i: (-values[i], i))[:k]
    assert ids.tolist() == expected
    np.testing.assert_array_equal(top, scores[expected])


@pytest.mark.parametrize("model", _all_models(), ids=MODEL_IDS)
def test_score_history_folds_in_a_user_like_training_did(model: Recommender):
    if isinstance(model, MatrixFactorization):
        model = MatrixFactorization(n_factors=2, n_iters=60, seed=3)
    model.fit(TOY, TOY_ITEMS)
    for user in range(5):
        rows = TOY[TOY.user_id == user]
        folded = model.score_history(rows["item_id"].to_numpy(), rows["rating"].to_numpy())
        trained = model.score_all([user])[0]
        if isinstance(model, MatrixFactorization):
            # One exact ALS user step against the converged item side: the trained user row.
            np.testing.assert_allclose(folded, trained, atol=0.05)
        elif isinstance(model, Ensemble):
            parts = [m.score_history(rows["item_id"], rows["rating"]) for m in model.members]
            blend = model.intercept + sum(w * p for w, p in zip(model.weights, parts))
            np.testing.assert_allclose(folded, blend, rtol=1e-12)
        else:
            np.testing.assert_allclose(folded, trained, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(model.score_history([]), model.score_all([999])[0])
    # Repeats: the last rating of an item counts.
    np.testing.assert_allclose(
        model.score_history([1, 0, 1], [1.0, 4.0, 5.0]), model.score_history([0, 1], [4.0, 5.0])
    )
    with pytest.raises(ValueError, match=r"item_ids must lie in \[0, 6\)"):
        model.score_history([6])
    with pytest.raises(ValueError, match="ratings must be finite and match"):
        model.score_history([0, 1], [3.0])
