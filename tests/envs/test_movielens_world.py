"""World building: filtering, the hidden MF, genres, the user split, the logged profile, the cache."""

from __future__ import annotations

import numpy as np
import pytest

from recgym.datasets import load_movielens
from recgym.envs.movielens import WorldSettings, build_world
from recgym.envs.movielens import world as world_module


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RECGYM_CACHE_DIR", str(tmp_path))
    world_module._cached_world.cache_clear()
    yield tmp_path
    world_module._cached_world.cache_clear()


def test_world_structure(synthetic_world):
    w = synthetic_world
    ds = load_movielens("synthetic")
    r = ds.ratings
    kept = r[r.item_id.isin(w.item_ids) & r.user_id.isin(w.user_ids)]
    assert (kept.groupby("item_id").size().reindex(w.item_ids).fillna(0) >= 1).all()
    # filtering: every kept item had >= 5 ratings before the user filter
    counts = r.item_id.value_counts()
    assert (counts.reindex(w.item_ids) >= w.settings.min_item_ratings).all()
    np.testing.assert_allclose(w.item_genres.sum(axis=1), 1.0, atol=1e-6)
    assert set(w.train_users).isdisjoint(w.test_users)
    assert len(w.train_users) + len(w.test_users) == w.n_users
    assert abs(len(w.test_users) / w.n_users - 0.2) < 0.01
    np.testing.assert_allclose(w.profile_genres.sum(axis=1), 1.0, atol=1e-5)
    # the observable embedding is a separate model, never the hidden world's factors
    assert w.profile_embedding.shape[1] == w.settings.logged_n_factors != w.user_factors.shape[1]
    # the logged history is each user's earliest ratings only
    assert len(w.logged_ratings) < len(kept)
    assert w.item_popularity.sum() == (np.isin(w.logged_ratings.user, w.train_users)).sum()
    # the hidden MF fits the ratings it was built from
    users = np.searchsorted(w.user_ids, kept.user_id.to_numpy())
    items = np.searchsorted(w.item_ids, kept.item_id.to_numpy())
    rmse = np.sqrt(np.mean((w.utility(users, items) - kept.rating.to_numpy()) ** 2))
    assert rmse < 0.9


def test_cache_is_keyed_by_settings_and_written_atomically(fresh_cache):
    a = build_world("synthetic", n_factors=4, mf_iters=3)
    files = sorted((fresh_cache / "worlds").iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"
    world_module._cached_world.cache_clear()
    b = build_world("synthetic", n_factors=4, mf_iters=3)  # from disk
    np.testing.assert_array_equal(a.user_factors, b.user_factors)
    assert b.settings == a.settings and b.genre_names == a.genre_names
    build_world("synthetic", n_factors=5, mf_iters=3)
    assert len(list((fresh_cache / "worlds").glob("*.npz"))) == 2
    assert not list((fresh_cache / "worlds").glob("*.tmp"))


def test_a_corrupt_cache_file_is_rebuilt(fresh_cache):
    a = build_world("synthetic", n_factors=4, mf_iters=3)
    (path,) = (fresh_cache / "worlds").glob("*.npz")
    path.write_bytes(b"not a zip")
    world_module._cached_world.cache_clear()
    b = build_world("synthetic", n_factors=4, mf_iters=3)
    np.testing.assert_array_equal(a.item_factors, b.item_factors)


def test_cache_is_keyed_by_content_not_by_name(fresh_cache, tmp_path):
    """Two different datasets behind the same path never share a cached world."""
    folder = tmp_path / "data"
    folder.mkdir()
    synthetic = load_movielens("synthetic", seed=0)
    original = synthetic.ratings.rename(columns={"user_id": "userId", "item_id": "movieId"})
    original.to_csv(folder / "ratings.csv", index=False)
    movies = synthetic.items.assign(genres=synthetic.items.genres.map("|".join))
    movies.rename(columns={"item_id": "movieId"})[["movieId", "title", "genres"]].to_csv(
        folder / "movies.csv", index=False
    )
    a = build_world(folder, n_factors=4, mf_iters=3)
    world_module._cached_world.cache_clear()
    changed = original.assign(rating=np.clip(5.5 - original.rating, 0.5, 5.0))
    changed.to_csv(folder / "ratings.csv", index=False)
    b = build_world(folder, n_factors=4, mf_iters=3)
    assert len(list((fresh_cache / "worlds").glob("*.npz"))) == 2
    assert not np.allclose(a.item_bias, b.item_bias)


def test_different_seeds_give_different_worlds(fresh_cache):
    a = build_world("synthetic", n_factors=4, mf_iters=3, seed=0)
    b = build_world("synthetic", n_factors=4, mf_iters=3, seed=1)
    assert not np.array_equal(a.test_users, b.test_users)


def test_a_dataset_without_genres_is_refused_clearly(tmp_path):
    ratings = load_movielens("synthetic", seed=0).ratings
    ratings.rename(columns={"user_id": "userId", "item_id": "movieId"}).to_csv(
        tmp_path / "ratings.csv", index=False
    )
    with pytest.raises(ValueError, match="no item genres"):
        build_world(tmp_path, cache=False)


def test_invalid_settings_name_field_and_value():
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\), got 1.5"):
        WorldSettings(test_fraction=1.5)
    with pytest.raises(ValueError, match=r"min_item_ratings must be a positive integer, got 0"):
        WorldSettings(min_item_ratings=0)
    with pytest.raises(ValueError, match="no ratings left"):
        build_world(load_movielens("synthetic"), min_item_ratings=10**6)


def test_movielens_world(movielens_home, fresh_cache):
    w = build_world("ml-latest-small")
    assert w.n_users == 610 and 3000 < w.n_items < 4000 and w.n_genres == 20
    assert w.rating_scale == (0.5, 5.0)
    path = movielens_home / "ml-latest-small"
    world_module._cached_world.cache_clear()
    by_path = build_world(path)
    np.testing.assert_array_equal(by_path.item_ids, w.item_ids)
