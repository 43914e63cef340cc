"""EASE^R and EDLAE: the closed forms against direct solves, invariants, inputs, limits, fold-in."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from recgym.recommenders import EASE, EASEConfig, Popularity
from recgym.recommenders.ease import dense_gram, ease_weights


def _direct_ease(x: np.ndarray, l2: float) -> np.ndarray:
    """Steck's formula with a plain dense inverse: B = I - P diag(1/diag(P)), zero diagonal."""
    p = np.linalg.inv(x.T @ x + l2 * np.eye(x.shape[1]))
    b = np.eye(x.shape[1]) - p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


def _random_interactions(seed: int, n_users: int, n_items: int, density: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((n_users, n_items)) < density).astype(np.float64)


@pytest.mark.parametrize("l2", [0.5, 10.0, 300.0])
def test_weights_equal_a_direct_dense_solve(l2):
    # 700 items: more than one column block of the in-place symmetrisation (512).
    x = _random_interactions(0, 120, 700, 0.05)
    np.testing.assert_allclose(
        ease_weights(sp.csr_matrix(x), l2), _direct_ease(x, l2), rtol=1e-9, atol=1e-13
    )
    np.testing.assert_array_equal(dense_gram(sp.csr_matrix(x)), x.T @ x)


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(np.float64, st.tuples(st.integers(1, 7), st.integers(2, 6)),
               elements=st.sampled_from([0.0, 0.0, 1.0, 2.5, 5.0])),
    st.floats(0.01, 100.0),
)  # fmt: skip
def test_each_column_is_the_ridge_regression_on_the_other_items(x, l2):
    """Steck's closed form equals the definition: column i regresses x_i on the other items."""
    weights = ease_weights(sp.csr_matrix(x), l2)
    assert np.all(np.diag(weights) == 0.0)
    for item in range(x.shape[1]):
        others = np.delete(np.arange(x.shape[1]), item)
        xo = x[:, others]
        ridge = np.linalg.solve(xo.T @ xo + l2 * np.eye(len(others)), xo.T @ x[:, item])
        np.testing.assert_allclose(weights[others, item], ridge, rtol=1e-7, atol=1e-10)


def _edlae_penalty(x: np.ndarray, l2: float, dropout: float) -> np.ndarray:
    """diag(Lambda) = l2 + p / (1 - p) diag(X^T X), written out from Steck (2020)."""
    return l2 + dropout / (1.0 - dropout) * (x * x).sum(axis=0)


# Small interaction matrices (users x items, mostly zeros), a ridge penalty and a dropout rate.
_EDLAE_CASES = (
    hnp.arrays(np.float64, st.tuples(st.integers(1, 7), st.integers(2, 6)),
               elements=st.sampled_from([0.0, 0.0, 1.0, 2.5, 5.0])),
    st.floats(0.01, 100.0),
    st.floats(0.0, 0.9),
)  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(*_EDLAE_CASES)
def test_edlae_columns_minimise_the_emphasised_objective_directly(x, l2, dropout):
    """Zero diagonal: column i is argmin ||x_i - X_-i b||^2 + b^T Lambda_-i b, solved densely."""
    weights = ease_weights(sp.csr_matrix(x), l2, dropout=dropout)
    penalty = _edlae_penalty(x, l2, dropout)
    assert np.all(np.diag(weights) == 0.0)
    for item in range(x.shape[1]):
        others = np.delete(np.arange(x.shape[1]), item)
        xo = x[:, others]
        direct = np.linalg.solve(xo.T @ xo + np.diag(penalty[others]), xo.T @ x[:, item])
        np.testing.assert_allclose(weights[others, item], direct, rtol=1e-7, atol=1e-10)


@settings(max_examples=40, deadline=None)
@given(*_EDLAE_CASES)
def test_dlae_is_the_least_squares_solution_of_the_stacked_system(x, l2, dropout):
    """No constraint: B minimises ||X - XB||^2 + ||Lambda^1/2 B||^2: lstsq on [X; Lambda^1/2]."""
    weights = ease_weights(sp.csr_matrix(x), l2, dropout=dropout, zero_diagonal=False)
    root = np.diag(np.sqrt(_edlae_penalty(x, l2, dropout)))
    stacked_inputs = np.vstack([x, root])
    stacked_targets = np.vstack([x, np.zeros_like(root)])
    direct = np.linalg.lstsq(stacked_inputs, stacked_targets, rcond=None)[0]
    np.testing.assert_allclose(weights, direct, rtol=1e-6, atol=1e-9)


