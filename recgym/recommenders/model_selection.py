"""Hyper-parameter selection on a validation split carved from the training data.

The test interactions of a protocol are for the final figure only; every choice of
hyper-parameters is made on a validation split that is cut out of the *training* interactions:

* :func:`holdout_validation` holds out one random training interaction per user and samples
  negatives for it, the NCF protocol's own tuning split (He et al. 2017: "we randomly sampled one
  interaction for each user as the validation data and tuned hyper-parameters on it");
* :func:`grid_search` fits one model per point of a parameter grid on the validation training
  data, scores each with an evaluation function (e.g. :func:`evaluate_ncf` on that split), and
  returns every trial and the best.

Typical use on the NCF ML-1M protocol::

    data = load_ncf_ml1m()
    validation = holdout_validation(data.train, data.items, seed=0)
    search = grid_search(
        lambda **p: EASE(**p), {"l2": [250.0, 500.0, 1000.0]},
        lambda model: evaluate_ncf(model, validation),
    )
    final = evaluate_ncf(EASE(**search.best_params), data)  # the test figure, fitted on all train
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recgym.recommenders.base import Recommender, as_rating_arrays
from recgym.recommenders.offline_evaluation import NCFData, TopNResult

__all__ = ["GridSearchResult", "Trial", "grid_search", "holdout_validation"]

_METRICS = ("hr", "ndcg", "mrr")


def holdout_validation(
    train: pd.DataFrame,
    items: pd.DataFrame | None = None,
    *,
    n_negatives: int = 99,
    seed: int = 0,
) -> NCFData:
    """Hold out one random training interaction per user, with sampled negatives, for tuning.

    Only ``train`` is read, so nothing of the protocol's test interactions can leak into the
    choice of hyper-parameters. For every user one of their interactions is drawn uniformly and
    held out; ``n_negatives`` distinct items are drawn uniformly from the catalogue items the user
    has no interaction with in ``train`` (NCF's negatives are drawn the same way from the whole
    history). Both draws come from ``numpy.random.default_rng(seed)``.

    Args:
        train: Training interactions (``user_id``, ``item_id``, optionally ``rating`` and more
            columns, which are kept); users must be ``0 .. n_users - 1``, each with at least two
            interactions (one to hold out, one to train on).
        items: Items table (fixes the catalogue, see
            :func:`~recgym.recommenders.base.as_rating_arrays`); default ``0 .. max(item_id)``.
        n_negatives: Sampled negatives per user (``>= 1``; NCF uses 99).
        seed: Seed of the hold-out and negative draws.

    Returns:
        An :class:`~recgym.recommenders.offline_evaluation.NCFData` whose ``train`` is ``train``
        less the held-out rows, ``test_items`` the held-out item of each user (``(n_users,)``),
        ``negatives`` the ``(n_users, n_negatives)`` sampled items, so that
        :func:`~recgym.recommenders.offline_evaluation.evaluate_ncf` runs on it unchanged.

    Raises:
        ValueError: on malformed ``train`` (see ``as_rating_arrays``), a user id without
            interactions, a user with a single interaction, or a user with fewer than
            ``n_negatives`` items left to sample from.
    """
    if isinstance(n_negatives, bool) or int(n_negatives) != n_negatives or n_negatives < 1:
        raise ValueError(f"n_negatives must be a positive integer; got {n_negatives!r}")
    data = as_rating_arrays(train, items)
    counts = np.bincount(data.users, minlength=data.n_users)
    if counts.min() < 2:
        user = int(np.argmin(counts))
        raise ValueError(
            f"holdout_validation needs every user 0 .. {data.n_users - 1} to have at least 2 "
            f"interactions; user {user} has {int(counts[user])}"
        )
    free = data.n_items - counts
    if free.min() < n_negatives:
        user = int(np.argmin(free))
        raise ValueError(
            f"user {user} has only {int(free[user])} catalogue items without an interaction; "
            f"n_negatives={n_negatives} cannot be sampled"
        )
    rng = np.random.default_rng(seed)
    # A uniform random key per row; the first row of each user in (user, key) order is held out.
    order = np.lexsort((rng.random(len(data.users)), data.users))
    ordered_users = data.users[order]
    held_out_rows = order[np.r_[True, ordered_users[1:] != ordered_users[:-1]]]
    held_out_items = data.items[held_out_rows]
    seen = sp.csr_matrix(
        (np.ones(len(data.users), dtype=bool), (data.users, data.items)),
        shape=(data.n_users, data.n_items),
    )
    negatives = np.empty((data.n_users, n_negatives), dtype=np.int64)
    unseen = np.ones(data.n_items, dtype=bool)
    for user in range(data.n_users):
        user_items = seen.indices[seen.indptr[user] : seen.indptr[user + 1]]
        unseen[user_items] = False
        negatives[user] = rng.choice(np.flatnonzero(unseen), n_negatives, replace=False)
        unseen[user_items] = True
    keep = np.ones(len(train), dtype=bool)
    keep[held_out_rows] = False
    if items is None:
        items = pd.DataFrame({"item_id": np.arange(data.n_items)})
    return NCFData(
        train=train.iloc[np.flatnonzero(keep)].reset_index(drop=True),
        test_items=held_out_items,
        negatives=negatives,
        items=items,
    )


@dataclass(frozen=True)
class Trial:
    """One point of a :func:`grid_search`.

    Attributes:
        params: The keyword arguments the model was built with.
        result: Its validation :class:`~recgym.recommenders.offline_evaluation.TopNResult`.
    """

    params: dict[str, Any]
    result: TopNResult


@dataclass(frozen=True)
class GridSearchResult:
    """Outcome of :func:`grid_search`.

    Attributes:
        best_params: The parameters of the best trial (the first one in grid order on ties).
        best: Its validation result.
        trials: Every trial, in grid order.
        metric: The selection metric (``"hr"``, ``"ndcg"`` or ``"mrr"``).
    """

    best_params: dict[str, Any]
    best: TopNResult
    trials: tuple[Trial, ...]
    metric: str

    @property
    def seconds(self) -> float:
        """Total fit and scoring seconds of all trials."""
        return float(sum(t.result.fit_seconds + t.result.score_seconds for t in self.trials))


def grid_search(
    make_model: Callable[..., Recommender],
    grid: Mapping[str, Sequence[Any]],
    evaluate: Callable[[Recommender], TopNResult],
    *,
    metric: str = "hr",
) -> GridSearchResult:
    """Evaluate every combination of a parameter grid and keep the best (a validation search).

    Args:
        make_model: Builds an unfitted model from keyword parameters (e.g. a recommender class).
        grid: Parameter name -> candidate values; the Cartesian product is searched, the last
            name varying fastest.
        evaluate: Fits and scores one model on the validation data, e.g.
            ``lambda m: evaluate_ncf(m, validation)``.
        metric: Field of :class:`~recgym.recommenders.offline_evaluation.TopNResult` to maximise:
            ``"hr"``, ``"ndcg"`` or ``"mrr"``.

    Returns:
        The :class:`GridSearchResult`.

    Raises:
        ValueError: on an empty grid, a parameter with no candidate values, or an unknown metric.
    """
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}; got {metric!r}")
    if not grid:
        raise ValueError("grid is empty: give at least one parameter with candidate values")
    names = list(grid)
    values = [list(grid[name]) for name in names]
    for name, candidates in zip(names, values):
        if not candidates:
            raise ValueError(f"grid[{name!r}] has no candidate values")
    trials = []
    for combination in itertools.product(*values):
        params = dict(zip(names, combination))
        trials.append(Trial(params, evaluate(make_model(**params))))
    best = max(trials, key=lambda t: getattr(t.result, metric))  # first maximum on ties
    return GridSearchResult(dict(best.params), best.result, tuple(trials), metric)
