"""Baseline policies and the one small interface every recgym policy shares.

A policy maps observations (and ``info``) to actions. The same object serves one gymnasium env
(:meth:`Policy.act`) and a vector env of ``n`` envs (:meth:`Policy.act_batch`), so the evaluation
harness (:mod:`recgym.evaluation`) scores baselines, classical recommenders and trained agents
alike. The protocol:

1. ``policy.reset(num_envs=n, seed=s)`` before the first episode: clears per-episode memory and
   (re)seeds the policy's own random generator. Same seed, same actions.
2. ``policy.begin_episode(env_mask)`` whenever some envs start a new episode (a vector env's
   autoreset); ``reset`` already starts the first one.
3. ``policy.act_batch(observations, infos) -> actions`` each step, with ``observations`` of
   shape ``(n, ...)`` and ``infos`` a dict of ``(n, ...)`` arrays (gymnasium's vector ``info``
   layout); it returns ``(n,)`` item ids, or ``(n, k)`` slates for ``slate_size=k``.
   ``policy.act(observation, info)`` is the same for one env (a batch of one).

Most recommenders are *scoring* policies: they score every item and serve the ``k`` best, without
duplicates, skipping the items they already served this episode (:class:`ScoringPolicy`).
Subclasses only write :meth:`ScoringPolicy.scores`.

The privileged baselines (:class:`OracleGreedyPolicy`, :class:`BoredomAwarePolicy`) read the
simulator's hidden state through a :class:`PrivilegedAccess` object — research instruments that
upper-bound what a recommender could learn, not deployable recommenders.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "BoredomAwarePolicy",
    "MostPopularPolicy",
    "OracleGreedyPolicy",
    "Policy",
    "PrivilegedAccess",
    "RandomPolicy",
    "ScoringPolicy",
    "batch_info",
    "top_k_items",
]


def top_k_items(scores: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` highest-scoring items of each row, best first, without duplicates.

    Ties are broken towards the lower item id, so the result is deterministic.

    Args:
        scores: ``(n, n_items)`` float scores; ``-inf`` marks items that must not be served
            (they are served only when fewer than ``k`` items are finite).
        k: Slate size, ``1 <= k <= n_items``.

    Returns:
        ``(n, k)`` int64 item ids.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be (n, n_items), got shape {s.shape}")
    n_items = s.shape[1]
    if not 1 <= k <= n_items:
        raise ValueError(f"slate size k must lie in [1, n_items={n_items}], got {k}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    if k == 1:
        return np.argmax(s, axis=1)[:, None].astype(np.int64)
    if k < n_items:
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        # argpartition does not break ties by id: take every item above the k-th score, then the
        # lowest ids tied with it (no full sort: scores clipped at the rating maximum tie often)
        kth = np.take_along_axis(s, part, axis=1).min(axis=1, keepdims=True)
        above = s > kth
        tied = s == kth
        fill = k - above.sum(axis=1, keepdims=True)
        part = np.nonzero(above | (tied & (np.cumsum(tied, axis=1) <= fill)))[1].reshape(-1, k)
        vals = np.take_along_axis(s, part, axis=1)
        order = np.lexsort((part, -vals), axis=1)
        return np.take_along_axis(part, order, axis=1).astype(np.int64)
    order = np.lexsort((np.broadcast_to(np.arange(n_items), s.shape), -s), axis=1)
    return order.astype(np.int64)


def batch_info(info: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A single env's ``info`` as a batch of one (every value gets a leading axis of 1)."""
    return {key: np.asarray(value)[None] for key, value in info.items() if not key.startswith("_")}