def test_edlae_on_a_small_matrix_equals_a_dense_inverse_and_dropout_zero_is_ease():
    x = _random_interactions(4, 150, 600, 0.05)
    for l2, dropout in [(1.0, 0.5), (30.0, 0.2), (200.0, 0.05)]:
        penalty = _edlae_penalty(x, l2, dropout)
        inverse = np.linalg.inv(x.T @ x + np.diag(penalty))
        expected = np.eye(600) - inverse / np.diag(inverse)[None, :]
        np.fill_diagonal(expected, 0.0)
        got = EASE(l2=l2, dropout=dropout).fit(_frame(x)).item_weights
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-13)
        unconstrained = EASE(l2=l2, dropout=dropout, zero_diagonal=False).fit(_frame(x))
        np.testing.assert_allclose(
            unconstrained.item_weights, inverse @ (x.T @ x), rtol=1e-8, atol=1e-11
        )
    # dropout = 0 is EASE^R bit for bit, and EASE^R is Steck's 2019 formula.
    ease = EASE(l2=30.0).fit(_frame(x)).item_weights
    np.testing.assert_array_equal(EASE(l2=30.0, dropout=0.0).fit(_frame(x)).item_weights, ease)
    np.testing.assert_allclose(ease, _direct_ease(x, 30.0), rtol=1e-9, atol=1e-13)


def test_dropout_with_equal_item_counts_is_ease_with_a_larger_l2():
    """If every G_jj = c, Lambda = (l2 + p c / (1 - p)) I: EDLAE is EASE^R at that l2."""
    n_items = 12
    # User u has items u, u + 1, u + 2 (mod 12): every item has exactly three interactions.
    items = np.concatenate([(np.arange(n_items) + shift) % n_items for shift in range(3)])
    users = np.tile(np.arange(n_items), 3)
    x = np.zeros((n_items, n_items))
    x[users, items] = 1.0
    assert np.all(x.sum(axis=0) == 3)
    frame = pd.DataFrame({"user_id": users, "item_id": items})
    edlae = EASE(l2=2.0, dropout=0.4).fit(frame).item_weights
    np.testing.assert_allclose(
        edlae, EASE(l2=2.0 + 0.4 / 0.6 * 3).fit(frame).item_weights, rtol=1e-10, atol=1e-13
    )


def _frame(x: np.ndarray) -> pd.DataFrame:
    users, items = np.nonzero(x)
    return pd.DataFrame({"user_id": users, "item_id": items})


def test_scores_are_the_users_row_times_the_weights_and_ratings_input():
    x = _random_interactions(1, 30, 12, 0.3)
    x[0, :2] = 1.0  # user 0 is warm; user 30 (beyond range) is cold
    users, items = np.nonzero(x)
    ratings = (users + items) % 5 + 1.0
    frame = pd.DataFrame({"user_id": users, "item_id": items, "rating": ratings})
    model = EASE(l2=2.0).fit(frame)
    np.testing.assert_allclose(model.item_weights, _direct_ease(x, 2.0), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(model.score_all([0, 5]), x[[0, 5]] @ model.item_weights)
    assert model.score(0, 3)[()] == pytest.approx(x[0] @ model.item_weights[:, 3])
    # implicit=False regresses the ratings themselves.
    valued = np.zeros_like(x)
    valued[users, items] = ratings
    explicit = EASE(l2=2.0, implicit=False).fit(frame)
    np.testing.assert_allclose(
        explicit.item_weights, _direct_ease(valued, 2.0), rtol=1e-10, atol=1e-13
    )
    np.testing.assert_allclose(explicit.score_all([3])[0], valued[3] @ explicit.item_weights)
    # Cold users: interaction counts, the same ranking as Popularity(kind="count").
    np.testing.assert_array_equal(model.score_all([30])[0], x.sum(axis=0))
    np.testing.assert_array_equal(
        model.recommend(30, 5)[0], Popularity().fit(frame).recommend(30, 5)[0]
    )


def test_ranks_but_does_not_predict_ratings():
    frame = pd.DataFrame({"user_id": [0, 0, 1], "item_id": [0, 1, 1], "rating": [4.0, 5, 3]})
    model = EASE().fit(frame)
    assert not model.predicts_ratings
    with pytest.raises(TypeError, match="does not predict ratings; use score"):
        model.predict(0, 1)


def test_an_item_without_interactions_scores_zero_for_warm_users():
    frame = pd.DataFrame({"user_id": [0, 0, 1, 1], "item_id": [0, 1, 1, 2]})
    model = EASE(l2=1.0).fit(frame, pd.DataFrame(index=range(4)))
    assert np.all(model.item_weights[3] == 0) and np.all(model.item_weights[:, 3] == 0)
    assert model.score(0, 3)[()] == 0.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"l2": 0.0}, "l2 must be finite and > 0; got 0.0"),
        ({"l2": -5.0}, "l2 must be finite and > 0; got -5.0"),
        ({"l2": float("nan")}, "l2 must be finite and > 0; got nan"),
        ({"l2": True}, "l2 must be finite and > 0; got True"),
        ({"dropout": -0.1}, r"dropout must be a finite number in \[0, 1\); got -0.1"),
        ({"dropout": 1.0}, r"dropout must be a finite number in \[0, 1\); got 1.0"),
        ({"dropout": float("nan")}, r"dropout must be a finite number in \[0, 1\); got nan"),
        ({"dropout": True}, r"dropout must be a finite number in \[0, 1\); got True"),
        ({"zero_diagonal": "yes"}, "zero_diagonal must be a bool; got 'yes'"),
        ({"max_items": 0}, "max_items must be a positive integer; got 0"),
        ({"max_items": 2.5}, "max_items must be a positive integer; got 2.5"),
    ],
)
def test_bad_hyper_parameters_name_the_field_and_value(overrides, message):
    with pytest.raises(ValueError, match=message):
        EASEConfig(**overrides)
    with pytest.raises(ValueError, match=message):
        EASE(**overrides)
    with pytest.raises(ValueError, match="l2 must be finite and > 0; got 0"):
        ease_weights(sp.csr_matrix(np.ones((2, 2))), 0)
    with pytest.raises(ValueError, match=r"dropout must be a finite number in \[0, 1\); got 1"):
        ease_weights(sp.csr_matrix(np.ones((2, 2))), 1.0, dropout=1)


