"""The functional biased-MF core shared with the simulator: recovery, determinism, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from recgym.biased_mf import BiasedMFModel, fit_biased_mf


def _planted(
    seed: int = 0, n_users: int = 60, n_items: int = 50, rank: int = 3, density: float = 0.5
):
    """A rank-``rank`` matrix plus biases, observed on a random ``density`` fraction of cells."""
    rng = np.random.default_rng(seed)
    p = rng.normal(0, 1, (n_users, rank))
    q = rng.normal(0, 1, (n_items, rank))
    bu = rng.normal(0, 0.5, n_users)
    bi = rng.normal(0, 0.5, n_items)
    full = 3.0 + bu[:, None] + bi[None, :] + p @ q.T
    mask = rng.random((n_users, n_items)) < density
    users, items = np.nonzero(mask)
    return users, items, full[users, items], full, ~mask


def test_recovers_planted_low_rank_matrix():
    users, items, values, full, held_out = _planted()
    model = fit_biased_mf(
        users,
        items,
        values,
        n_users=60,
        n_items=50,
        n_factors=3,
        reg=1e-3,
        bias_reg=1e-3,
        reg_exponent=0.0,
        n_iters=60,
        seed=1,
    )
    train_err = np.abs(model.predict(users, items) - values).max()
    hu, hi = np.nonzero(held_out)
    test_rmse = np.sqrt(np.mean((model.predict(hu, hi) - full[hu, hi]) ** 2))
    spread = full.std()
    assert train_err < 0.05 * spread
    assert test_rmse < 0.05 * spread


def test_shapes_dtypes_and_bias_only_for_unrated_rows():
    users = np.array([0, 0, 1, 2])
    items = np.array([0, 1, 1, 2])
    model = fit_biased_mf(users, items, [5.0, 3.0, 4.0, 1.0], n_users=4, n_items=5, n_factors=2)
    assert isinstance(model, BiasedMFModel)
    assert model.user_factors.shape == (4, 2) and model.item_factors.shape == (5, 2)
    for arr in (model.user_bias, model.item_bias, model.user_factors, model.item_factors):
        assert arr.dtype == np.float32 and np.all(np.isfinite(arr))
    # user 3 and items 3, 4 have no ratings: zero parameters, so they predict from the rest.
    assert model.user_bias[3] == 0 and not model.user_factors[3].any()
    assert not model.item_factors[3:].any() and not model.item_bias[3:].any()
    assert model.predict(3, 4) == pytest.approx(model.global_mean)
    assert model.global_mean == pytest.approx(3.25)
    np.testing.assert_allclose(
        model.score_all(1), model.predict(np.full(5, 1), np.arange(5)), rtol=1e-6
    )
    assert model.predict([[0], [1]], [0, 1, 2]).shape == (2, 3)


def test_deterministic_given_seed_and_seed_matters():
    users, items, values, *_ = _planted(seed=3)
    kw = dict(n_users=60, n_items=50, n_factors=4, n_iters=5)
    a = fit_biased_mf(users, items, values, seed=7, **kw)
    b = fit_biased_mf(users, items, values, seed=7, **kw)
    c = fit_biased_mf(users, items, values, seed=8, **kw)
    np.testing.assert_array_equal(a.user_factors, b.user_factors)
    np.testing.assert_array_equal(a.item_bias, b.item_bias)
    assert not np.array_equal(a.user_factors, c.user_factors)


def test_order_of_ratings_does_not_matter():
    users, items, values, *_ = _planted(seed=4)
    perm = np.random.default_rng(0).permutation(len(users))
    kw = dict(n_users=60, n_items=50, n_factors=4, n_iters=4, seed=0)
    a = fit_biased_mf(users, items, values, **kw)
    b = fit_biased_mf(users[perm], items[perm], values[perm], **kw)
    np.testing.assert_allclose(a.predict(users, items), b.predict(users, items), atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(user_ids=[], item_ids=[], ratings=[]), "empty"),
        (dict(user_ids=[0, 1], item_ids=[0], ratings=[1.0]), "equal length"),
        (
            dict(user_ids=[0, 5], item_ids=[0, 1], ratings=[1.0, 2.0]),
            r"user_ids must lie in \[0, 3\); got 5",
        ),
        (dict(user_ids=[0, 1], item_ids=[0, -1], ratings=[1.0, 2.0]), "item_ids must lie"),
        (dict(user_ids=[0, 1], item_ids=[0, 1], ratings=[1.0, np.nan]), "finite"),
        (dict(user_ids=[0, 0], item_ids=[1, 1], ratings=[1.0, 2.0]), "duplicate"),
        (dict(user_ids=[0.5], item_ids=[0], ratings=[1.0]), "integer"),
        (
            dict(user_ids=[0], item_ids=[0], ratings=[1.0], n_factors=0),
            "n_factors must be a positive",
        ),
        (dict(user_ids=[0], item_ids=[0], ratings=[1.0], reg=-1.0), "reg must be"),
        (dict(user_ids=[0], item_ids=[0], ratings=[1.0], n_iters=0), "n_iters"),
    ],
)
def test_bad_inputs_raise_naming_the_argument(kwargs, match):
    kwargs = dict(n_users=3, n_items=3) | kwargs
    with pytest.raises(ValueError, match=match):
        fit_biased_mf(**kwargs)


def test_model_rejects_inconsistent_shapes_and_bad_ids():
    z = np.zeros
    with pytest.raises(ValueError, match="user_factors"):
        BiasedMFModel(
            0.0, z(3, np.float32), z(2, np.float32), z((2, 4), np.float32), z((2, 4), np.float32)
        )
    model = BiasedMFModel(
        0.0, z(3, np.float32), z(2, np.float32), z((3, 4), np.float32), z((2, 4), np.float32)
    )
    with pytest.raises(ValueError, match=r"item_ids must lie in \[0, 2\)"):
        model.predict([0], [2])


def test_simulator_world_and_recommender_share_one_utility():
    """The world builder, the dynamics and the recommender evaluate the same MF function: equal
    scores for the same parameters, and the environment package never imports the recommenders."""
    import subprocess
    import sys

    from recgym.biased_mf import mf_pair_scores, mf_scores

    rng = np.random.default_rng(0)
    mu, bu, bi = 3.5, rng.normal(size=4), rng.normal(size=6)
    p, q = rng.normal(size=(4, 3)), rng.normal(size=(6, 3))
    table = mf_scores(mu, bu, bi, p, q)
    assert table.shape == (4, 6)
    np.testing.assert_allclose(table[2], mf_scores(mu, bu[2], bi, p[2], q), rtol=1e-12)
    users, items = np.array([0, 3, 1]), np.array([5, 0, 2])
    np.testing.assert_allclose(mf_pair_scores(mu, bu[users], bi[items], p[users], q[items]),
                               table[users, items], rtol=1e-12)
    code = ("import sys, recgym.envs.movielens; "
            "assert not [m for m in sys.modules if m.startswith('recgym.recommenders')], 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
