"""The recommenders as simulator policies: fitted on logged data, folding in what each episode shows.

A :class:`RecommenderPolicy` wraps a fitted :class:`~recgym.recommenders.base.Recommender` in
the baseline-policy interface of :mod:`recgym.policies`, so the evaluation harness
(:mod:`recgym.evaluation`) runs it like any baseline. What it learns from, and only that:

* **Logged data**: the recommender is fitted (:func:`fit_on_world`) on the real MovieLens ratings
  that the world logged for its *training* population (``world.logged_ratings`` of
  ``world.train_users``), plus the items' observable content (titles, genres, tags).
* **The episode**: at every step it reads the previous step's feedback from ``info`` — the item
  the simulated user consumed (``clicked_item``, ``-1`` for no click) and the rating given
  (``rating``) — appends it to that env's history, and scores every item for the user with
  :meth:`~recgym.recommenders.base.Recommender.score_history` (fold-in, no refit). Before the
  first click the user is cold and gets the model's non-personalised fallback.

Only what changed is recomputed (the fold-in is the cost of these policies, one Python call per
env and step): an env's scores are reused while its history is unchanged (a step without a
click), the cold scores are computed once, and envs whose episode the harness no longer scores
(``PolicyContext.access.active()``; a vector env keeps stepping them until the whole wave is
done) are not scored again. Every scored env's scores are those of a fresh fold-in of its
history, so the actions, and every figure, are those of scoring every env at every step.

It never reads the simulator's hidden state (``true_utility``, ``satiation``, ``habit``,
``budget`` in ``info``, or the hidden MF of the world).
"""


from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from recgym.policies import ScoringPolicy
from recgym.recommenders.base import Recommender

__all__ = [
    "RECOMMENDER_POLICIES",
    "RecommenderPolicy",
    "fit_on_world",
    "recommender_policy",
    "world_training_data",
]

#: The ``info`` keys a recommender policy reads: observable feedback only.
FEEDBACK_KEYS = ("clicked_item", "rating")