def test_refuses_a_catalogue_above_max_items_before_allocating():
    frame = pd.DataFrame({"user_id": [0, 1], "item_id": [0, 1]})
    huge = pd.DataFrame(index=range(59_047))  # ml-25m's rated movies
    with pytest.raises(
        ValueError, match=r"n_items=59047 exceeds max_items=20000: .* 27\.9 GB of memory"
    ):
        EASE().fit(frame, huge)
    with pytest.raises(ValueError, match="n_items=3 exceeds max_items=2"):
        EASE(max_items=2).fit(frame, pd.DataFrame(index=range(3)))
    assert EASE(max_items=3).fit(frame, pd.DataFrame(index=range(3))).n_items == 3


def test_fold_in_of_a_new_user_equals_the_trained_row():
    x = _random_interactions(2, 40, 15, 0.25)
    users, items = np.nonzero(x)
    model = EASE(l2=3.0).fit(pd.DataFrame({"user_id": users, "item_id": items}))
    for user in range(0, 40, 7):
        history = items[users == user]
        np.testing.assert_allclose(
            model.score_history(history[::-1]), model.score_all([user])[0], rtol=1e-12
        )


def test_fit_is_deterministic_bit_for_bit():
    x = _random_interactions(3, 50, 40, 0.2)
    users, items = np.nonzero(x)
    frame = pd.DataFrame({"user_id": users, "item_id": items})
    first = EASE(l2=7.0).fit(frame).item_weights
    np.testing.assert_array_equal(first, EASE(l2=7.0).fit(frame).item_weights)


@pytest.fixture(scope="module")
def ncf(movielens_home):
    from recgym.recommenders.offline_evaluation import load_ncf_ml1m

    if not (movielens_home / "ml-1m" / "ncf").is_dir():
        pytest.skip("NCF ML-1M protocol files not available")
    return load_ncf_ml1m(movielens_home / "ml-1m")


def test_ncf_ml1m_with_the_validation_selected_l2(ncf):
    """Regression guard: EASE^R at the l2 the validation search selected (docs: 0.719 / 0.447)."""
    from benchmarks.experiments.recommenders_offline import TUNED_EASE
    from recgym.recommenders.offline_evaluation import evaluate_ncf

    result = evaluate_ncf(EASE(**TUNED_EASE), ncf)
    assert result.hr >= 0.715 and result.ndcg >= 0.44


def test_ncf_ml1m_edlae_with_the_validation_selected_parameters(ncf):
    """Regression guard: EDLAE at the validation selection (docs: HR@10 0.719, NDCG@10 0.448)."""
    from benchmarks.experiments.recommenders_offline import TUNED_EDLAE
    from recgym.recommenders.offline_evaluation import evaluate_ncf

    result = evaluate_ncf(EASE(**TUNED_EDLAE), ncf)
    assert result.hr >= 0.715 and result.ndcg >= 0.44