class Policy(abc.ABC):
    """The interface every recgym policy implements (baselines, recommenders, agents).

    Attributes:
        name: Short display name used in results tables.
        num_envs: Number of envs the policy currently acts for (set by :meth:`reset`).
        rng: The policy's own ``numpy.random.Generator``, seeded by :meth:`reset`.
    """

    name: str = "policy"

    def __init__(self) -> None:
        self.num_envs = 1
        self.rng = np.random.default_rng(0)

    def reset(self, num_envs: int = 1, seed: int | None = None) -> None:
        """Start acting for ``num_envs`` envs: clear per-episode memory, reseed when given a seed.

        Args:
            num_envs: Number of envs stepped together (1 for a single gymnasium env).
            seed: Seed of the policy's own randomness; ``None`` keeps the current generator.
        """
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = int(num_envs)
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.begin_episode(np.ones(self.num_envs, dtype=bool))

    def begin_episode(self, env_mask: np.ndarray) -> None:
        """Hook: the envs where ``env_mask`` (``(num_envs,)`` bool) is true start a new episode."""
        return None

    @abc.abstractmethod
    def act_batch(self, observations: np.ndarray, infos: Mapping[str, Any]) -> np.ndarray:
        """Actions for ``num_envs`` envs.

        Args:
            observations: ``(num_envs, ...)`` batched observations.
            infos: Batched info dict (``(num_envs, ...)`` arrays), as a gymnasium vector env
                returns it.

        Returns:
            ``(num_envs,)`` int64 item ids, or ``(num_envs, k)`` slates.
        """

    def act(self, observation: np.ndarray, info: Mapping[str, Any]) -> np.ndarray | int:
        """The action for a single env: :meth:`act_batch` on a batch of one."""
        if self.num_envs != 1:
            raise RuntimeError(
                f"act() serves one env but the policy was reset for num_envs={self.num_envs}; "
                "call reset(num_envs=1) or use act_batch()"
            )
        action = self.act_batch(np.asarray(observation)[None], batch_info(info))[0]
        return int(action) if np.ndim(action) == 0 else action

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class ScoringPolicy(Policy):
    """A policy that scores every item and serves the top ``k`` it has not served this episode.

    Args:
        n_items: Catalogue size.
        slate_size: ``None`` for single-item actions (``(n,)`` item ids), else ``k`` for slates
            (``(n, k)`` item ids, best first).
        exclude_served: Never serve an item twice in one episode (what a production recommender
            does); falls back to served items only once every item has been served.
    """

    def __init__(
        self, n_items: int, slate_size: int | None = None, exclude_served: bool = True
    ) -> None:
        super().__init__()
        if n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {n_items}")
        if slate_size is not None and not 1 <= slate_size <= n_items:
            raise ValueError(f"slate_size must lie in [1, n_items={n_items}], got {slate_size}")
        self.n_items = int(n_items)
        self.slate_size = slate_size
        self.exclude_served = exclude_served
        self.served = np.zeros((1, self.n_items), dtype=bool)

    def reset(self, num_envs: int = 1, seed: int | None = None) -> None:
        """See :meth:`Policy.reset`; also sizes the served-items memory."""
        self.served = np.zeros((num_envs, self.n_items), dtype=bool)
        super().reset(num_envs, seed)

    def begin_episode(self, env_mask: np.ndarray) -> None:
        """Forget what was served to the envs starting a new episode."""
        self.served[np.asarray(env_mask, dtype=bool)] = False

    @abc.abstractmethod
    def scores(self, observations: np.ndarray, infos: Mapping[str, Any]) -> np.ndarray:
        """``(num_envs, n_items)`` scores, higher is better (``-inf``: never serve)."""

    def select(self, scores: np.ndarray, k: int) -> np.ndarray:
        """Choose each env's ``k`` items from its masked scores: the top ``k``, best first.

        The hook a stochastic policy overrides (see :mod:`recgym.stochastic_policy`): everything
        else in :meth:`act_batch` (candidates, served-item memory) stays the same.

        Args:
            scores: ``(num_envs, n_choices)`` float64 scores, ``-inf`` where an item must not be
                served; ``n_choices`` is ``n_items``, or ``K`` in candidate mode.
            k: Items per action.

        Returns:
            ``(num_envs, k)`` int64 column indices into ``scores``.
        """
        return top_k_items(scores, k)

    def act_batch(self, observations: np.ndarray, infos: Mapping[str, Any]) -> np.ndarray:
        """Top-``k`` items by :meth:`scores`, skipping served ones; see :meth:`Policy.act_batch`.

        Candidate mode: when ``infos`` holds ``"candidates"`` (``(num_envs, K)`` item ids of the
        items retrieved for this step), only those are ranked and the action holds their
        *positions* in the candidate list (what the env expects), not item ids.
        """
        scores = np.array(self.scores(observations, infos), dtype=np.float64)
        if scores.shape != (self.num_envs, self.n_items):
            raise ValueError(
                f"{type(self).__name__}.scores returned shape {scores.shape}, "
                f"expected (num_envs={self.num_envs}, n_items={self.n_items})"
            )
        k = 1 if self.slate_size is None else self.slate_size
        candidates = infos.get("candidates") if isinstance(infos, Mapping) else None
        if candidates is not None:
            candidates = np.asarray(candidates, dtype=np.int64).reshape(self.num_envs, -1)
            scores = np.take_along_axis(scores, candidates, axis=1)
            served = np.take_along_axis(self.served, candidates, axis=1)
        else:
            served = self.served
        if self.exclude_served:
            exhausted = (~served).sum(axis=1) < k
            if exhausted.any():
                # Catalogue: start over (served is the memory itself); candidates: ignore it once.
                served[exhausted] = False
            scores[served] = -np.inf
        choice = self.select(scores, k)
        items = choice if candidates is None else np.take_along_axis(candidates, choice, axis=1)
        if self.exclude_served:
            np.put_along_axis(self.served, items, True, axis=1)
        return choice[:, 0] if self.slate_size is None else choice


