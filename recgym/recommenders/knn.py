"""Item-based k-nearest-neighbour collaborative filtering (Sarwar et al. 2001; Deshpande & Karypis 2004)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recgym.recommenders.base import RatingsArrays, Recommender, _ids, top_k

__all__ = ["ItemKNN", "ItemKNNConfig"]

_BLOCK_ENTRIES = 4_000_000  # dense similarity entries computed at once (~32 MB of float64)


@dataclass(frozen=True)
class ItemKNNConfig:
    """Configuration of :class:`ItemKNN`."""

    similarity: Literal["cosine", "adjusted_cosine", "asymmetric_cosine"] = "cosine"
    """``"cosine"`` of the items' rating columns; ``"adjusted_cosine"``: cosine after
    subtracting each user's mean rating (Sarwar et al.); ``"asymmetric_cosine"``: the norms
    weighted by :attr:`asymmetry` (Aiolli 2013)."""
    asymmetry: float = 0.5
    """``alpha`` in ``[0, 1]`` of the asymmetric cosine
    ``x_i·x_j / (|x_i|^(2 alpha) |x_j|^(2 (1 - alpha)))`` between a scored item ``i`` and its
    neighbour ``j`` (0.5 is the cosine). For binary vectors ``|x|^2`` is the item's number of
    users, so ``alpha < 0.5`` divides less by the scored item's popularity and more by the
    neighbour's: popular items score higher, and a rare neighbour is stronger evidence. Only used
    by ``similarity="asymmetric_cosine"``."""
    n_neighbours: int = 50
    """Neighbours kept per item (the ``k`` most similar items with positive similarity)."""
    shrinkage: float = 25.0
    """``s_ij <- s_ij · n_ij / (n_ij + shrinkage)`` with ``n_ij`` the number of users of both
    items, damping similarities supported by few users (0 disables)."""
    implicit: bool = False
    """Treat every interaction as 1 when computing similarities (binary cosine), the usual
    choice for top-N ranking; the ratings are still used by :meth:`~ItemKNN.predict`."""
    bias_damping: float = 5.0
    """Damping of the baseline biases ``b_u, b_i`` the rating predictions start from."""

    def __post_init__(self) -> None:
        if self.similarity not in ("cosine", "adjusted_cosine", "asymmetric_cosine"):
            raise ValueError(
                "similarity must be 'cosine', 'adjusted_cosine' or 'asymmetric_cosine'; "
                f"got {self.similarity!r}"
            )
        alpha = self.asymmetry
        if isinstance(alpha, bool) or not (np.isfinite(alpha) and 0.0 <= alpha <= 1.0):
            raise ValueError(f"asymmetry must lie in [0, 1]; got {alpha!r}")
        if alpha != 0.5 and self.similarity != "asymmetric_cosine":
            raise ValueError(
                f"asymmetry={alpha!r} needs similarity='asymmetric_cosine'; got {self.similarity!r}"
            )
        k = self.n_neighbours
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"n_neighbours must be a positive integer; got {k!r}")
        for name in ("shrinkage", "bias_damping"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0; got {value!r}")


class ItemKNN(Recommender[ItemKNNConfig]):
    """Item-based kNN: score an item by its similarity to the items the user has rated.

    Similarity of items ``i, j`` over their rating columns ``x_i, x_j`` (users x 1; centred by
    user means for adjusted cosine, binary when ``implicit``):

    ``s_ij = x_i·x_j / (|x_i|^(2 alpha) |x_j|^(2 (1 - alpha))) · n_ij / (n_ij + shrinkage)``,

    with ``alpha = 0.5`` (the cosine) unless ``similarity="asymmetric_cosine"`` sets
    :attr:`~ItemKNNConfig.asymmetry`. Each item keeps its ``n_neighbours`` largest positive
    values, ``N(i)``.

    * ``score(u, i) = sum_{j in N(i) ∩ I_u} s_ij`` — the top-N ranking score (Deshpande &
      Karypis), also what ``score_history`` returns for a history ``I_u``. Cold users get the
      item's rating count (popularity).
    * ``predict(u, i) = b_ui + sum_{j in N(i) ∩ I_u} s_ij (r_uj - b_uj) / sum_{j} s_ij`` with
      the damped baseline ``b_ui = mu + b_u + b_i``; it is ``b_ui`` when the user rated no
      neighbour of ``i``, and ``mu + b_i`` for cold users.

    Attributes:
        neighbours: ``(n_items, n_items)`` CSR matrix, row ``i`` holding ``s_ij`` for ``j`` in
            ``N(i)``.
    """

    config_class = ItemKNNConfig

    def _fit(self, data: RatingsArrays, items: pd.DataFrame | None) -> None:
        cfg = self.config
        ones = np.ones_like(data.ratings)
        if cfg.implicit:
            values = ones
        elif cfg.similarity == "adjusted_cosine":
            sums = np.bincount(data.users, weights=data.ratings, minlength=data.n_users)
            counts = np.bincount(data.users, minlength=data.n_users)
            values = data.ratings - (sums / np.maximum(counts, 1))[data.users]
        else:
            values = data.ratings
        x = data.matrix(values).T.tocsr()  # items x users
        binary = None if cfg.implicit else data.matrix(ones).T.tocsr()
        self.neighbours = _top_k_similarities(
            x, binary, cfg.n_neighbours, cfg.shrinkage, cfg.asymmetry
        )
        self._neighbours_t = self.neighbours.T.tocsr()  # row j: targets i that have j in N(i)
        self._abs_neighbours_t = abs(self._neighbours_t)

        mu = float(data.ratings.mean())
        d = cfg.bias_damping
        n_u = np.bincount(data.users, minlength=data.n_users)
        user_bias = np.bincount(data.users, weights=data.ratings - mu, minlength=data.n_users) / (
            n_u + d
        )
        n_i = np.bincount(data.items, minlength=data.n_items)
        item_bias = np.bincount(
            data.items, weights=data.ratings - mu - user_bias[data.users], minlength=data.n_items
        ) / np.maximum(n_i + d, 1e-12)
        self.global_mean, self.user_bias, self.item_bias = mu, user_bias, item_bias
        residuals = data.ratings - mu - user_bias[data.users] - item_bias[data.items]
        self._binary = data.matrix(ones)
        self._residuals = data.matrix(residuals)
        self._popularity = n_i.astype(np.float64)

    def similar_items(self, item_id: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest neighbours of an item, ``(item_ids, similarities)``, most similar first."""
        (item,) = _ids([item_id], "item_id")
        if item >= self.n_items:
            raise ValueError(f"item_id must lie in [0, {self.n_items}); got {item}")
        row = self.neighbours.getrow(int(item)).toarray().ravel()
        row[row == 0] = -np.inf
        return top_k(row, k)

    def _score_users(self, users: np.ndarray) -> np.ndarray:
        out = np.empty((users.size, self.n_items))
        warm = users >= 0
        out[warm] = (self._binary[users[warm]] @ self._neighbours_t).toarray()
        out[~warm] = self._popularity
        return out

    def _score_history(self, items: np.ndarray, ratings: np.ndarray) -> np.ndarray:
        # The ranking score only needs which items the user has: sum their neighbour rows.
        return np.asarray(self._neighbours_t[items].sum(axis=0)).ravel()

    def _score_all(self, user: int) -> np.ndarray:
        if user < 0:
            return self._popularity
        return (self._binary[user] @ self._neighbours_t).toarray().ravel()

    def _score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        out = self._popularity[items].copy()
        warm = users >= 0
        if warm.any():
            out[warm] = self._score_via_rows(users[warm], items[warm])
        return out

    def _predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        out = self.global_mean + self.item_bias[items]
        warm = users >= 0
        if warm.any():
            u, i = users[warm], items[warm]
            num = self._score_via_rows(
                u, i, lambda us: (self._residuals[us] @ self._neighbours_t).toarray()
            )
            den = self._score_via_rows(
                u, i, lambda us: (self._binary[us] @ self._abs_neighbours_t).toarray()
            )
            offset = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
            out[warm] += self.user_bias[u] + offset
        return self._clip(out)