class RecommenderPolicy(ScoringPolicy):
    """Serve a fitted recommender's top items, learning each user from the episode's feedback.

    Args:
        recommender: A fitted recommender over the env's catalogue (``n_items`` items).
        n_items: Catalogue size of the env.
        slate_size: ``None`` for single items, ``k`` for slates (see
            :class:`~recgym.policies.ScoringPolicy`).
        exclude_served: Never serve an item twice in an episode.
        name: Display name.
        use_ratings: Pass the observed ratings to the fold-in (``False``: clicks only, as
            implicit feedback).
        scored: Returns ``(num_envs,)`` bool, the envs whose current episode is still scored
            (the harness's bookkeeping, ``PolicyContext.access.active``; no user state); the
            others keep their last scores, since their actions count for nothing. ``None``:
            every env is scored at every step. The hook describes the batch of the env the policy
            was built for: after a :meth:`reset` for another number of envs (an off-policy
            replay, a single env) it is not consulted and every env is scored.
    """

    name = "recommender"

    def __init__(
        self,
        recommender: Recommender,
        n_items: int,
        slate_size: int | None = None,
        exclude_served: bool = True,
        name: str | None = None,
        use_ratings: bool = True,
        scored: Callable[[], np.ndarray] | None = None,
    ) -> None:
        if not isinstance(recommender, Recommender) or not recommender.is_fitted:
            raise ValueError("recommender must be a fitted recgym Recommender")
        if recommender.n_items != n_items:
            raise ValueError(
                f"the recommender was fitted on {recommender.n_items} items but the env has "
                f"n_items={n_items}"
            )
        self.recommender = recommender
        self.use_ratings = use_ratings
        self.scored = scored
        self._skip_unscored = False  # whether ``scored`` describes the batch the policy acts for
        self.history_items: list[list[int]] = [[]]
        self.history_ratings: list[list[float]] = [[]]
        # (num_envs, n_items) each env's last scores, and the history length they fold in (-1: none)
        self._scores = np.zeros((1, n_items))
        self._scored_length = np.full(1, -1)
        self._cold_scores: np.ndarray | None = None  # the model's fallback, the same for every cold env
        super().__init__(n_items, slate_size, exclude_served)
        if name is not None:
            self.name = name

    def reset(self, num_envs: int = 1, seed: int | None = None) -> None:
        """See :meth:`recgym.policies.Policy.reset`; also empties every env's history."""
        self.history_items = [[] for _ in range(num_envs)]
        self.history_ratings = [[] for _ in range(num_envs)]
        self._scores = np.zeros((num_envs, self.n_items))
        self._scored_length = np.full(num_envs, -1)
        # The hook answers for the batch of the env the policy was built for; reset for another
        # batch, the policy is not driven by that env's harness, so every env is scored.
        self._skip_unscored = self.scored is not None and np.shape(self.scored()) == (num_envs,)
        super().reset(num_envs, seed)

    def begin_episode(self, env_mask: np.ndarray) -> None:
        """Forget the histories (and served items) of the envs starting a new episode."""
        super().begin_episode(env_mask)
        for env in np.flatnonzero(np.asarray(env_mask, dtype=bool)):
            self.history_items[env] = []
            self.history_ratings[env] = []
            self._scored_length[env] = -1

    def observe(self, infos: Mapping[str, Any]) -> None:
        """Append the previous step's consumed item and rating (if any) to each env's history."""
        if "clicked_item" not in infos:  # reset info: nothing consumed yet
            return
        items = np.asarray(infos["clicked_item"]).reshape(-1)
        ratings = np.asarray(infos.get("rating", np.ones(items.shape))).reshape(-1)
        for env in np.flatnonzero(items >= 0):
            self.history_items[env].append(int(items[env]))
            self.history_ratings[env].append(float(ratings[env]))

    def scores(self, observations: np.ndarray, infos: Mapping[str, Any]) -> np.ndarray:
        """``(num_envs, n_items)`` fold-in scores of every env's user from its history so far."""
        self.observe(infos)
        # Histories only grow within an episode, so an unchanged length is an unchanged history.
        lengths = np.fromiter(map(len, self.history_items), dtype=np.int64, count=self.num_envs)
        stale = lengths != self._scored_length
        if self._skip_unscored:
            scored = np.asarray(self.scored(), dtype=bool)
            if scored.shape != (self.num_envs,):
                raise ValueError(f"scored() answered for {scored.size} envs, the policy acts for "
                                 f"num_envs={self.num_envs}")
            stale &= scored
        for env in np.flatnonzero(stale):
            self._scores[env] = self._fold_in(env)
            self._scored_length[env] = lengths[env]
        return self._scores.copy()

    def _fold_in(self, env: int) -> np.ndarray:
        """``(n_items,)`` env ``env``'s scores from its history (``-inf`` where not finite)."""
        if not self.history_items[env]:
            if self._cold_scores is None:
                self._cold_scores = self._finite(self.recommender.score_history([], None))
            return self._cold_scores
        ratings = self.history_ratings[env] if self.use_ratings else None
        return self._finite(self.recommender.score_history(self.history_items[env], ratings))

    @staticmethod
    def _finite(scores: np.ndarray) -> np.ndarray:
        return np.where(np.isfinite(scores), scores, -np.inf)