class RandomPolicy(ScoringPolicy):
    """Uniformly random items (a uniformly random slate of distinct items for ``k > 1``)."""

    name = "random"

    def scores(self, observations: np.ndarray, infos: Mapping[str, Any]) -> np.ndarray:
        """I.i.d. uniform scores from the policy's seeded generator."""
        return self.rng.random((self.num_envs, self.n_items))


class MostPopularPolicy(ScoringPolicy):
    """The most popular items of the *logged* data, the same ranking for every user.

    Args:
        popularity: ``(n_items,)`` popularity of each item in the logged data (e.g. its number of
            ratings by training users) — never the simulator's hidden utilities.
        slate_size: See :class:`ScoringPolicy`.
        exclude_served: See :class:`ScoringPolicy`.
    """

    name = "most-popular"

    def __init__(
        self,
        popularity: np.ndarray,
        slate_size: int | None = None,
        exclude_served: bool = True,
    ) -> None:
        pop = np.asarray(popularity, dtype=np.float64)
        if pop.ndim != 1 or not np.isfinite(pop).all():
            raise ValueError(f"popularity must be a finite (n_items,) vector, got shape {pop.shape}")
        super().__init__(len(pop), slate_size, exclude_served)
        self.popularity = pop

    @classmethod
    def from_ratings(
        cls,
        item_ids: np.ndarray,
        n_items: int,
        slate_size: int | None = None,
        exclude_served: bool = True,
    ) -> MostPopularPolicy:
        """Popularity = number of logged ratings of each item.

        Args:
            item_ids: ``(n_ratings,)`` item id of each logged rating.
            n_items: Catalogue size.
            slate_size: See :class:`ScoringPolicy`.
            exclude_served: See :class:`ScoringPolicy`.
        """
        counts = np.bincount(np.asarray(item_ids, dtype=np.int64), minlength=n_items)
        if counts.size != n_items:
            raise ValueError(f"item ids exceed n_items={n_items}")
        return cls(counts.astype(np.float64), slate_size, exclude_served)

    def scores(self, observations: np.ndarray, infos: Mapping[str, Any]) -> np.ndarray:
        """The logged popularity, broadcast to every env."""
        return np.broadcast_to(self.popularity, (self.num_envs, self.n_items))


