"""World building for the MovieLens simulator: filter, fit the hidden MF, split users, log profiles.

A *world* is everything the simulator derives from a ratings dataset, once per dataset and
settings, cached on disk (``recgym.datasets.cache_dir() / "worlds"``, i.e. under
``$RECGYM_CACHE_DIR`` when set) as an ``.npz`` written atomically:

1. **Filter** sparse items (fewer than ``min_item_ratings`` ratings) then sparse users (fewer than
   ``min_user_ratings``), re-indexing both contiguously (the world's ``user``/``item`` indices;
   ``user_ids``/``item_ids`` map back to the dataset's).
2. **Hidden ground truth**: a biased MF ``v(u,i) = mu + b_u + b_i + p_u . q_i`` fitted on all the
   filtered ratings with :func:`recgym.biased_mf.fit_biased_mf`.
3. **Genres**: ``g_i`` = the item's multi-hot genres normalised to sum 1 (uniform over all genres
   for an item without genres).
4. **Users** are split into train / test populations (``test_fraction``, seeded).
5. **Logged profile** (what a production recommender knows): each user's earliest
   ``logged_fraction`` of ratings (by timestamp) form the logged history; the observable profile is
   the rating-weighted genre distribution of that history and the user embedding of a *separate*
   MF (``logged_n_factors``, another seed) fitted on the logged histories only; items get the same
   MF's item embeddings. Item popularity = number of logged ratings by train users.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recgym.biased_mf import fit_biased_mf, mf_pair_scores, mf_scores
from recgym.core import finite, is_int, require
from recgym.datasets import RatingsDataset, cache_dir, load_movielens

WORLD_FORMAT = 2  # 2: the mean utility is computed by recgym.biased_mf.mf_scores


@dataclass(frozen=True)
class WorldSettings:
    """Settings of world building (part of the cache key).

    Attributes:
        min_item_ratings: Drop items with fewer ratings.
        min_user_ratings: Then drop users with fewer ratings.
        n_factors: Latent dimension of the hidden MF.
        mf_reg: L2 penalty of the hidden MF (see :func:`~recgym.biased_mf.fit_biased_mf`).
        mf_iters: ALS sweeps of both MF fits.
        test_fraction: Fraction of users in the test population.
        logged_fraction: Fraction of each user's ratings (earliest first) in the logged history.
        logged_n_factors: Latent dimension of the logged (observable) MF.
        candidate_pool_size: Items in each user's retrieval pool (candidate mode): the top items
            by the logged MF's score.
        seed: Seed of the MF initialisations and the user split.
    """

    min_item_ratings: int = 5
    min_user_ratings: int = 5
    n_factors: int = 16
    mf_reg: float = 1.25
    mf_iters: int = 15
    test_fraction: float = 0.2
    logged_fraction: float = 0.8
    logged_n_factors: int = 8
    candidate_pool_size: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("min_item_ratings", "min_user_ratings", "n_factors", "mf_iters", "logged_n_factors",
                     "candidate_pool_size"):
            require(lambda v: is_int(v) and v >= 1, name, getattr(self, name), "a positive integer")
        for name in ("test_fraction", "logged_fraction"):
            require(lambda v: 0.0 < v < 1.0, name, getattr(self, name), "in (0, 1)")
        require(lambda v: finite(v) and v >= 0, "mf_reg", self.mf_reg, "finite and >= 0")
        require(lambda v: is_int(v) and v >= 0, "seed", self.seed, "a non-negative integer")


@dataclass(frozen=True, eq=False)
class MovieLensWorld:
    """A built world (NumPy arrays); users x items in the world's own contiguous indices.

    Attributes:
        dataset: Name or path of the source dataset.
        synthetic: Whether the source is the synthetic world.
        settings: The :class:`WorldSettings` used.
        genre_names: Genre vocabulary, in column order.
        rating_scale: ``(min, max)`` of the dataset's ratings.
        user_ids: ``(n_users,)`` dataset ``user_id`` of each world user.
        item_ids: ``(n_items,)`` dataset ``item_id`` of each world item.
        global_mean: Hidden MF ``mu``.
        user_bias: ``(n_users,)`` hidden ``b_u``.
        item_bias: ``(n_items,)`` hidden ``b_i``.
        user_factors: ``(n_users, n_factors)`` hidden ``p_u``.
        item_factors: ``(n_items, n_factors)`` hidden ``q_i``.
        item_genres: ``(n_items, n_genres)`` ``g_i``, rows sum to 1.
        item_genre_flags: ``(n_items, n_genres)`` multi-hot genres.
        user_mean_utility: ``(n_users,)`` mean of ``clip(v(u, i))`` over the catalogue.
        user_genre_share: ``(n_users, n_genres)`` share of the user's ratings per genre (all
            ratings; hidden; the Fairness preset's initial genre affinity).
        profile_genres: ``(n_users, n_genres)`` logged, rating-weighted genre distribution.
        profile_embedding: ``(n_users, logged_n_factors)`` logged-MF user embedding.
        item_embedding: ``(n_items, logged_n_factors)`` logged-MF item embedding.
        logged_user_bias: ``(n_users,)`` logged-MF user bias.
        logged_item_bias: ``(n_items,)`` logged-MF item bias.
        logged_global_mean: Logged-MF ``mu``.
        item_popularity: ``(n_items,)`` number of logged ratings by train users.
        train_users: Sorted world user indices of the train population.
        test_users: Sorted world user indices of the test population.
        logged_ratings: The logged history: ``user``, ``item`` (world indices), ``rating``,
            ``timestamp``.
    """

    dataset: str
    synthetic: bool
    settings: WorldSettings
    genre_names: tuple[str, ...]
    rating_scale: tuple[float, float]
    user_ids: np.ndarray
    item_ids: np.ndarray
    global_mean: float
    user_bias: np.ndarray
    item_bias: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray
    item_genres: np.ndarray
    item_genre_flags: np.ndarray
    user_mean_utility: np.ndarray
    user_genre_share: np.ndarray
    profile_genres: np.ndarray
    profile_embedding: np.ndarray
    item_embedding: np.ndarray
    logged_user_bias: np.ndarray
    logged_item_bias: np.ndarray
    logged_global_mean: float
    item_popularity: np.ndarray
    train_users: np.ndarray
    test_users: np.ndarray
    logged_ratings: pd.DataFrame

    @property
    def n_users(self) -> int:
        """Number of world users."""
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        """Catalogue size."""
        return len(self.item_ids)

    @property
    def n_genres(self) -> int:
        """Number of genres."""
        return len(self.genre_names)

    def utility(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Hidden base utility ``v(u, i) = mu + b_u + b_i + p_u . q_i`` (unclipped), elementwise."""
        users, items = np.asarray(users), np.asarray(items)
        return mf_pair_scores(self.global_mean, self.user_bias[users], self.item_bias[items],
                              self.user_factors[users], self.item_factors[items])

    def users_of(self, population: str) -> np.ndarray:
        """World user indices of ``"train"``, ``"test"`` or ``"all"`` users."""
        if population == "train":
            return self.train_users
        if population == "test":
            return self.test_users
        if population == "all":
            return np.arange(self.n_users)
        raise ValueError(f"users must be 'train', 'test' or 'all', got {population!r}")

    def candidate_pool(self, size: int | None = None, chunk: int = 1024) -> np.ndarray:
        """``(n_users, size)`` each user's top items by the logged MF's score (retrieval pool)."""
        size = min(self.settings.candidate_pool_size if size is None else size, self.n_items)
        out = np.empty((self.n_users, size), dtype=np.int32)
        for start in range(0, self.n_users, chunk):
            stop = min(start + chunk, self.n_users)
            scores = (self.logged_item_bias[None, :] + self.profile_embedding[start:stop] @ self.item_embedding.T)
            top = np.argpartition(-scores, size - 1, axis=1)[:, :size]
            order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
            out[start:stop] = np.take_along_axis(top, order, axis=1)
        return out


