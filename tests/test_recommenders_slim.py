"""SLIM: the coordinate descent against an independent solver, its optimality and its inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.optimize import minimize

from recgym.recommenders import SLIM, SLIMConfig
from recgym.recommenders.slim import slim_weights


def _interactions(seed: int, n_users: int, n_items: int, density: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((n_users, n_items)) < density).astype(np.float64)


def _column_by_lbfgs(x: np.ndarray, item: int, l1: float, l2: float) -> np.ndarray:
    """Column ``item`` of full SLIM by a generic bound-constrained solver (L-BFGS-B, w >= 0)."""
    others = np.delete(np.arange(x.shape[1]), item)
    xo, target = x[:, others], x[:, item]

    def loss(w):
        residual = target - xo @ w
        value = 0.5 * residual @ residual + 0.5 * l2 * w @ w + l1 * w.sum()
        return value, -xo.T @ residual + l2 * w + l1

    result = minimize(loss, np.zeros(len(others)), jac=True, method="L-BFGS-B",
                      bounds=[(0, None)] * len(others), options={"ftol": 1e-15, "gtol": 1e-12})  # fmt: skip
    column = np.zeros(x.shape[1])
    column[others] = result.x
    return column


def test_full_candidate_set_equals_slim_solved_by_a_generic_solver():
    x = _interactions(0, 50, 9, 0.35)
    l1, l2 = 0.7, 1.5
    weights, sweeps = slim_weights(sp.csr_matrix(x), l1, l2, 8, n_sweeps=5000, tolerance=1e-13)
    assert sweeps < 5000
    expected = np.column_stack([_column_by_lbfgs(x, i, l1, l2) for i in range(9)])
    np.testing.assert_allclose(weights.toarray(), expected, atol=1e-6)
    assert weights.nnz < 9 * 8  # the L1 penalty leaves zeros


@settings(max_examples=30, deadline=None)
@given(
    hnp.arrays(np.float64, st.tuples(st.integers(2, 8), st.integers(2, 7)),
               elements=st.sampled_from([0.0, 0.0, 1.0, 3.0])),
    st.floats(0.0, 3.0),
    st.floats(0.05, 20.0),
    st.integers(1, 6),
)  # fmt: skip
def test_weights_satisfy_the_optimality_conditions(x, l1, l2, n_candidates):
    """KKT of min 1/2 w'(G + l2 I)w - w'g + l1 sum(w), w >= 0: gradient 0 where w > 0, >= 0 at 0."""
    weights, _ = slim_weights(sp.csr_matrix(x), l1, l2, n_candidates, n_sweeps=3000,
                              tolerance=1e-13)  # fmt: skip
    w = weights.toarray()
    gram = x.T @ x
    assert np.all(w >= 0) and np.all(np.diag(w) == 0)
    n_items = x.shape[1]
    assert np.all((w > 0).sum(axis=0) <= min(n_candidates, n_items - 1))
    for item in range(n_items):
        support = np.flatnonzero(w[:, item] > 0)
        gradient = gram @ w[:, item] + l2 * w[:, item] - gram[:, item] + l1
        np.testing.assert_allclose(gradient[support], 0.0, atol=1e-7)


def test_candidates_are_the_most_cosine_similar_items():
    # Item 0 co-occurs with items 1 and 2 (in that order of strength) and never with item 3.
    x = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 1.0]])
    weights, _ = slim_weights(sp.csr_matrix(x), 0.0, 0.1, 1)
    assert np.flatnonzero(weights.toarray()[:, 0]).tolist() == [1]


def test_model_scores_rows_times_weights_and_folds_in():
    x = _interactions(1, 40, 12, 0.3)
    users, items = np.nonzero(x)
    frame = pd.DataFrame({"user_id": users, "item_id": items})
    model = SLIM(l1=0.2, l2=1.0, n_candidates=5).fit(frame)
    w = model.item_weights.toarray()
    np.testing.assert_allclose(model.score_all([0, 3]), x[[0, 3]] @ w, rtol=1e-12)
    for user in (0, 7, 21):
        np.testing.assert_allclose(
            model.score_history(items[users == user]), x[user] @ w, rtol=1e-12, atol=1e-15
        )
    np.testing.assert_array_equal(model.score_all([99])[0], x.sum(axis=0))  # cold: popularity
    with pytest.raises(TypeError, match="does not predict ratings"):
        model.predict(0, 1)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"l1": -1.0}, "l1 must be finite and >= 0; got -1.0"),
        ({"l2": float("inf")}, "l2 must be finite and >= 0; got inf"),
        ({"l1": 0.0, "l2": 0.0}, r"needs some regularisation \(l1 \+ l2 > 0\)"),
        ({"n_candidates": 0}, "n_candidates must be a positive integer; got 0"),
        ({"n_sweeps": 1.5}, "n_sweeps must be a positive integer; got 1.5"),
        ({"tolerance": -1e-3}, "tolerance must be finite and >= 0; got -0.001"),
        ({"max_items": True}, "max_items must be a positive integer; got True"),
    ],
)
def test_bad_hyper_parameters_name_the_field_and_value(overrides, message):
    with pytest.raises(ValueError, match=message):
        SLIMConfig(**overrides)


def test_refuses_a_catalogue_above_max_items():
    frame = pd.DataFrame({"user_id": [0, 1], "item_id": [0, 1]})
    with pytest.raises(ValueError, match="n_items=3 exceeds max_items=2"):
        SLIM(max_items=2).fit(frame, pd.DataFrame(index=range(3)))
