"""Biased matrix factorisation as a recommender (a thin wrapper over :mod:`recgym.biased_mf`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recgym.biased_mf import BiasedMFModel, fit_biased_mf, mf_pair_scores, mf_scores
from recgym.recommenders.base import RatingsArrays, Recommender

__all__ = ["MatrixFactorization", "MatrixFactorizationConfig", "sample_negatives"]


@dataclass(frozen=True)
class MatrixFactorizationConfig:
    """Configuration of :class:`MatrixFactorization` (see :func:`~recgym.biased_mf.fit_biased_mf`)."""

    n_factors: int = 16
    """Latent dimension ``k``."""
    reg: float = 1.25
    """Factor L2 penalty, scaled by ``n^reg_exponent`` (``n`` = the user's / item's ratings)."""
    bias_reg: float = 5.0
    """Bias L2 penalty (constant)."""
    reg_exponent: float = 0.5
    """Frequency-scaling exponent of ``reg`` (0 = plain ridge, 1 = ALS-WR)."""
    n_iters: int = 15
    """ALS sweeps."""
    seed: int = 0
    """Seed of the initial factors (and of the negative sample)."""
    clip: bool = True
    """Clip :meth:`~MatrixFactorization.predict` to the training rating range."""
    negatives: int = 0
    """Implicit-feedback mode when ``> 0``: every interaction is a positive labelled 1 and this
    many unobserved items per interaction, sampled uniformly (seeded), are labelled 0 — the
    pointwise setup of NCF. ``0``: regress the ratings."""

    def __post_init__(self) -> None:
        for name in ("n_factors", "n_iters"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        for name in ("reg", "bias_reg", "reg_exponent"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0; got {value!r}")
        if (
            isinstance(self.negatives, bool)
            or int(self.negatives) != self.negatives
            or self.negatives < 0
        ):
            raise ValueError(f"negatives must be a non-negative integer; got {self.negatives!r}")


class MatrixFactorization(Recommender[MatrixFactorizationConfig]):
    """Biased matrix factorisation ``r_ui ≈ mu + b_u + b_i + p_u · q_i`` fitted by ALS.

    ``score`` is the unclipped prediction; ``predict`` clips it to the training rating range
    (unless ``clip=False``). ``score_history`` folds a new user in by one exact ALS user step
    against the fitted item side (with ``negatives > 0`` the history counts as positives only).
    Cold users (unknown or without training ratings) get
    ``mu + b_i``, the bias-only baseline, so they are recommended the items with the largest
    bias; catalogue items never rated in training have ``b_i = 0`` and ``q_i = 0``.

    Attributes:
        model: The fitted :class:`~recgym.biased_mf.BiasedMFModel`.
    """

    config_class = MatrixFactorizationConfig

    def _fit(self, data: RatingsArrays, items: pd.DataFrame | None) -> None:
        cfg = self.config
        users, item_ids, values = data.users, data.items, data.ratings
        if cfg.negatives > 0:
            neg_users, neg_items = sample_negatives(
                users, item_ids, data.n_items, cfg.negatives, seed=cfg.seed
            )
            users = np.concatenate([users, neg_users])
            item_ids = np.concatenate([item_ids, neg_items])
            values = np.concatenate([np.ones(len(data.users)), np.zeros(len(neg_users))])
        self.model: BiasedMFModel = fit_biased_mf(
            users,
            item_ids,
            values,
            n_users=data.n_users,
            n_items=data.n_items,
            n_factors=cfg.n_factors,
            reg=cfg.reg,
            bias_reg=cfg.bias_reg,
            reg_exponent=cfg.reg_exponent,
            n_iters=cfg.n_iters,
            seed=cfg.seed,
        )

    def _user_terms(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(b_u, p_u)`` in float64; a cold user (id -1) has zero bias and zero factors."""
        m = self.model
        warm = users >= 0
        known = np.where(warm, users, 0)
        bias = np.where(warm, m.user_bias[known], 0.0).astype(np.float64)
        factors = np.where(warm[:, None], m.user_factors[known], 0.0).astype(np.float64)
        return bias, factors

    def _score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        # float64 throughout, so pairwise scores agree with the full rows of _score_users.
        m = self.model
        bias, factors = self._user_terms(users)
        return mf_pair_scores(m.global_mean, bias, m.item_bias[items].astype(np.float64), factors,
                              m.item_factors[items].astype(np.float64))

    def _predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        scores = self._score(users, items)
        return self._clip(scores) if self.config.clip else scores

    def _score_users(self, users: np.ndarray) -> np.ndarray:
        m = self.model
        bias, factors = self._user_terms(users)
        return mf_scores(m.global_mean, bias, m.item_bias.astype(np.float64), factors,
                         m.item_factors.astype(np.float64))

    def _score_all(self, user: int) -> np.ndarray:
        return self._score_users(np.array([user]))[0]

    def _score_history(self, items: np.ndarray, ratings: np.ndarray) -> np.ndarray:
        # One exact ALS user half-step against the fixed item side: the ridge regression of
        # the history's residuals r - mu - b_i on [q_i, 1], with the fit's regularisation.
        m, cfg = self.model, self.config
        q = m.item_factors.astype(np.float64)
        features = np.hstack([q[items], np.ones((items.size, 1))])
        target = ratings - m.global_mean - m.item_bias[items].astype(np.float64)
        k = q.shape[1]
        penalty = np.full(k + 1, cfg.reg * items.size**cfg.reg_exponent)
        penalty[k] = cfg.bias_reg
        gram = features.T @ features + np.diag(penalty)
        solution = np.linalg.lstsq(gram, features.T @ target, rcond=None)[0]
        return mf_scores(m.global_mean, solution[k], m.item_bias.astype(np.float64), solution[:k], q)


def sample_negatives(
    users: np.ndarray, items: np.ndarray, n_items: int, per_positive: int, *, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Uniformly sample unobserved ``(user, item)`` pairs, ``per_positive`` per observed pair.

    Draws are rejected when they hit an observed pair or repeat an earlier draw, so the result
    may be slightly shorter than ``per_positive * len(users)`` for very dense users.

    Args:
        users: ``(n,)`` int user ids of the observed pairs.
        items: ``(n,)`` int item ids of the observed pairs.
        n_items: Catalogue size (negatives are drawn from ``0 .. n_items - 1``).
        per_positive: Negatives per observed pair (``>= 1``).
        seed: Seed of the draw.

    Returns:
        ``(neg_users, neg_items)`` int64 arrays of distinct unobserved pairs.
    """
    rng = np.random.default_rng(seed)
    observed = np.unique(users.astype(np.int64) * n_items + items)
    owners = np.repeat(users.astype(np.int64), per_positive)
    keys = owners * n_items + rng.integers(0, n_items, size=owners.size)
    for _ in range(5):  # redraw rejected draws a few times, then drop what is still rejected
        bad = _rejected(keys, observed)
        if not bad.any():
            break
        keys[bad] = owners[bad] * n_items + rng.integers(0, n_items, size=int(bad.sum()))
    keys = np.sort(keys[~_rejected(keys, observed)])
    return keys // n_items, keys % n_items


def _rejected(keys: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Draws that hit an observed pair or repeat an earlier draw."""
    pos = np.minimum(np.searchsorted(observed, keys), observed.size - 1)
    bad = observed[pos] == keys
    _, first = np.unique(keys, return_index=True)
    repeat = np.ones(keys.size, dtype=bool)
    repeat[first] = False
    return bad | repeat