def _fingerprint(data: RatingsDataset) -> str:
    """SHA-256 of what a world is built from: the ratings and the item genres.

    The disk cache is keyed by *content*, not by a name or a path: a different copy of a dataset
    (another ``$RECGYM_DATA_HOME``, a look-alike file, a changed synthetic generator) never
    reuses a world built from other data.
    """
    digest = hashlib.sha256()
    digest.update(f"{data.n_users}:{data.n_items}:{data.genre_names}".encode())
    for column in ("user_id", "item_id", "rating", "timestamp"):
        digest.update(np.ascontiguousarray(data.ratings[column].to_numpy()).tobytes())
    digest.update(np.ascontiguousarray(data.genre_matrix).tobytes())
    return digest.hexdigest()


def _cache_file(data: RatingsDataset, settings: WorldSettings) -> Path:
    payload = json.dumps({"format": WORLD_FORMAT, "content": _fingerprint(data),
                          "settings": dataclasses.asdict(settings)}, sort_keys=True, default=str)
    digest = hashlib.sha256(payload.encode()).hexdigest()[:20]
    name = Path(str(data.name)).name
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return Path(cache_dir()) / "worlds" / f"{safe}-{digest}.npz"


def build_world(
    dataset: str | os.PathLike | RatingsDataset = "ml-latest-small",
    settings: WorldSettings | None = None,
    *,
    cache: bool = True,
    synthetic_seed: int = 0,
    **setting_overrides: Any,
) -> MovieLensWorld:
    """Build (or load from the cache) the world of a dataset.

    Args:
        dataset: A dataset name of :func:`recgym.datasets.load_movielens` (``"ml-latest-small"``,
            ``"ml-100k"``, ..., ``"synthetic"``), a path to MovieLens files, or a loaded
            :class:`~recgym.datasets.RatingsDataset` (never cached).
        settings: World-building settings (default :class:`WorldSettings`).
        cache: Read/write the on-disk cache (``cache_dir()/worlds``).
        synthetic_seed: Seed of the synthetic dataset when ``dataset="synthetic"``.
        **setting_overrides: Fields of :class:`WorldSettings` to override.

    Returns:
        The :class:`MovieLensWorld` (identical for identical inputs).
    """
    settings = dataclasses.replace(settings or WorldSettings(), **setting_overrides)
    if isinstance(dataset, RatingsDataset):
        return _build(dataset, settings)
    # The in-process memo is keyed by what resolution depends on; the disk cache by content.
    return _cached_world(os.fspath(dataset), settings, cache, synthetic_seed,
                         os.environ.get("RECGYM_CACHE_DIR", ""), os.environ.get("RECGYM_DATA_HOME", ""))


