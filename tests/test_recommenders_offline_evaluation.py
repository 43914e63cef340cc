"""Offline evaluation: fold semantics, metrics by hand, protocols on tiny data and the real targets."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recgym.recommenders import ItemKNN, MatrixFactorization, Popularity
from recgym.recommenders.offline_evaluation import (
    evaluate_ncf,
    evaluate_ratings,
    evaluate_top_n,
    hit_rate,
    kfold_indices,
    leave_last_out,
    load_ncf_ml1m,
    mae,
    mrr,
    ndcg,
    rank_of_targets,
    rmse,
)

# ----------------------------------------------------------------------------- k-fold


def test_kfold_matches_sklearn_semantics_by_hand():
    # sklearn: RandomState(0) permutes arange(10) into [2 8 4 9 1 6 7 3 0 5]; 3 folds of
    # sizes 4, 3, 3 cut that order; both index arrays come back sorted.
    folds = list(kfold_indices(10, 3, shuffle=True, random_state=0))
    assert [test.tolist() for _, test in folds] == [[2, 4, 8, 9], [1, 6, 7], [0, 3, 5]]
    assert folds[0][0].tolist() == [0, 1, 3, 5, 6, 7]
    unshuffled = list(kfold_indices(5, 2, shuffle=False))
    assert [t.tolist() for _, t in unshuffled] == [[0, 1, 2], [3, 4]]


def test_kfold_partitions_and_rejects_bad_arguments():
    seen = np.concatenate([test for _, test in kfold_indices(103, 5)])
    assert sorted(seen.tolist()) == list(range(103))
    for train, test in kfold_indices(103, 5):
        assert not set(train) & set(test) and len(train) + len(test) == 103
    with pytest.raises(ValueError, match="n_splits must be an integer >= 2; got 1"):
        list(kfold_indices(10, 1))
    with pytest.raises(ValueError, match="exceeds the number of samples"):
        list(kfold_indices(3, 5))


def test_kfold_draws_the_same_folds_as_surprise():
    surprise = pytest.importorskip("surprise")
    frame = pd.DataFrame({"u": np.arange(57) % 7, "i": np.arange(57), "r": np.arange(57) % 5 + 1.0})
    data = surprise.Dataset.load_from_df(frame, surprise.Reader(rating_scale=(1, 5)))
    theirs = [
        sorted(int(i) for _, i, _ in test)
        for _, test in surprise.model_selection.KFold(5, random_state=0, shuffle=True).split(data)
    ]
    ours = [test.tolist() for _, test in kfold_indices(57, 5, random_state=0)]
    assert theirs == ours


# ----------------------------------------------------------------------------- metrics


def test_rating_metrics_by_hand():
    assert rmse([1, 2, 3], [1, 2, 5]) == pytest.approx(math.sqrt(4 / 3))
    assert mae([1, 2, 3], [2, 2, 5]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="finite"):
        rmse([np.nan], [1.0])
    with pytest.raises(ValueError, match="equal length"):
        mae([1, 2], [1])


def test_ranking_metrics_by_hand():
    ranks = np.array([0, 1, 9, 10, 50])
    assert hit_rate(ranks, 10) == pytest.approx(3 / 5)
    assert ndcg(ranks, 10) == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(11)) / 5)
    assert mrr(ranks) == pytest.approx((1 + 1 / 2 + 1 / 10 + 1 / 11 + 1 / 51) / 5)


def test_rank_of_targets_tie_breaks():
    scores = np.array([[3.0, 5.0, 5.0, 1.0], [0.0, 0.0, 0.0, -np.inf]])
    # Row 0: target 2 (score 5): one higher-or-tied item before it by id (item 1).
    assert rank_of_targets(scores, [5.0, 0.0], [2, 0]).tolist() == [1, 0]
    # Pessimistic: every tie counts against the target (the target's own column included).
    assert rank_of_targets(scores[:, 1:], np.array([5.0, 0.0])).tolist() == [2, 2]


# ----------------------------------------------------------------------------- top-N protocols


def test_leave_last_out_holds_out_each_users_latest():
    ratings = pd.DataFrame(
        {
            "user_id": [0, 0, 0, 1, 1, 2],
            "item_id": [0, 1, 2, 0, 3, 1],
            "rating": [1.0] * 6,
            "timestamp": [5, 9, 1, 7, 7, 3],
        }
    )
    train, test = leave_last_out(ratings)
    assert test["item_id"].tolist() == [1, 3]  # user 1's tie goes to the later row
    assert test["user_id"].tolist() == [0, 1]
    assert len(train) == 4 and 2 in train["user_id"].tolist()  # the one-rating user stays
    with pytest.raises(ValueError, match="timestamp"):
        leave_last_out(ratings.drop(columns="timestamp"))


def test_evaluate_top_n_on_a_known_ranking():
    # Popularity by count: item 0 (3 users) > 1 (2) > 2 (1) > 3, 4 (0 in training).
    train = pd.DataFrame({"user_id": [0, 1, 2, 0, 1, 2], "item_id": [0, 0, 0, 1, 1, 2]})
    test = pd.DataFrame({"user_id": [0, 1, 2, 3], "item_id": [2, 3, 1, 4]})
    items = pd.DataFrame(index=pd.RangeIndex(5))
    result = evaluate_top_n(Popularity(), train, test, items, k=1)
    # Candidates per user exclude their training items: user 0 -> [2, 3, 4], item 2 ranks 0;
    # user 1 -> [2, 3, 4], item 3 ranks 1; user 2 -> [1, 3, 4], item 1 ranks 0;
    # user 3 (cold) -> everything, item 4 ranks 4 (after 0, 1, 2, 3 by score then id).
    assert result.hr == pytest.approx(2 / 4)
    assert result.mrr == pytest.approx((1 + 1 / 2 + 1 + 1 / 5) / 4)
    assert result.coverage == pytest.approx(3 / 5)  # top-1 lists: {2, 1, 0}
    assert result.n_users == 4 and result.k == 1


def test_evaluate_ratings_runs_the_folds():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "user_id": rng.integers(0, 30, 400),
            "item_id": rng.integers(0, 40, 400),
        }
    ).drop_duplicates()
    frame["rating"] = rng.integers(1, 6, len(frame)).astype(float)
    folds = evaluate_ratings(lambda: Popularity(kind="mean"), frame, n_splits=4, max_folds=2)
    assert len(folds) == 2
    assert all(0 < f.rmse < 3 and f.mae <= f.rmse and f.fit_seconds >= 0 for f in folds)


# ----------------------------------------------------------------------------- the targets


@pytest.fixture(scope="module")
def ml100k(movielens_home):
    from recgym.datasets import load_movielens

    return load_movielens("ml-100k")


def test_biased_mf_ml100k_5fold_rmse_target(ml100k):
    """Issue target: biased MF, ml-100k, KFold(5, shuffle, random_state=0): RMSE <= 0.915."""
    folds = evaluate_ratings(MatrixFactorization, ml100k.ratings, n_splits=5, random_state=0)
    assert np.mean([f.rmse for f in folds]) <= 0.915


def test_biased_mf_ml_latest_small_5fold_rmse_target(movielens_home):
    from recgym.datasets import load_movielens

    data = load_movielens("ml-latest-small")
    folds = evaluate_ratings(MatrixFactorization, data.ratings, n_splits=5, random_state=0)
    assert np.mean([f.rmse for f in folds]) <= 0.870


@pytest.fixture(scope="module")
def ncf(movielens_home):
    if not (movielens_home / "ml-1m" / "ncf").is_dir():
        pytest.skip("NCF ML-1M protocol files not available")
    return load_ncf_ml1m(movielens_home / "ml-1m")


def test_ncf_protocol_files_and_toppop_anchor(ncf):
    assert len(ncf.train) == 1_000_209 - 6_040
    assert ncf.negatives.shape == (6040, 99) and ncf.items.shape[0] == 3706
    # No test item is among the user's training items or negatives.
    train_keys = set((ncf.train.user_id * 3706 + ncf.train.item_id).tolist())
    assert not {u * 3706 + int(i) for u, i in enumerate(ncf.test_items)} & train_keys
    result = evaluate_ncf(Popularity(), ncf)
    assert result.hr == pytest.approx(0.453, abs=0.005)  # published TopPop: 0.453


def test_item_knn_ncf_hr_target(ncf):
    """Issue target: item-kNN HR@10 >= 0.66 on the NCF ML-1M protocol (published 0.660)."""
    result = evaluate_ncf(ItemKNN(implicit=True, n_neighbours=30, shrinkage=0.0), ncf)
    assert result.hr >= 0.66
    assert 0.35 < result.ndcg < result.hr


def test_tuned_item_knn_ncf_hr_target(ncf):
    """Issue target: tuned item-kNN HR@10 >= 0.67 (measured 0.673 / NDCG@10 0.397).

    The configuration is the one the validation search of ``benchmarks/experiments/
    recommenders_offline.py`` selects on the training pairs (TF-IDF weighting, asymmetric
    cosine); kNN has no random draw, so the figure is exact and this guards regressions.
    """
    model = ItemKNN(
        similarity="asymmetric_cosine",
        asymmetry=0.35,
        n_neighbours=100,
        shrinkage=10.0,
        implicit=True,
        feature_weighting="tfidf",
    )
    result = evaluate_ncf(model, ncf)
    assert result.hr >= 0.67
    assert result.ndcg >= 0.39


def test_load_ncf_names_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="ratings_implicit_pairs.parquet"):
        load_ncf_ml1m(tmp_path)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 200), st.integers(2, 10), st.integers(0, 2**31 - 1))
def test_kfold_invariants(n, k, seed):
    if k > n:
        k = n
    folds = list(kfold_indices(n, k, random_state=seed))
    sizes = [len(test) for _, test in folds]
    assert sorted(np.concatenate([t for _, t in folds]).tolist()) == list(range(n))
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    for train, test in folds:
        assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
        assert len(train) + len(test) == n
