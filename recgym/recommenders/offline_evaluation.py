"""Offline evaluation: k-fold rating prediction, leave-last-out top-N, and the NCF ML-1M protocol.

* :func:`kfold_indices` reproduces ``sklearn.model_selection.KFold(n_splits, shuffle=True,
  random_state=seed)`` (and Surprise's ``KFold``) exactly, without depending on either.
* :func:`evaluate_ratings` runs a model through the folds: RMSE, MAE, fit and predict seconds.
* :func:`leave_last_out` / :func:`evaluate_top_n`: each user's latest interaction is held out and
  ranked against the whole catalogue (minus the user's training items): HR@k, NDCG@k,
  Recall@k, MRR and catalogue coverage.
* :func:`load_ncf_ml1m` / :func:`evaluate_ncf`: He et al.'s NCF protocol on ML-1M (train on
  every interaction but each user's latest; rank it against 99 fixed sampled negatives).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recgym.recommenders.base import Recommender

__all__ = [
    "NCFData",
    "evaluate_ncf",
    "evaluate_ratings",
    "evaluate_top_n",
    "hit_rate",
    "kfold_indices",
    "leave_last_out",
    "load_ncf_ml1m",
    "mae",
    "mrr",
    "ndcg",
    "rank_of_targets",
    "rmse",
]


# ----------------------------------------------------------------------------- metrics


def rmse(predicted, actual) -> float:
    """Root mean squared error ``sqrt(mean((p - a)^2))`` (rating units)."""
    p, a = _paired(predicted, actual)
    return float(np.sqrt(np.mean((p - a) ** 2)))


def mae(predicted, actual) -> float:
    """Mean absolute error ``mean(|p - a|)`` (rating units)."""
    p, a = _paired(predicted, actual)
    return float(np.mean(np.abs(p - a)))


def _paired(predicted, actual) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(predicted, dtype=np.float64).ravel()
    a = np.asarray(actual, dtype=np.float64).ravel()
    if p.shape != a.shape or p.size == 0:
        raise ValueError(
            f"predicted and actual must be non-empty and of equal length; got {p.size}, {a.size}"
        )
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(a))):
        raise ValueError("predicted and actual must be finite (a model returned NaN?)")
    return p, a


def hit_rate(ranks, k: int) -> float:
    """HR@k: share of held-out items ranked in the top ``k`` (ranks are 0-based)."""
    r = np.asarray(ranks)
    return float(np.mean(r < k))


def ndcg(ranks, k: int) -> float:
    """NDCG@k for one relevant item per user: mean of ``1 / log2(rank + 2)`` if ``rank < k`` else 0.

    With a single relevant item the ideal DCG is 1, so this is the full NDCG.
    """
    r = np.asarray(ranks, dtype=np.float64)
    return float(np.mean(np.where(r < k, 1.0 / np.log2(r + 2.0), 0.0)))


def mrr(ranks) -> float:
    """Mean reciprocal rank ``mean(1 / (rank + 1))`` over the full ranking (no cut-off)."""
    return float(np.mean(1.0 / (np.asarray(ranks, dtype=np.float64) + 1.0)))


def rank_of_targets(scores: np.ndarray, target_scores: np.ndarray, target_items=None) -> np.ndarray:
    """0-based rank of each target among candidates: ``#(scores > target)`` plus ties before it.

    Args:
        scores: ``(n, m)`` candidate scores (``-inf`` = not a candidate).
        target_scores: ``(n,)`` the held-out items' scores.
        target_items: ``(n,)`` the held-out item ids; when given, candidates tied with the target
            count before it only if their column index (item id) is lower — the same tie-break as
            :meth:`~recgym.recommenders.base.Recommender.recommend`. ``None``: every tie counts
            before the target (pessimistic).

    Returns:
        ``(n,)`` int64 ranks.
    """
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(target_scores, dtype=np.float64)[:, None]
    above = (s > t).sum(axis=1)
    ties = s == t
    if target_items is None:
        return above + ties.sum(axis=1)
    cols = np.arange(s.shape[1])[None, :]
    return above + (ties & (cols < np.asarray(target_items)[:, None])).sum(axis=1)


# ----------------------------------------------------------------------------- k-fold


def kfold_indices(
    n_samples: int, n_splits: int = 5, *, shuffle: bool = True, random_state: int | None = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Train/test index pairs with exactly ``sklearn.model_selection.KFold``'s semantics.

    The indices ``0 .. n-1`` are shuffled by ``np.random.RandomState(random_state).shuffle``
    (when ``shuffle``), cut into ``n_splits`` consecutive folds of ``n // n_splits`` (the first
    ``n % n_splits`` folds one longer), and each fold is the test set once. Both index arrays are
    returned sorted, as sklearn does. Surprise's ``KFold`` draws the same folds.

    Args:
        n_samples: Number of rows.
        n_splits: Number of folds (``2 <= n_splits <= n_samples``).
        shuffle: Shuffle before cutting.
        random_state: Seed of the shuffle.

    Yields:
        ``(train_indices, test_indices)`` int64 arrays.
    """
    if isinstance(n_splits, bool) or int(n_splits) != n_splits or n_splits < 2:
        raise ValueError(f"n_splits must be an integer >= 2; got {n_splits!r}")
    if n_splits > n_samples:
        raise ValueError(f"n_splits={n_splits} exceeds the number of samples {n_samples}")
    order = np.arange(n_samples)
    if shuffle:
        np.random.RandomState(random_state).shuffle(order)
    sizes = np.full(n_splits, n_samples // n_splits, dtype=np.int64)
    sizes[: n_samples % n_splits] += 1
    stop = 0
    for size in sizes:
        start, stop = stop, stop + size
        mask = np.zeros(n_samples, dtype=bool)
        mask[order[start:stop]] = True
        yield np.flatnonzero(~mask), np.flatnonzero(mask)


@dataclass(frozen=True)
class FoldResult:
    """One fold of :func:`evaluate_ratings`.

    Attributes:
        rmse: Root mean squared error on the test fold.
        mae: Mean absolute error on the test fold.
        fit_seconds: Wall-clock seconds of ``fit``.
        predict_seconds: Wall-clock seconds of ``predict`` on the test fold.
    """

    rmse: float
    mae: float
    fit_seconds: float
    predict_seconds: float


def evaluate_ratings(
    make_model: Callable[[], Recommender],
    ratings: pd.DataFrame,
    items: pd.DataFrame | None = None,
    *,
    n_splits: int = 5,
    random_state: int = 0,
    max_folds: int | None = None,
) -> list[FoldResult]:
    """k-fold rating prediction: fit a fresh model per fold, predict the held-out ratings.

    Args:
        make_model: Builds an unfitted model (called once per fold).
        ratings: Ratings frame (``user_id``, ``item_id``, ``rating``), in the order the folds
            index (the data layer's file order).
        items: Items table passed to ``fit``; default: a catalogue of ``0 .. max(item_id)``, so
            that test items missing from a training fold are cold items, not unknown ones.
        n_splits: Folds of :func:`kfold_indices`.
        random_state: Seed of the fold shuffle.
        max_folds: Evaluate only the first folds (quick runs); ``None`` = all.

    Returns:
        One :class:`FoldResult` per evaluated fold.
    """
    results = []
    truth = ratings["rating"].to_numpy(dtype=np.float64)
    if items is None:  # the catalogue is every item of the data, rated in the fold or not
        items = pd.DataFrame(index=pd.RangeIndex(int(ratings["item_id"].max()) + 1))
    for fold, (train, test) in enumerate(
        kfold_indices(len(ratings), n_splits, shuffle=True, random_state=random_state)
    ):
        if max_folds is not None and fold >= max_folds:
            break
        model = make_model()
        start = time.perf_counter()
        model.fit(ratings.iloc[train], items)
        fitted = time.perf_counter()
        test_rows = ratings.iloc[test]
        pred = model.predict(test_rows["user_id"].to_numpy(), test_rows["item_id"].to_numpy())
        done = time.perf_counter()
        results.append(
            FoldResult(
                rmse(pred, truth[test]), mae(pred, truth[test]), fitted - start, done - fitted
            )
        )
    return results


# ----------------------------------------------------------------------------- leave-last-out


def leave_last_out(ratings: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out each user's latest interaction (highest ``timestamp``; ties: the later row).

    Users with a single interaction stay entirely in training (they have nothing to train on).

    Args:
        ratings: Frame with ``user_id``, ``item_id`` and ``timestamp``.

    Returns:
        ``(train, test)`` frames; ``test`` has one row per user with at least two interactions.
    """
    if "timestamp" not in ratings.columns:
        raise ValueError("leave_last_out needs a 'timestamp' column in ratings")
    position = np.arange(len(ratings))
    order = np.lexsort((position, ratings["timestamp"].to_numpy(), ratings["user_id"].to_numpy()))
    users = ratings["user_id"].to_numpy()[order]
    last = np.r_[users[1:] != users[:-1], True]
    counts = np.bincount(users)
    last &= counts[users] >= 2
    test_rows = np.sort(order[last])
    mask = np.zeros(len(ratings), dtype=bool)
    mask[test_rows] = True
    return ratings[~mask], ratings[mask]


@dataclass(frozen=True)
class TopNResult:
    """Top-N metrics of :func:`evaluate_top_n` / :func:`evaluate_ncf`.

    Attributes:
        hr: HR@k.
        ndcg: NDCG@k.
        recall: Recall@k (equal to HR@k with one held-out item per user).
        mrr: Mean reciprocal rank over the full candidate ranking.
        coverage: Share of the catalogue appearing in at least one user's top-k list
            (``nan`` for the NCF protocol, whose lists are over sampled candidates).
        n_users: Users evaluated.
        k: Cut-off.
        fit_seconds: Wall-clock seconds of ``fit``.
        score_seconds: Wall-clock seconds of scoring the candidates.
    """

    hr: float
    ndcg: float
    recall: float
    mrr: float
    coverage: float
    n_users: int
    k: int
    fit_seconds: float
    score_seconds: float


def evaluate_top_n(
    model: Recommender,
    train: pd.DataFrame,
    test: pd.DataFrame,
    items: pd.DataFrame | None = None,
    *,
    k: int = 10,
    batch_users: int = 256,
) -> TopNResult:
    """Fit on ``train`` and rank each test item against the full catalogue (full ranking).

    Candidates are every catalogue item the user did not interact with in training; the rank of
    the held-out item is the number of candidates scoring above it (ties broken by item id, as
    ``recommend`` does).

    Args:
        model: An unfitted recommender (fitted here on ``train``).
        train: Training interactions.
        test: Held-out interactions (``user_id``, ``item_id``), typically one per user.
        items: Optional items table for ``fit``.
        k: Cut-off of HR, NDCG, Recall and coverage.
        batch_users: Users scored per batch.

    Returns:
        The :class:`TopNResult`.
    """
    start = time.perf_counter()
    model.fit(train, items)
    fitted = time.perf_counter()
    users = test["user_id"].to_numpy()
    targets = test["item_id"].to_numpy()
    seen = model._seen  # (n_users, n_items) training pattern
    ranks = np.empty(len(users), dtype=np.int64)
    in_top = np.zeros(model.n_items, dtype=bool)
    for start_row in range(0, len(users), batch_users):
        sl = slice(start_row, start_row + batch_users)
        scores = model.score_all(users[sl])
        batch_users_ids = users[sl]
        warm = batch_users_ids < model.n_users
        sub = seen[batch_users_ids[warm]]
        rows = np.repeat(np.flatnonzero(warm), np.diff(sub.indptr))
        scores[rows, sub.indices] = -np.inf
        target_scores = scores[np.arange(len(scores)), targets[sl]]
        ranks[sl] = rank_of_targets(scores, target_scores, targets[sl])
        top = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
        in_top[top[np.isfinite(np.take_along_axis(scores, top, axis=1))]] = True
    done = time.perf_counter()
    return _topn_result(ranks, k, float(in_top.mean()), start, fitted, done)


def _topn_result(ranks: np.ndarray, k: int, coverage: float, start: float, fitted: float,
                 done: float) -> TopNResult:
    """Summarise one held-out item's rank per user (``(n_users,)``, 0 = top) as a TopNResult.

    With one held-out item per user, Recall@k equals HR@k.
    """
    hr = hit_rate(ranks, k)
    return TopNResult(hr=hr, ndcg=ndcg(ranks, k), recall=hr, mrr=mrr(ranks), coverage=coverage,
                      n_users=len(ranks), k=k, fit_seconds=fitted - start, score_seconds=done - fitted)


# ----------------------------------------------------------------------------- NCF ML-1M


@dataclass(frozen=True, eq=False)
class NCFData:
    """The NCF ML-1M protocol (He et al., WWW 2017), in NCF's own contiguous ids.

    Attributes:
        train: Implicit training interactions (``user_id`` = NCF user, ``item_id`` = NCF item; no
            ``rating`` column): every ml-1m pair except each user's test interaction.
        test_items: ``(n_users,)`` each user's held-out (latest) item.
        negatives: ``(n_users, 99)`` the published sampled negatives of each user.
        items: Items table (``item_id``, ``movie_id``, ``title``, ``genres``) in NCF item order.
    """

    train: pd.DataFrame
    test_items: np.ndarray
    negatives: np.ndarray
    items: pd.DataFrame

    @property
    def n_users(self) -> int:
        """Number of users (6,040)."""
        return len(self.test_items)


def load_ncf_ml1m(folder: str | os.PathLike | None = None) -> NCFData:
    """Read the NCF ML-1M protocol files.

    Args:
        folder: The ml-1m folder holding ``ratings_implicit_pairs.parquet``, ``movies.dat`` and
            ``ncf/``; default ``$RECGYM_DATA_HOME/ml-1m``.

    Returns:
        The :class:`NCFData`.

    Raises:
        FileNotFoundError: naming the missing file.
        ValueError: if the files disagree (a test pair missing from the pairs, bad row counts).
    """
    if folder is None:
        home = os.environ.get("RECGYM_DATA_HOME")
        if not home:
            raise FileNotFoundError("no folder given and RECGYM_DATA_HOME is not set")
        folder = Path(home) / "ml-1m"
    folder = Path(folder)
    paths = {
        "pairs": folder / "ratings_implicit_pairs.parquet",
        "movies": folder / "movies.dat",
        "test": folder / "ncf" / "ml-1m.test.rating",
        "negatives": folder / "ncf" / "ml-1m.test.negative",
        "index": folder / "ncf" / "ncf_item_index_to_movieid.tsv",
    }
    for path in paths.values():
        if not path.is_file():
            raise FileNotFoundError(f"NCF ML-1M protocol file not found: {path}")
    from recgym.datasets import readers

    index = pd.read_csv(paths["index"], sep="\t")
    movie_to_ncf = pd.Series(index["ncf_item"].to_numpy(), index=index["movie_id"].to_numpy())
    n_items = len(index)
    if not np.array_equal(np.sort(index["ncf_item"].to_numpy()), np.arange(n_items)):
        raise ValueError(f"{paths['index']}: ncf_item is not 0 .. {n_items - 1}")
    pairs = pd.read_parquet(paths["pairs"])
    users = pairs["userID"].astype(np.int64).to_numpy() - 1
    item_ids = movie_to_ncf.reindex(pairs["movieID"].astype(np.int64).to_numpy()).to_numpy()
    if np.isnan(item_ids.astype(np.float64)).any():
        raise ValueError(f"{paths['pairs']}: a movieID is missing from {paths['index']}")
    item_ids = item_ids.astype(np.int64)
    test = pd.read_csv(paths["test"], sep="\t", header=None, names=["u", "i", "r", "t"])
    n_users = len(test)
    if not np.array_equal(test["u"].to_numpy(), np.arange(n_users)):
        raise ValueError(f"{paths['test']}: expected one row per user 0 .. n-1 in order")
    test_items = test["i"].to_numpy(dtype=np.int64)
    neg_rows = [
        line.rstrip("\n").split("\t") for line in paths["negatives"].read_text().splitlines()
    ]
    if len(neg_rows) != n_users:
        raise ValueError(f"{paths['negatives']}: {len(neg_rows)} rows for {n_users} users")
    negatives = np.array([[int(x) for x in row[1:]] for row in neg_rows], dtype=np.int64)
    keys = users * n_items + item_ids
    test_keys = np.arange(n_users) * n_items + test_items
    is_test = np.isin(keys, test_keys)
    if is_test.sum() != n_users:
        raise ValueError(
            f"{paths['pairs']}: found {int(is_test.sum())} of the {n_users} test pairs of {paths['test']}"
        )
    train = pd.DataFrame({"user_id": users[~is_test], "item_id": item_ids[~is_test]})
    movies = readers.read_movies_dat(paths["movies"]).set_index("movieId")
    movie_ids = index.sort_values("ncf_item")["movie_id"].to_numpy()
    items = movies.reindex(movie_ids).reset_index(names="movie_id")
    items.insert(0, "item_id", np.arange(n_items))
    items["title"] = items["title"].fillna("")
    items["genres"] = [g if isinstance(g, tuple) else () for g in items["genres"]]
    return NCFData(train=train, test_items=test_items, negatives=negatives, items=items)


def evaluate_ncf(model: Recommender, data: NCFData, *, k: int = 10, fit: bool = True) -> TopNResult:
    """The NCF leave-one-out protocol: rank each user's test item against its 99 negatives.

    Ties with a negative count against the test item (pessimistic).

    Args:
        model: A recommender (fitted here on ``data.train`` with ``data.items`` when ``fit``).
        data: The protocol data from :func:`load_ncf_ml1m`.
        k: Cut-off (NCF reports HR@10 and NDCG@10).
        fit: Fit the model first (``False``: it is already fitted on ``data.train``).

    Returns:
        The :class:`TopNResult` (``coverage`` is ``nan``).
    """
    start = time.perf_counter()
    if fit:
        model.fit(data.train, data.items)
    fitted = time.perf_counter()
    users = np.arange(data.n_users)
    candidates = np.column_stack([data.test_items, data.negatives])  # (n_users, 100)
    scores = model.score(users[:, None], candidates)
    ranks = rank_of_targets(scores[:, 1:], scores[:, 0])
    done = time.perf_counter()
    return _topn_result(ranks, k, float("nan"), start, fitted, done)