@lru_cache(maxsize=8)
def _cached_world(dataset: str, settings: WorldSettings, cache: bool, synthetic_seed: int,
                  _cache_env: str, _data_home_env: str) -> MovieLensWorld:
    kwargs = {"seed": synthetic_seed} if dataset == "synthetic" else {}
    data = load_movielens(dataset, **kwargs)
    path = _cache_file(data, settings)
    if cache and path.is_file():
        try:
            return _load(path)
        except (OSError, ValueError, KeyError):
            pass  # a stale or foreign file: rebuild and overwrite it
    world = _build(data, settings)
    if cache:
        _save(world, path)
    return world


# ---------------------------------------------------------------------------------------------- build
def _build(ds: RatingsDataset, settings: WorldSettings) -> MovieLensWorld:
    r = ds.ratings[["user_id", "item_id", "rating", "timestamp"]]
    item_counts = r["item_id"].value_counts()
    r = r[r["item_id"].isin(item_counts.index[item_counts >= settings.min_item_ratings])]
    user_counts = r["user_id"].value_counts()
    r = r[r["user_id"].isin(user_counts.index[user_counts >= settings.min_user_ratings])]
    if r.empty:
        raise ValueError(
            f"no ratings left in {ds.name!r} after filtering (min_item_ratings={settings.min_item_ratings}, "
            f"min_user_ratings={settings.min_user_ratings})"
        )
    item_ids = np.unique(r["item_id"].to_numpy())
    user_ids = np.unique(r["user_id"].to_numpy())
    users = np.searchsorted(user_ids, r["user_id"].to_numpy()).astype(np.int64)
    items = np.searchsorted(item_ids, r["item_id"].to_numpy()).astype(np.int64)
    ratings = r["rating"].to_numpy(np.float64)
    stamps = r["timestamp"].to_numpy(np.int64)
    n_users, n_items = len(user_ids), len(item_ids)

    hidden = fit_biased_mf(users, items, ratings, n_users=n_users, n_items=n_items,
                           n_factors=settings.n_factors, reg=settings.mf_reg, n_iters=settings.mf_iters,
                           seed=settings.seed)

    flags = np.asarray(ds.genre_matrix, dtype=np.float32)[item_ids]
    n_genres = flags.shape[1]
    if n_genres == 0:
        raise ValueError(
            f"dataset {ds.name!r} has no item genres; the simulator's habit and satiation live in "
            "genre space, so it needs the items' genres (e.g. movies.csv beside ratings.csv)"
        )
    counts = flags.sum(axis=1, keepdims=True)
    item_genres = np.where(counts > 0, flags / np.maximum(counts, 1.0), 1.0 / n_genres).astype(np.float32)

    rng = np.random.default_rng(settings.seed)
    perm = rng.permutation(n_users)
    n_test = max(1, round(settings.test_fraction * n_users)) if n_users > 1 else 0
    test_users = np.sort(perm[:n_test]).astype(np.int32)
    train_users = np.sort(perm[n_test:]).astype(np.int32)

    # logged history: each user's earliest logged_fraction of ratings (at least one)
    order = np.lexsort((items, stamps, users))
    u_s, i_s, r_s, t_s = users[order], items[order], ratings[order], stamps[order]
    per_user = np.bincount(u_s, minlength=n_users)
    start = np.concatenate([[0], np.cumsum(per_user)[:-1]])
    rank = np.arange(len(u_s)) - start[u_s]
    keep = rank < np.maximum(1, np.floor(settings.logged_fraction * per_user[u_s]))
    lu, li, lr, lt = u_s[keep], i_s[keep], r_s[keep], t_s[keep]
    logged = fit_biased_mf(lu, li, lr, n_users=n_users, n_items=n_items, n_factors=settings.logged_n_factors,
                           reg=settings.mf_reg, n_iters=settings.mf_iters, seed=settings.seed + 1)

    weighted = np.zeros((n_users, n_genres))
    np.add.at(weighted, lu, lr[:, None] * item_genres[li])
    profile_genres = (weighted / np.maximum(weighted.sum(axis=1, keepdims=True), 1e-12)).astype(np.float32)
    share = np.zeros((n_users, n_genres))
    np.add.at(share, users, item_genres[items])
    user_genre_share = (share / np.maximum(share.sum(axis=1, keepdims=True), 1e-12)).astype(np.float32)
    is_train = np.zeros(n_users, dtype=bool)
    is_train[train_users] = True
    popularity = np.bincount(li[is_train[lu]], minlength=n_items).astype(np.float32)

    lo, hi = ds.rating_scale
    mean_utility = np.empty(n_users, dtype=np.float32)
    for s in range(0, n_users, 1024):
        v = mf_scores(hidden.global_mean, hidden.user_bias[s:s + 1024], hidden.item_bias,
                      hidden.user_factors[s:s + 1024], hidden.item_factors)
        mean_utility[s:s + 1024] = np.clip(v, lo, hi).mean(axis=1)

    return MovieLensWorld(
        dataset=str(ds.name), synthetic=bool(ds.synthetic), settings=settings,
        genre_names=tuple(ds.genre_names), rating_scale=(float(lo), float(hi)),
        user_ids=user_ids.astype(np.int64), item_ids=item_ids.astype(np.int64),
        global_mean=float(hidden.global_mean),
        user_bias=hidden.user_bias.astype(np.float32), item_bias=hidden.item_bias.astype(np.float32),
        user_factors=hidden.user_factors.astype(np.float32), item_factors=hidden.item_factors.astype(np.float32),
        item_genres=item_genres, item_genre_flags=flags, user_mean_utility=mean_utility,
        user_genre_share=user_genre_share, profile_genres=profile_genres,
        profile_embedding=logged.user_factors.astype(np.float32), item_embedding=logged.item_factors.astype(np.float32),
        logged_user_bias=logged.user_bias.astype(np.float32), logged_item_bias=logged.item_bias.astype(np.float32),
        logged_global_mean=float(logged.global_mean), item_popularity=popularity,
        train_users=train_users, test_users=test_users,
        logged_ratings=pd.DataFrame({"user": lu, "item": li, "rating": lr, "timestamp": lt}),
    )