def world_training_data(world: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The logged training data of a built MovieLens world: ratings and observable item content.

    Args:
        world: A ``recgym.envs.movielens.MovieLensWorld``.

    Returns:
        ``(ratings, items)``: the logged ratings of the *training* population in world indices
        (``user_id``, ``item_id``, ``rating``, ``timestamp``) and an items table in world item
        order with ``title`` (empty for the synthetic world), ``genres`` and ``tags``.
    """
    logged = world.logged_ratings
    train = logged[np.isin(logged["user"].to_numpy(), world.train_users)]
    ratings = pd.DataFrame(
        {
            "user_id": train["user"].to_numpy(dtype=np.int64),
            "item_id": train["item"].to_numpy(dtype=np.int64),
            "rating": train["rating"].to_numpy(dtype=np.float64),
            "timestamp": train["timestamp"].to_numpy(dtype=np.int64),
        }
    )
    flags = np.asarray(world.item_genre_flags) > 0
    genres = [tuple(np.asarray(world.genre_names)[row]) for row in flags]
    n_items = len(world.item_ids)
    titles = [""] * n_items
    tags = [()] * n_items
    if not world.synthetic:
        from recgym.datasets import load_movielens
        from recgym.recommenders.content import attach_tags

        data = load_movielens(world.dataset)
        with_tags = attach_tags(data.items, data.tags).iloc[np.asarray(world.item_ids)]
        titles = with_tags["title"].astype(str).tolist()
        tags = with_tags["tags"].tolist()
    items = pd.DataFrame(
        {"item_id": np.arange(n_items), "title": titles, "genres": genres, "tags": tags}
    )
    return ratings, items


_FITTED: dict[tuple, Recommender] = {}


def fit_on_world(make_model: Callable[[], Recommender], world: Any, key: str) -> Recommender:
    """Fit ``make_model()`` on a world's logged training data (cached per world and ``key``).

    Args:
        make_model: Builds the unfitted recommender.
        world: The built world.
        key: Cache key of the model configuration (e.g. the policy's display name).

    Returns:
        The fitted recommender (shared by every policy built for the same world and key).
    """
    cache_key = (world.dataset, world.settings, world.synthetic, len(world.item_ids), key)
    if cache_key not in _FITTED:
        ratings, items = world_training_data(world)
        _FITTED[cache_key] = make_model().fit(ratings, items)
    return _FITTED[cache_key]


def recommender_policy(make_model: Callable[[], Recommender], name: str, **policy_kwargs: Any):
    """A policy factory (``PolicyContext -> Policy``) for :mod:`recgym.evaluation`.

    Args:
        make_model: Builds the unfitted recommender (fitted once per world on logged data).
        name: Display name (and cache key).
        **policy_kwargs: Extra :class:`RecommenderPolicy` arguments.

    Returns:
        The factory.
    """

    def factory(ctx: Any) -> RecommenderPolicy:
        model = fit_on_world(make_model, ctx.world, name)
        # which envs the harness still scores (bookkeeping, no user state): the others are not refolded
        scored = getattr(ctx.access, "active", None)
        return RecommenderPolicy(model, ctx.n_items, ctx.slate_size, name=name, scored=scored, **policy_kwargs)

    return factory


def _knn_binary():
    from recgym.recommenders.knn import ItemKNN

    return ItemKNN(implicit=True, n_neighbours=30, shrinkage=0.0)


def _knn_tuned():
    from recgym.recommenders.knn import ItemKNN

    # The configuration the NCF ML-1M validation search selected (docs/recommenders.md); the
    # world's logged data is not tuned on.
    return ItemKNN(
        similarity="asymmetric_cosine", asymmetry=0.35, n_neighbours=100, shrinkage=10.0,
        implicit=True, feature_weighting="tfidf",
    )  # fmt: skip


def _ensemble():
    from recgym.recommenders import ContentBased, Ensemble, MatrixFactorization, Popularity

    return Ensemble(
        [MatrixFactorization(), _knn_binary(), Popularity(kind="weighted"), ContentBased()],
        target="rating",
    )


def _factories() -> dict[str, Callable]:
    from recgym.recommenders import EASE, SLIM, ContentBased, MatrixFactorization, Popularity

    return {
        "popularity (IMDB weighted)": recommender_policy(
            lambda: Popularity(kind="weighted"), "popularity (IMDB weighted)"
        ),
        "content-based": recommender_policy(ContentBased, "content-based"),
        "matrix factorization": recommender_policy(MatrixFactorization, "matrix factorization"),
        "item-kNN": recommender_policy(_knn_binary, "item-kNN"),
        "ensemble": recommender_policy(_ensemble, "ensemble"),
        "EASE^R": recommender_policy(EASE, "EASE^R"),
        "item-kNN (tuned)": recommender_policy(_knn_tuned, "item-kNN (tuned)"),
        "SLIM": recommender_policy(SLIM, "SLIM"),
    }


RECOMMENDER_POLICIES: dict[str, Callable] = _factories()
"""Policy factories of the classical recommenders, by display name, for the policy tables:
weighted popularity, content-based, biased MF, binary item-kNN, the rating-fitted ensemble
of those four (popularity by count is the harness's ``most-popular`` baseline already), EASE^R
(default ``l2``, on the clicks), the TF-IDF-weighted asymmetric-cosine item-kNN tuned on
NCF ML-1M, and SLIM (default penalties, on the clicks)."""
