"""Validation split carved from training data, and the grid search that tunes on it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recgym.recommenders import EASE, Popularity
from recgym.recommenders.model_selection import grid_search, holdout_validation
from recgym.recommenders.offline_evaluation import TopNResult, evaluate_ncf


def _interactions(seed: int, n_users: int = 30, n_items: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [
        (user, int(item))
        for user in range(n_users)
        for item in rng.choice(n_items, size=rng.integers(2, 12), replace=False)
    ]
    users, items = zip(*rows)
    return pd.DataFrame(
        {"user_id": np.array(users), "item_id": np.array(items), "rating": np.ones(len(rows))}
    )


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 20))
def test_holdout_takes_one_training_row_per_user_and_unseen_negatives(seed, n_negatives):
    train = _interactions(seed % 1000)
    items = pd.DataFrame({"item_id": np.arange(45)})  # 5 items nobody interacted with
    split = holdout_validation(train, items, n_negatives=n_negatives, seed=seed)
    assert split.n_users == 30 and split.negatives.shape == (30, n_negatives)
    assert len(split.train) == len(train) - 30
    assert list(split.train.columns) == list(train.columns) and split.items is items
    pairs = set(zip(train.user_id, train.item_id))
    kept = set(zip(split.train.user_id, split.train.item_id))
    for user in range(30):
        held_out = int(split.test_items[user])
        assert (user, held_out) in pairs and (user, held_out) not in kept
        negatives = split.negatives[user]
        assert len(set(negatives.tolist())) == n_negatives  # distinct
        assert not any((user, int(i)) in pairs for i in negatives)  # never interacted with
        assert np.all((negatives >= 0) & (negatives < 45))
    assert kept | {(u, int(i)) for u, i in enumerate(split.test_items)} == pairs


def test_holdout_is_seeded():
    train = _interactions(0)
    a = holdout_validation(train, n_negatives=5, seed=3)
    b = holdout_validation(train, n_negatives=5, seed=3)
    c = holdout_validation(train, n_negatives=5, seed=4)
    np.testing.assert_array_equal(a.test_items, b.test_items)
    np.testing.assert_array_equal(a.negatives, b.negatives)
    assert not np.array_equal(a.negatives, c.negatives)
    assert not np.array_equal(a.test_items, c.test_items)


def test_holdout_draws_every_interaction_about_equally_often():
    # One user with 4 items: over 400 seeds each should be held out about 100 times.
    train = pd.DataFrame({"user_id": [0, 0, 0, 0], "item_id": [3, 1, 4, 2]})
    held = [holdout_validation(train, n_negatives=1, seed=s).test_items[0] for s in range(400)]
    counts = np.bincount(held, minlength=5)[1:]
    assert counts.min() > 70 and counts.max() < 130  # binomial sd ~8.7


def test_holdout_rejects_users_it_cannot_split():
    with pytest.raises(ValueError, match="user 1 has 1"):
        holdout_validation(pd.DataFrame({"user_id": [0, 0, 1], "item_id": [0, 1, 0]}))
    with pytest.raises(ValueError, match="user 1 has 0"):  # user id 1 is missing
        holdout_validation(pd.DataFrame({"user_id": [0, 0, 2, 2], "item_id": [0, 1, 0, 1]}))
    with pytest.raises(ValueError, match="user 0 has only 1 catalogue items .* n_negatives=2"):
        holdout_validation(pd.DataFrame({"user_id": [0, 0], "item_id": [0, 1]}),
                           pd.DataFrame(index=range(3)), n_negatives=2)  # fmt: skip
    with pytest.raises(ValueError, match="n_negatives must be a positive integer; got 0"):
        holdout_validation(_interactions(0), n_negatives=0)
    with pytest.raises(ValueError, match="ratings is empty"):
        holdout_validation(_interactions(0).iloc[:0])


def _result(hr: float, ndcg: float = 0.0) -> TopNResult:
    return TopNResult(hr=hr, ndcg=ndcg, recall=hr, mrr=0.0, coverage=float("nan"), n_users=1,
                      k=10, fit_seconds=0.5, score_seconds=0.25)  # fmt: skip


def test_grid_search_tries_the_product_in_order_and_keeps_the_first_best():
    seen = []

    def evaluate(model):
        seen.append(model.config.l2)
        # A peak at l2 = 4 on hr; l2 = 2 and 8 tie below it; ndcg prefers small l2.
        return _result(hr=-abs(np.log2(model.config.l2) - 2), ndcg=1 / model.config.l2)

    grid = {"l2": [1.0, 2.0, 4.0, 8.0], "implicit": [True, False]}
    search = grid_search(EASE, grid, evaluate)
    assert seen == [1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 8.0, 8.0]
    assert [t.params for t in search.trials[:2]] == [
        {"l2": 1.0, "implicit": True},
        {"l2": 1.0, "implicit": False},
    ]
    assert search.best_params == {"l2": 4.0, "implicit": True}  # first of the tied pair
    assert search.best.hr == 0.0 and search.metric == "hr"
    assert search.seconds == pytest.approx(8 * 0.75)
    assert grid_search(EASE, grid, evaluate, metric="ndcg").best_params["l2"] == 1.0


def test_grid_search_rejects_bad_arguments():
    with pytest.raises(ValueError, match="metric must be one of"):
        grid_search(EASE, {"l2": [1.0]}, lambda m: _result(0.0), metric="auc")
    with pytest.raises(ValueError, match="grid is empty"):
        grid_search(EASE, {}, lambda m: _result(0.0))
    with pytest.raises(ValueError, match=r"grid\['l2'\] has no candidate values"):
        grid_search(EASE, {"l2": []}, lambda m: _result(0.0))
    with pytest.raises(ValueError, match="l2 must be finite and > 0; got -1.0"):
        grid_search(EASE, {"l2": [-1.0]}, lambda m: _result(0.0))


def test_tuning_on_the_validation_split_prefers_a_personalised_model():
    # Two taste groups: users 0-19 use items 0-9, users 20-39 items 10-19, plus one popular
    # item everybody has. Collaborative filtering must beat popularity on the held-out items.
    rng = np.random.default_rng(5)
    rows = []
    for user in range(40):
        group = np.arange(10) + (0 if user < 20 else 10)
        rows += [(user, int(i)) for i in rng.choice(group, 6, replace=False)] + [(user, 20)]
    train = pd.DataFrame(rows, columns=["user_id", "item_id"])
    validation = holdout_validation(train, n_negatives=9, seed=0)

    def make(kind, l2=1.0):
        return Popularity() if kind == "popularity" else EASE(l2=l2)

    search = grid_search(
        make, {"kind": ["popularity", "ease"], "l2": [1.0, 10.0]},
        lambda m: evaluate_ncf(m, validation, k=3),
    )  # fmt: skip
    assert search.best_params["kind"] == "ease"
    by_kind = {t.params["kind"]: t.result.hr for t in search.trials}
    assert by_kind["ease"] > by_kind["popularity"]


def test_the_experiments_selection_never_reads_the_test_items():
    """The NCF experiment selects on holdout_validation(train): other test items, same choice."""
    from benchmarks.experiments.recommenders_offline import validation_searches
    from recgym.recommenders.offline_evaluation import NCFData

    n_users, n_items = 40, 150
    train = _interactions(7, n_users=n_users, n_items=n_items)[["user_id", "item_id"]]
    items = pd.DataFrame({"item_id": np.arange(n_items)})

    def protocol(test_seed: int) -> NCFData:
        rng = np.random.default_rng(test_seed)
        return NCFData(
            train=train,
            test_items=rng.integers(0, n_items, n_users),
            negatives=rng.integers(0, n_items, (n_users, 99)),
            items=items,
        )

    grid = {"dropout": [0.0, 0.3, 0.6], "l2": [0.5, 5.0, 50.0]}
    first = validation_searches(protocol(1), {"EDLAE": (EASE, grid)}, seed=3)["EDLAE"]
    second = validation_searches(protocol(2), {"EDLAE": (EASE, grid)}, seed=3)["EDLAE"]
    assert first.best_params == second.best_params
    assert [(t.result.hr, t.result.ndcg) for t in first.trials] == [
        (t.result.hr, t.result.ndcg) for t in second.trials
    ]
    # The two test sets do score differently, so reading them would have shown.
    assert (
        evaluate_ncf(EASE(l2=5.0), protocol(1)).ndcg != evaluate_ncf(EASE(l2=5.0), protocol(2)).ndcg
    )
    # And what the search scores is the seeded validation split of the training pairs.
    validation = holdout_validation(train, items, seed=3)
    for trial in first.trials:
        expected = evaluate_ncf(EASE(**trial.params), validation)
        assert (trial.result.hr, trial.result.ndcg) == (expected.hr, expected.ndcg)