@runtime_checkable
class PrivilegedAccess(Protocol):
    """Read access to the simulator's hidden state, for the privileged baselines.

    An implementation wraps one env or vector env (RecGym-MovieLens:
    :class:`recgym.envs.movielens.MovieLensAccess`, which the evaluation harness hands to policy
    factories as ``ctx.access``) and answers for the state it is in *now*, one row per env.
    """

    def true_utilities(self) -> np.ndarray:
        """``(num_envs, n_items)`` expected satisfaction of consuming each item now."""

    def boredom_cost(self) -> np.ndarray:
        """``(num_envs, n_items)`` immediate session-budget cost of consuming each item now.

        The far-sighted heuristic's model of the future: how much the item's genres would push
        satiation past the user's tolerance (0 where it would not).
        """


class OracleGreedyPolicy(ScoringPolicy):
    """Myopic oracle: serve the items of highest *current* true utility.

    It reads the user's hidden utilities (taste, habit, satiation, repeat penalty) through
    ``access`` — privileged information no recommender has. It is optimal in the static world
    (where nothing the policy does changes tomorrow), and the myopic reference in the dynamic one.

    Args:
        access: Privileged read access to the env(s) the policy acts in.
        n_items: Catalogue size.
        slate_size: See :class:`ScoringPolicy`.
        exclude_served: See :class:`ScoringPolicy` (default ``False``: the oracle sees the
            repeat penalty in the utilities itself).
    """

    name = "oracle-greedy"

    def __init__(
        self,
        access: PrivilegedAccess,
        n_items: int,
        slate_size: int | None = None,
        exclude_served: bool = False,
    ) -> None:
        super().__init__(n_items, slate_size, exclude_served)
        self.access = access

    def scores(self, observations: np.ndarray, infos: Mapping[str, Any]) -> np.ndarray:
        """The current true utilities."""
        return self.access.true_utilities()


class BoredomAwarePolicy(ScoringPolicy):
    """Far-sighted heuristic: the best current utility, minus what the item costs in boredom.

    ``score_i = u_i - boredom_weight * c_i`` where ``u`` are the current true utilities and ``c``
    the immediate session-budget cost of the satiation the item would add (see
    :meth:`PrivilegedAccess.boredom_cost`): it rotates genres before satiation bites, keeping each
    genre's satiation under the user's tolerance, and so does not let habit pull it into one genre
    until the user leaves. Like the oracle it reads hidden state (utilities and satiation) through
    ``access``; unlike it, it weighs the one consequence a myopic policy ignores.

    Args:
        access: Privileged read access to the env(s) the policy acts in.
        n_items: Catalogue size.
        boredom_weight: Rating points given up per step of session budget the item would cost
            (``0`` is the oracle). The default 1 was the best of 0.3-30 on ml-latest-small, and
            the ratio to oracle-greedy varies by less than 5% over that range.
        slate_size: See :class:`ScoringPolicy`.
        exclude_served: See :class:`ScoringPolicy`.
    """

    name = "boredom-aware"

    def __init__(
        self,
        access: PrivilegedAccess,
        n_items: int,
        boredom_weight: float = 1.0,
        slate_size: int | None = None,
        exclude_served: bool = False,
    ) -> None:
        super().__init__(n_items, slate_size, exclude_served)
        if not np.isfinite(boredom_weight) or boredom_weight < 0:
            raise ValueError(f"boredom_weight must be finite and >= 0, got {boredom_weight}")
        self.access = access
        self.boredom_weight = float(boredom_weight)

    def scores(self, observations: np.ndarray, infos: Mapping[str, Any]) -> np.ndarray:
        """Current true utility minus the weighted boredom cost."""
        return self.access.true_utilities() - self.boredom_weight * self.access.boredom_cost()