def _top_k_similarities(
    x: sp.csr_matrix,
    binary: sp.csr_matrix | None,
    k: int,
    shrinkage: float,
    asymmetry: float = 0.5,
) -> sp.csr_matrix:
    """Row ``i``: the ``k`` largest positive shrunk (asymmetric) cosine similarities of item ``i``.

    Args:
        x: ``(n_items, n_users)`` CSR item vectors.
        binary: Same pattern with ones (co-rating counts); ``None`` when ``x`` is binary itself,
            whose dot products then are the counts (one sparse product per block, not two).
        k: Neighbours per item.
        shrinkage: Shrinkage constant.
        asymmetry: ``alpha``: row ``i`` (the scored item) is divided by ``|x_i|^(2 alpha)``, its
            neighbour ``j`` by ``|x_j|^(2 (1 - alpha))``; 0.5 is the cosine.
    """
    n_items = x.shape[0]
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    inv_norms = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    # At alpha = 0.5 both powers are exactly 1: the cosine, bit for bit.
    target_scale = inv_norms ** (2.0 * asymmetry)
    neighbour_scale = inv_norms ** (2.0 * (1.0 - asymmetry))
    k = min(k, n_items - 1) if n_items > 1 else 0
    block = max(1, _BLOCK_ENTRIES // max(1, n_items))
    xt = x.T.tocsc()
    bt = None if binary is None else binary.T.tocsc()
    rows, cols, vals = [], [], []
    for start in range(0, n_items, block):
        stop = min(n_items, start + block)
        targets = np.arange(start, stop)
        # Similarities of the block's target items (columns) to every item (rows).
        sims = (x @ xt[:, start:stop]).toarray()
        if shrinkage > 0:
            common = sims.copy() if bt is None else (binary @ bt[:, start:stop]).toarray()
        sims *= neighbour_scale[:, None] * target_scale[None, start:stop]
        if shrinkage > 0:
            sims *= common / (common + shrinkage)
        sims[targets, targets - start] = 0.0
        if k == 0:
            continue
        top = np.argpartition(-sims, k - 1, axis=0)[:k]  # (k, block) neighbour ids
        top_vals = np.take_along_axis(sims, top, axis=0)
        keep = top_vals > 0
        rows.append(np.broadcast_to(targets, top.shape)[keep])
        cols.append(top[keep])
        vals.append(top_vals[keep])
    if not rows:
        return sp.csr_matrix((n_items, n_items))
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_items, n_items),
    )
