"""RecGym-MovieLens in the evaluation harness: its episode metrics and its privileged access.

:class:`MovieLensMetrics` is the env's plug-in of :func:`recgym.evaluation.evaluate` (registered
for :class:`~recgym.envs.movielens.MovieLensEnv` and
:class:`~recgym.envs.movielens.MovieLensVectorEnv` when the package is imported): it cycles the
episodes through the user population, measures NDCG@k against the user's current true utilities
*before* each step (read through :class:`MovieLensAccess`, the env's privileged instrumentation,
never shown to a policy unless the policy itself is privileged) and reports the metrics of
:mod:`recgym.metrics` per episode.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from recgym import metrics
from recgym.evaluation import EpisodeMetrics

#: The per-episode metric columns of RecGym-MovieLens evaluations (beside ``return`` and ``length``).
MOVIELENS_COLUMNS: tuple[str, ...] = (
    "ctr",
    "mean_rating",
    "ndcg",
    "intra_list_diversity",
    "session_diversity",
    "genre_concentration",
)


class MovieLensAccess:
    """Privileged read access to a MovieLens env or vector env (a :class:`~recgym.policies.PrivilegedAccess`).

    The research baselines (oracle-greedy, boredom-aware, the planner) and the harness's NDCG read
    the simulator's hidden state through this object and nothing else. Answers are batched
    (a leading ``num_envs`` axis; 1 for a single env) and cached until :meth:`invalidate` (the
    harness calls it after every reset and step), so the NDCG and a privileged policy share one
    computation per step.

    Args:
        env: The unwrapped :class:`~recgym.envs.movielens.MovieLensEnv` or ``MovieLensVectorEnv``.
        cache: Keep answers until :meth:`invalidate` (the harness's mode); ``False`` reads the env
            afresh at every call (for loops that do not call :meth:`invalidate`).
    """

    def __init__(self, env: Any, cache: bool = True) -> None:
        self.env = env
        self.cache = bool(cache)
        self._cache: dict[str, Any] = {}
        self._active: np.ndarray | None = None

    @property
    def params(self) -> Any:
        """The env's :class:`~recgym.envs.movielens.MovieLensParams` (hidden world included)."""
        return self.env.params

    def active(self) -> np.ndarray:
        """``(num_envs,)`` bool: the envs whose current episode is still being scored.

        The evaluation harness marks an env inactive once its episode has ended: the vector env
        keeps stepping it (auto-reset) until the whole wave is done, but those steps are not
        scored. Costly policies (the planner) skip inactive envs. All ``True`` outside the harness.
        """
        if self._active is None:
            return np.ones(int(getattr(self.env, "num_envs", 1)), dtype=bool)
        return self._active.copy()

    def set_active(self, env_mask: np.ndarray) -> None:
        """Mark the envs being scored (``(num_envs,)`` bool); the harness calls it before each step."""
        self._active = np.asarray(env_mask, dtype=bool).copy()

    def invalidate(self) -> None:
        """Forget cached answers (the env's state changed)."""
        self._cache.clear()

    def _get(self, name: str, compute) -> Any:
        if not self.cache:
            return compute()
        if name not in self._cache:
            self._cache[name] = compute()
        return self._cache[name]

    def true_utilities(self) -> np.ndarray:
        """``(num_envs, n_items)`` expected satisfaction of consuming each item now."""
        return self._get("true_utilities", lambda: np.atleast_2d(np.asarray(self.env.true_utilities())))

    def boredom_cost(self) -> np.ndarray:
        """``(num_envs, n_items)`` immediate session-budget cost of the satiation each item adds."""
        return self._get("boredom_cost", lambda: np.atleast_2d(np.asarray(self.env.boredom_cost())))

    def hidden_state(self) -> Any:
        """The users' full hidden state: a :class:`~recgym.envs.movielens.MovieLensState` of JAX
        arrays with a leading ``num_envs`` axis (a copy: the env's own buffers are never exposed)."""
        def batched():
            state = self.env.state
            if state is None:
                raise RuntimeError("call reset() first")
            if np.ndim(state.time) == 0:  # a single env's NumPy state: a batch of one
                state = jax.tree_util.tree_map(lambda x: np.asarray(x)[None], state)
            return jax.tree_util.tree_map(lambda x: jax.numpy.array(x, copy=True), state)

        return self._get("hidden_state", batched)


class MovieLensMetrics(EpisodeMetrics):
    """Episode metrics of RecGym-MovieLens (see :mod:`recgym.metrics`).

    Columns: ``user`` (world user index), then :data:`MOVIELENS_COLUMNS`: ``ctr`` (clicks per
    step), ``mean_rating`` (mean rating of the consumed items, NaN without any), ``ndcg`` (mean
    NDCG@k over the steps, against the user's current true utilities), ``intra_list_diversity``
    (mean ILD over the steps; NaN for single items), ``session_diversity`` and
    ``genre_concentration`` (HHI) of the consumed items; run metric ``coverage`` (catalogue
    coverage of every item shown).

    Args:
        env, n_episodes, seed: See :class:`~recgym.evaluation.EpisodeMetrics`.
        ndcg_k: NDCG cut-off (default: the slate size; at most the slate size).
        user_order: ``"cycle"`` (episode ``e`` serves user ``pool[e % len(pool)]``: balanced) or
            ``"sample"`` (the env draws the user from its reset noise).
    """

    columns = MOVIELENS_COLUMNS
    env_kwargs = {"users": "test"}

    def __init__(self, env: Any, n_episodes: int, seed: int, *, ndcg_k: int | None = None,
                 user_order: str = "cycle") -> None:
        super().__init__(env, n_episodes, seed)
        params = env.params
        self.slate = int(params.slate_size)
        self.k = self.slate if ndcg_k is None else int(ndcg_k)
        if not 1 <= self.k <= self.slate:
            raise ValueError(f"ndcg_k must lie in [1, slate_size={self.slate}], got {ndcg_k}")
        if user_order not in ("cycle", "sample"):
            raise ValueError(f"user_order must be 'cycle' or 'sample', got {user_order!r}")
        self.user_order = user_order
        self.pool = np.asarray(params.world.user_pool)
        self.genres = np.asarray(params.world.item_genres)
        self.n_items = int(params.n_items)
        self.horizon = int(params.max_episode_steps)
        self.access = MovieLensAccess(env)
        self._shown_all: list[np.ndarray] = []

    def context(self) -> dict[str, Any]:
        """The world, catalogue size, slate size and privileged access."""
        return {"access": self.access, "world": getattr(self.env, "world", None), "n_items": self.n_items,
                "slate_size": None if self.slate == 1 else self.slate}

    def reset_options(self, episodes: np.ndarray) -> dict[str, np.ndarray] | None:
        """``user_id``: the pool cycled by episode index (``user_order="cycle"``)."""
        if self.user_order == "sample":
            return None
        return {"user_id": self.pool[episodes % len(self.pool)].astype(np.int32)}

    def env_changed(self) -> None:
        """The env moved: forget the cached privileged reads."""
        self.access.invalidate()

    def begin_wave(self, episodes: np.ndarray, info: Mapping[str, Any]) -> None:
        """Allocate the wave's per-step records."""
        n, h = len(episodes), self.horizon
        self.rec = {
            "valid": np.zeros((n, h), dtype=bool),
            "clicked": np.zeros((n, h), dtype=bool),
            "item": np.full((n, h), -1, dtype=np.int64),
            "rating": np.zeros((n, h)),
            "shown": np.zeros((n, h, self.slate), dtype=np.int64),
            "ndcg": np.full((n, h), np.nan),
        }
        self.user = np.asarray(info["user"], dtype=np.int64).reshape(n)
        self.scored = episodes < self.n_episodes  # the last wave's spare envs run but are not scored
        self.candidates = self._candidates(info, n)
        self.utilities = None

    @staticmethod
    def _candidates(info: Mapping[str, Any], n: int) -> np.ndarray | None:
        """``(n, K)`` item ids of the candidates the next action indexes (candidate mode)."""
        if "candidates" not in info:
            return None
        return np.asarray(info["candidates"], dtype=np.int64).reshape(n, -1)

    def before_step(self, t: int, alive: np.ndarray) -> None:
        """Read the current true utilities (the NDCG's ideal) before the step changes them, and tell
        the access which envs are still scored."""
        self.access.set_active(alive & self.scored)
        self.utilities = self.access.true_utilities() if alive.any() else None

    def record_step(self, t: int, alive: np.ndarray, actions: np.ndarray, reward: np.ndarray,
                    info: Mapping[str, Any]) -> None:
        """Shown items, clicks, ratings and the step's NDCG@k."""
        rec, n = self.rec, len(alive)
        shown = np.asarray(actions, dtype=np.int64).reshape(n, self.slate)
        available = None
        if self.candidates is not None:  # actions are positions in the candidate list
            shown = np.take_along_axis(self.candidates, shown, axis=1)
            available = np.zeros((n, self.n_items), dtype=bool)
            np.put_along_axis(available, self.candidates, True, axis=1)
        rec["valid"][:, t] = alive
        rec["shown"][:, t] = shown
        rec["clicked"][:, t] = alive & np.asarray(info["clicked"], dtype=bool).reshape(n)
        clicked = rec["clicked"][:, t]
        rec["item"][:, t] = np.where(clicked, np.asarray(info["clicked_item"]).reshape(n), -1)
        rec["rating"][:, t] = np.where(clicked, np.asarray(info["rating"], dtype=np.float64).reshape(n), 0.0)
        if self.utilities is not None and alive.any():
            rec["ndcg"][alive, t] = metrics.ndcg_at_k(
                shown[alive], self.utilities[alive], self.k,
                available=None if available is None else available[alive],
            )
        self.candidates = self._candidates(info, n)

    def end_wave(self, size: int) -> dict[str, np.ndarray]:
        """The wave's per-episode columns."""
        r = {key: value[:size] for key, value in self.rec.items()}
        valid = r["valid"]
        self._shown_all.append(r["shown"][valid])
        if self.slate > 1:
            ild = _masked_row_mean(metrics.intra_list_diversity(r["shown"], self.genres), valid)
        else:
            ild = np.full(size, np.nan)
        return {
            "user": self.user[:size],
            "ctr": metrics.ctr(r["clicked"], valid),
            "mean_rating": metrics.mean_rating(r["rating"], r["clicked"], valid),
            "ndcg": _masked_row_mean(r["ndcg"], valid),
            "intra_list_diversity": ild,
            "session_diversity": metrics.session_diversity(r["item"], self.genres, valid),
            "genre_concentration": metrics.genre_concentration(r["item"], self.genres, valid),
        }

    def run_metrics(self) -> dict[str, float]:
        """``coverage``: catalogue coverage of every item shown over the run."""
        shown = np.concatenate(self._shown_all) if self._shown_all else np.zeros(0, dtype=np.int64)
        return {"coverage": metrics.catalogue_coverage(shown.reshape(-1), self.n_items)}

    def settings(self) -> dict[str, Any]:
        """Slate size, NDCG cut-off, user order and population size."""
        return {"slate_size": self.slate, "ndcg_k": self.k, "user_order": self.user_order,
                "n_users_in_pool": len(self.pool)}


def _masked_row_mean(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Mean of each row over its valid, non-NaN entries (NaN for a row without any)."""
    use = valid & ~np.isnan(values)
    count = use.sum(axis=1)
    total = np.where(use, values, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)