# ---------------------------------------------------------------------------------------------- cache
_ARRAYS = [f.name for f in dataclasses.fields(MovieLensWorld)
           if f.name not in {"dataset", "synthetic", "settings", "genre_names", "rating_scale", "global_mean",
                             "logged_global_mean", "logged_ratings"}]


def _save(world: MovieLensWorld, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": WORLD_FORMAT, "dataset": world.dataset, "synthetic": world.synthetic,
        "settings": dataclasses.asdict(world.settings), "genre_names": list(world.genre_names),
        "rating_scale": list(world.rating_scale), "global_mean": world.global_mean,
        "logged_global_mean": world.logged_global_mean,
    }
    arrays = {name: getattr(world, name) for name in _ARRAYS}
    for col in ("user", "item", "rating", "timestamp"):
        arrays[f"logged_{col}"] = world.logged_ratings[col].to_numpy()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load(path: Path) -> MovieLensWorld:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(z["__meta__"].tobytes().decode())
        if meta.get("format") != WORLD_FORMAT:
            raise ValueError(f"{path}: world format {meta.get('format')} != {WORLD_FORMAT}")
        arrays = {name: z[name] for name in _ARRAYS}
        logged = pd.DataFrame({col: z[f"logged_{col}"] for col in ("user", "item", "rating", "timestamp")})
    return MovieLensWorld(
        dataset=meta["dataset"], synthetic=meta["synthetic"], settings=WorldSettings(**meta["settings"]),
        genre_names=tuple(meta["genre_names"]), rating_scale=tuple(meta["rating_scale"]),
        global_mean=meta["global_mean"], logged_global_mean=meta["logged_global_mean"],
        logged_ratings=logged, **arrays,
    )
