"""EASE^R (Steck, WWW 2019) and its denoising generalisation EDLAE (Steck, NeurIPS 2020).

EASE^R ("Embarrassingly Shallow AutoEncoder") learns one item-item weight matrix ``B`` by
ridge-regressing every item's interaction column on all the other items' columns,

``min_B ||X - X B||_F^2 + l2 ||B||_F^2  subject to  diag(B) = 0``,

whose solution is closed-form: with ``P = (X^T X + l2 I)^-1``,
``B = I - P diag(1 / diag(P))``, i.e. ``B_ij = -P_ij / P_jj`` off the diagonal and 0 on it.

EDLAE. Steck's "Autoencoders that don't overfit towards the Identity" (NeurIPS 2020) trains the
same linear autoencoder with dropout of rate ``p`` on its input. In expectation, dropout adds
the penalty ``(p / (1 - p)) sum_j G_jj ||B_j.||^2`` (``G = X^T X``), so the L2 penalty becomes
the diagonal matrix ``Lambda = l2 I + p / (1 - p) diag(G)``: a row of ``B`` that weighs a popular
item (large ``G_jj``) is shrunk harder. With the *emphasised* loss (only the dropped-out entries
count, full emphasis), the learned diagonal is exactly zero, and the full-rank solution keeps
EASE^R's form with ``Lambda`` in place of ``l2 I``:

``min_B ||X - X B||_F^2 + tr(B^T Lambda B)  subject to  diag(B) = 0``,
``P = (G + Lambda)^-1``, ``B = I - P diag(1 / diag(P))``

(:attr:`EASEConfig.dropout` ``p``; ``p = 0`` is EASE^R exactly). Without the emphasis (plain
denoising, DLAE; ``zero_diagonal=False``) the constraint goes and
``B = (G + Lambda)^-1 G = I - P Lambda``, whose diagonal is not zero.

Cost. The Gram matrix ``X^T X`` and its inverse are dense ``n_items x n_items`` float64 arrays:
``8 n_items^2`` bytes (110 MB for ml-1m's 3,706 items, 759 MB for ml-latest-small's 9,742,
3.2 GB at 20,000 items, 27.9 GB for ml-25m's 59,047) and about ``n_items^3`` floating-point
operations for the Cholesky factorisation and inversion. The solve here runs in place on that one
array, so the peak is one dense matrix plus a column block of the sparse product. Catalogues above
:attr:`EASEConfig.max_items` (20,000 by default) are refused with an error that says what they
would need, rather than exhausting the machine's memory. Dropout and the diagonal constraint
change neither the cost nor the memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.linalg import lapack

from recgym.recommenders.base import RatingsArrays, Recommender

__all__ = ["EASE", "EASEConfig", "dense_gram", "ease_weights"]

_BLOCK_ENTRIES = 4_000_000  # Gram entries produced per sparse product (~32 MB of float64)


@dataclass(frozen=True)
class EASEConfig:
    """Configuration of :class:`EASE`."""

    l2: float = 500.0
    """The ridge penalty ``lambda`` on ``||B||_F^2`` (> 0), EASE^R's one hyper-parameter. Its
    scale follows the Gram matrix's (interaction counts), so it is tuned per dataset: the NCF
    ML-1M validation split picks 1,131 (see the recommenders docs)."""
    dropout: float = 0.0
    """EDLAE's input dropout rate ``p`` in ``[0, 1)``: the penalty on row ``j`` of ``B`` becomes
    ``l2 + p / (1 - p) G_jj`` (``G_jj`` = item ``j``'s interaction count for binary ``X``).
    0 (the default) is EASE^R exactly."""
    zero_diagonal: bool = True
    """Constrain ``diag(B) = 0`` (EASE^R; EDLAE with full emphasis). ``False``: the
    unconstrained ridge / plain denoising solution ``B = (G + Lambda)^-1 G`` (DLAE), in which an
    item also predicts itself; that self-weight only scores items the user already has."""
    implicit: bool = True
    """``X`` holds 1 for every interaction (the usual top-N input); ``False``: ``X`` holds the
    ratings themselves."""
    max_items: int = 20_000
    """Refuse catalogues larger than this: the solve needs ``8 n_items^2`` bytes (3.2 GB at
    20,000 items) and ``~n_items^3`` operations. Raise it on a machine with the memory."""

    def __post_init__(self) -> None:
        if isinstance(self.l2, bool) or not (np.isfinite(self.l2) and self.l2 > 0):
            raise ValueError(f"l2 must be finite and > 0; got {self.l2!r}")
        _check_dropout(self.dropout)
        if not isinstance(self.zero_diagonal, (bool, np.bool_)):
            raise ValueError(f"zero_diagonal must be a bool; got {self.zero_diagonal!r}")
        m = self.max_items
        if isinstance(m, bool) or int(m) != m or m < 1:
            raise ValueError(f"max_items must be a positive integer; got {m!r}")


class EASE(Recommender[EASEConfig]):
    """EASE^R / EDLAE top-N recommender: ``score(u, ·) = x_u B`` with the closed-form ``B`` above.

    ``EASE(l2=...)`` is EASE^R; ``EASE(l2=..., dropout=p)`` is Steck's full-rank EDLAE (see the
    module docstring), the same dense solve with a popularity-dependent penalty.

    ``x_u`` is the user's row of ``X`` (binary, or the ratings when ``implicit=False``), so the
    score of item ``i`` is ``sum_{j in I_u} x_uj B_ji``: how well the user's other items predict
    ``i``. The zero diagonal keeps an item from predicting itself.

    Example (EDLAE on implicit pairs)::

        model = EASE(l2=100.0, dropout=0.25).fit(pairs)
        item_ids, scores = model.recommend(user_id, k=10)

    * Ranking only: EASE^R reconstructs the interaction row (unobserved entries are 0 in ``X``),
      so ``x_u B`` is a ranking score, not a rating; :meth:`predict` raises ``TypeError``.
    * Cold users (no training interactions) get the items' interaction counts (popularity).
    * Items without training interactions get ``B`` column 0, hence score 0 for warm users.
    * ``score_history`` folds a new user in exactly: ``x B`` for the history's row ``x``.

    Attributes:
        item_weights: ``(n_items, n_items)`` float64 ``B``; row ``j``, column ``i`` is the weight
            of item ``j`` in the prediction of item ``i``; zero diagonal unless
            ``zero_diagonal=False``.
    """

    config_class = EASEConfig
    predicts_ratings = False

    def _fit(self, data: RatingsArrays, items: pd.DataFrame | None) -> None:
        cfg = self.config
        check_catalogue_size(data.n_items, cfg.max_items)
        values = np.ones_like(data.ratings) if cfg.implicit else data.ratings
        self._x = data.matrix(values)
        self.item_weights = ease_weights(
            self._x, cfg.l2, dropout=cfg.dropout, zero_diagonal=cfg.zero_diagonal
        )
        self._popularity = np.bincount(data.items, minlength=data.n_items).astype(np.float64)

    def _score_users(self, users: np.ndarray) -> np.ndarray:
        out = np.empty((users.size, self.n_items))
        warm = users >= 0
        out[warm] = self._x[users[warm]] @ self.item_weights
        out[~warm] = self._popularity
        return out

    def _score_all(self, user: int) -> np.ndarray:
        if user < 0:
            return self._popularity
        return np.asarray(self._x[user] @ self.item_weights).ravel()

    def _score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        out = self._popularity[items].copy()
        warm = users >= 0
        if warm.any():
            out[warm] = self._score_via_rows(users[warm], items[warm])
        return out

    def _score_history(self, items: np.ndarray, ratings: np.ndarray) -> np.ndarray:
        values = np.ones(items.size) if self.config.implicit else ratings
        return values @ self.item_weights[items]


def _check_dropout(dropout: float) -> None:
    if isinstance(dropout, bool) or not (np.isfinite(dropout) and 0.0 <= dropout < 1.0):
        raise ValueError(f"dropout must be a finite number in [0, 1); got {dropout!r}")


def check_catalogue_size(n_items: int, max_items: int) -> None:
    """Refuse a dense item-item solve that would not fit (``ValueError`` saying what it needs).

    Args:
        n_items: Catalogue size.
        max_items: The configured limit.
    """
    if n_items > max_items:
        raise ValueError(
            f"n_items={n_items} exceeds max_items={max_items}: EASE^R solves a dense "
            f"{n_items} x {n_items} float64 system, {8 * n_items**2 / 1e9:.1f} GB of memory and "
            f"about {float(n_items) ** 3:.1e} floating-point operations. Keep fewer items (e.g. "
            "those with at least m interactions), or raise max_items on a machine with the memory."
        )


def dense_gram(interactions: sp.spmatrix) -> np.ndarray:
    """``X^T X`` as a dense C-ordered float64 array, built a column block at a time.

    Args:
        interactions: ``(n_users, n_items)`` sparse ``X``.

    Returns:
        ``(n_items, n_items)`` float64 Gram matrix (co-occurrence counts for binary ``X``).
    """
    x = sp.csc_matrix(interactions, dtype=np.float64)
    n_items = x.shape[1]
    xt = x.T.tocsr()
    gram = np.empty((n_items, n_items), dtype=np.float64)
    # Column blocks keep the sparse intermediate small; one sparse product of the whole catalogue
    # can hold more entries than the dense result.
    block = max(1, _BLOCK_ENTRIES // max(1, n_items))
    for start in range(0, n_items, block):
        stop = min(n_items, start + block)
        gram[:, start:stop] = (xt @ x[:, start:stop]).toarray()
    return gram


def ease_weights(
    interactions: sp.spmatrix, l2: float, *, dropout: float = 0.0, zero_diagonal: bool = True
) -> np.ndarray:
    """The EASE^R / EDLAE weights ``B`` (see the module docstring for the objective).

    With ``G = X^T X``, ``Lambda = l2 I + dropout / (1 - dropout) diag(G)`` and
    ``P = (G + Lambda)^-1``: ``B = I - P diag(1/diag(P))`` (zero diagonal; ``dropout = 0`` is
    EASE^R), or ``B = I - P Lambda = P G`` when ``zero_diagonal`` is ``False``.

    The inverse comes from a Cholesky factorisation (``G + Lambda`` is symmetric positive
    definite for ``l2 > 0``) computed in place, so the whole solve holds one dense
    ``n_items x n_items`` array. It runs in float64: the condition number
    ``(e_max + l2) / l2`` grows as ``l2`` shrinks (``e_max`` = 2.5e5 on ml-1m, so 2.5e7 at
    ``l2 = 0.01``, past float32's 1 / eps = 8.4e6), and ``B_ij = -P_ij / P_jj`` divides by the
    inverse's diagonal. Measured on the NCF ml-1m training data, a float32 solve would be
    accurate enough there (largest error relative to its column's largest weight: 2e-5 at
    ``l2 = 1000``, 5e-4 at ``l2 = 0.01``; identical HR@10 at ``l2`` = 10, 100 and 1000), at half
    the memory and under half the time; float64 keeps every accepted ``l2`` well inside the
    precision, on catalogues better or worse conditioned than ml-1m. Dropout only adds to the
    diagonal, which improves the conditioning.

    Args:
        interactions: ``(n_users, n_items)`` sparse ``X`` (binary or ratings).
        l2: Ridge penalty ``lambda > 0``.
        dropout: EDLAE's dropout rate ``p`` in ``[0, 1)``.
        zero_diagonal: Constrain ``diag(B) = 0`` (EASE^R, emphasised EDLAE); ``False``: DLAE.

    Returns:
        ``(n_items, n_items)`` float64 ``B``.

    Raises:
        ValueError: if ``l2`` is not a finite positive number or ``dropout`` is not in
            ``[0, 1)``.
        numpy.linalg.LinAlgError: if the factorisation fails (it cannot for finite ``X``).
    """
    if isinstance(l2, bool) or not (np.isfinite(l2) and l2 > 0):
        raise ValueError(f"l2 must be finite and > 0; got {l2!r}")
    _check_dropout(dropout)
    gram = dense_gram(interactions)
    n_items = gram.shape[0]
    penalty = l2 + (dropout / (1.0 - dropout)) * gram.diagonal()  # diag(Lambda), (n_items,)
    gram[np.diag_indices(n_items)] += penalty
    # The matrix is symmetric, so its C-ordered buffer read column-major (gram.T) is the same
    # matrix: LAPACK factorises and inverts it without a copy. Its upper triangle in column-major
    # order is the lower triangle of ``gram``.
    factor, info = lapack.dpotrf(gram.T, lower=False, clean=False, overwrite_a=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"Cholesky factorisation of X^T X + l2 I failed (info={info})")
    inverse, info = lapack.dpotri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"inversion of X^T X + l2 I failed (info={info})")
    if not np.shares_memory(inverse, gram):  # LAPACK copied after all: take its result
        gram = np.ascontiguousarray(inverse.T)
    _mirror_lower_to_upper(gram)
    if zero_diagonal:
        # The Lagrange multipliers of diag(B) = 0 replace Lambda_jj by 1 / P_jj.
        gram /= -gram.diagonal().copy()[None, :]
        gram[np.diag_indices(n_items)] = 0.0
    else:
        gram *= -penalty[None, :]
        gram[np.diag_indices(n_items)] += 1.0
    return gram


def _mirror_lower_to_upper(matrix: np.ndarray, block: int = 512) -> None:
    """Copy the lower triangle onto the upper one in place, a block of columns at a time."""
    n = matrix.shape[0]
    for start in range(0, n, block):
        stop = min(n, start + block)
        # Rows below the block: columns start:stop of the lower triangle, mirrored.
        matrix[start:stop, stop:] = matrix[stop:, start:stop].T
        diag_block = matrix[start:stop, start:stop]
        upper = np.triu_indices(stop - start, 1)
        diag_block[upper] = diag_block.T[upper]
