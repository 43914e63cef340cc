"""Biased matrix factorisation: the one model shared by the simulator and the recommenders.

The model is ``r_ui ≈ mu + b_u + b_i + p_u · q_i``; :func:`mf_scores` (a user against items) and
:func:`mf_pair_scores` (aligned user-item pairs) are the only places the formula is written. The
MovieLens world builder fits it as the simulator's hidden ground truth, the simulator's dynamics
evaluate it at every step (NumPy and ``jax.numpy`` alike: the two functions use operators only),
and :class:`~recgym.recommenders.MatrixFactorization` wraps it as a recommender.

:func:`fit_biased_mf` fits it by alternating
least squares (ALS) with the biases learned jointly with the factors: with the item side fixed,
every user's ``(p_u, b_u)`` is the exact minimiser of a small ridge regression, and vice versa.
All users (items) are solved at once: the normal-equation matrices of every user are one
sparse-by-dense product (ratings-pattern matrix times the items' flattened outer products), and
the ``(k+1) x (k+1)`` systems are solved in one batched Cholesky factorisation. There is no Python
loop over users, items or ratings.

Regularisation of the factors is frequency-scaled (after ALS-WR, Zhou et al. 2008): a user with
``n_u`` ratings pays ``reg * n_u**reg_exponent * |p_u|^2``. The default exponent 0.5 sits between
plain ridge (0) and ALS-WR (1) and was chosen by 5-fold RMSE on ml-100k and ml-latest-small (see
docs/recommenders.md). The biases pay a constant ``bias_reg * b_u^2`` (a damped mean, like
Surprise's baseline estimates).

Determinism: the only randomness is the initial factors, drawn from ``seed``; the rest is a fixed
sequence of linear-algebra operations, so the same inputs and seed give bit-identical parameters
on the same machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recgym.core import finite, require

__all__ = ["BiasedMFModel", "fit_biased_mf", "mf_pair_scores", "mf_scores"]


def mf_scores(global_mean, user_bias, item_bias, user_factors, item_factors):
    """``mu + b_u + b_i + p_u · q_i`` of one user (or each of several users) against items.

    Operators only, so it runs on NumPy arrays, JAX arrays and tracers alike (the simulator calls it
    under ``jit``/``vmap``). A cold user is one with zero bias and zero factors.

    Args:
        global_mean: ``mu`` (scalar).
        user_bias: ``b_u``: a scalar for one user, ``(m,)`` for several.
        item_bias: ``b_i``: ``(n,)`` (or a scalar for one item).
        user_factors: ``p_u``: ``(k,)`` for one user, ``(m, k)`` for several.
        item_factors: ``q_i``: ``(n, k)`` (or ``(k,)`` for one item).

    Returns:
        ``(n,)`` for one user (a scalar for one user and one item), ``(m, n)`` users x items.
    """
    if user_factors.ndim == 1:  # one user, the simulator's hot path: one matrix-vector product
        return item_bias + item_factors @ user_factors + (global_mean + user_bias)
    return item_bias + user_factors @ item_factors.T + (global_mean + user_bias)[..., None]


def mf_pair_scores(global_mean, user_bias, item_bias, user_factors, item_factors):
    """``mu + b_u + b_i + p_u · q_i`` of aligned (user, item) pairs (operators only, see :func:`mf_scores`).

    Args:
        global_mean: ``mu`` (scalar).
        user_bias: ``(...)`` ``b_u`` of each pair's user.
        item_bias: ``(...)`` ``b_i`` of each pair's item.
        user_factors: ``(..., k)`` ``p_u`` of each pair's user.
        item_factors: ``(..., k)`` ``q_i`` of each pair's item.

    Returns:
        ``(...)`` one score per pair.
    """
    return item_bias + (user_factors * item_factors).sum(-1) + (global_mean + user_bias)


@dataclass(frozen=True, eq=False)
class BiasedMFModel:
    """Fitted parameters of a biased matrix factorisation ``mu + b_u + b_i + p_u · q_i``.

    Attributes:
        global_mean: ``mu``, the mean training rating (rating units).
        user_bias: ``(n_users,)`` float32 user offsets ``b_u`` (rating units).
        item_bias: ``(n_items,)`` float32 item offsets ``b_i`` (rating units).
        user_factors: ``(n_users, k)`` float32 user factors ``p_u``.
        item_factors: ``(n_items, k)`` float32 item factors ``q_i``.
    """

    global_mean: float
    user_bias: np.ndarray
    item_bias: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray

    def __post_init__(self) -> None:
        n_users, n_items = len(self.user_bias), len(self.item_bias)
        if self.user_factors.ndim != 2 or self.user_factors.shape[0] != n_users:
            raise ValueError(
                f"user_factors must have shape (n_users={n_users}, k); got {self.user_factors.shape}"
            )
        if self.item_factors.ndim != 2 or self.item_factors.shape[0] != n_items:
            raise ValueError(
                f"item_factors must have shape (n_items={n_items}, k); got {self.item_factors.shape}"
            )
        if self.user_factors.shape[1] != self.item_factors.shape[1]:
            raise ValueError(
                f"user_factors has {self.user_factors.shape[1]} factors but item_factors has "
                f"{self.item_factors.shape[1]}"
            )

    @property
    def n_users(self) -> int:
        """Number of users."""
        return len(self.user_bias)

    @property
    def n_items(self) -> int:
        """Number of items."""
        return len(self.item_bias)

    @property
    def n_factors(self) -> int:
        """Number of latent factors ``k``."""
        return self.user_factors.shape[1]

    def predict(self, user_ids, item_ids) -> np.ndarray:
        """Predicted ratings of ``(user, item)`` pairs.

        Args:
            user_ids: Integer user indices in ``[0, n_users)``; broadcastable against ``item_ids``.
            item_ids: Integer item indices in ``[0, n_items)``.

        Returns:
            float32 array of the broadcast shape: ``mu + b_u + b_i + p_u · q_i`` (not clipped).

        Raises:
            ValueError: if an index is out of range.
        """
        users = _check_index(user_ids, self.n_users, "user_ids")
        items = _check_index(item_ids, self.n_items, "item_ids")
        users, items = np.broadcast_arrays(users, items)
        return mf_pair_scores(
            np.float32(self.global_mean), self.user_bias[users], self.item_bias[items],
            self.user_factors[users], self.item_factors[items],
        ).astype(np.float32, copy=False)

    def score_all(self, user_id: int) -> np.ndarray:
        """Predicted ratings of one user for every item, ``(n_items,)`` float32."""
        (user,) = _check_index([user_id], self.n_users, "user_id")
        return mf_scores(
            np.float32(self.global_mean), self.user_bias[user], self.item_bias,
            self.user_factors[user], self.item_factors,
        ).astype(np.float32, copy=False)


def fit_biased_mf(
    user_ids,
    item_ids,
    ratings,
    *,
    n_users: int,
    n_items: int,
    n_factors: int = 16,
    reg: float = 1.25,
    n_iters: int = 15,
    seed: int = 0,
    bias_reg: float = 5.0,
    reg_exponent: float = 0.5,
    init_scale: float = 0.1,
) -> BiasedMFModel:
    """Fit ``r_ui ≈ mu + b_u + b_i + p_u · q_i`` by biased alternating least squares.

    Each half-step solves, for every user ``u`` at once (items symmetric),

    ``min_{p_u, b_u} sum_{i in I_u} (r_ui - mu - b_i - b_u - p_u·q_i)^2
    + reg n_u^e |p_u|^2 + bias_reg b_u^2``

    exactly, where ``n_u = |I_u|`` and ``e = reg_exponent``. Users or items without ratings keep
    zero bias and zero factors, so they predict ``mu`` (plus the other side's bias).

    Args:
        user_ids: ``(n_ratings,)`` integer user indices in ``[0, n_users)``.
        item_ids: ``(n_ratings,)`` integer item indices in ``[0, n_items)``.
        ratings: ``(n_ratings,)`` ratings (any real scale).
        n_users: Number of users (rows of the factor matrix; may exceed the largest id).
        n_items: Number of items.
        n_factors: Latent dimension ``k`` (> 0).
        reg: L2 penalty on the factors, multiplied by ``n^reg_exponent`` (>= 0).
        n_iters: ALS sweeps (each solves users then items; >= 1).
        seed: Seed of the initial item factors (the only random draw).
        bias_reg: L2 penalty on each bias (not frequency-scaled; >= 0).
        reg_exponent: Exponent ``e`` of the frequency scaling ``n^e`` (0 = plain ridge,
            1 = ALS-WR).
        init_scale: Standard deviation of the initial factors.

    Returns:
        The fitted :class:`BiasedMFModel` (float32 arrays).

    Raises:
        ValueError: on empty or mismatched inputs, out-of-range ids, non-finite ratings or bad
            hyper-parameters (the message names the argument and the value).
    """
    users = np.asarray(user_ids)
    items = np.asarray(item_ids)
    values = np.asarray(ratings, dtype=np.float64)
    if users.ndim != 1 or items.shape != users.shape or values.shape != users.shape:
        raise ValueError(
            "user_ids, item_ids and ratings must be 1-D of equal length; got shapes "
            f"{users.shape}, {items.shape}, {values.shape}"
        )
    if users.size == 0:
        raise ValueError("fit_biased_mf needs at least one rating; got an empty training set")
    require(lambda v: int(v) == v and v > 0, "n_users", n_users, "a positive integer")
    require(lambda v: int(v) == v and v > 0, "n_items", n_items, "a positive integer")
    users = _check_index(users, n_users, "user_ids")
    items = _check_index(items, n_items, "item_ids")
    if not np.all(np.isfinite(values)):
        raise ValueError("ratings must be finite; got NaN or inf")
    require(lambda v: int(v) == v and v > 0, "n_factors", n_factors, "a positive integer")
    require(lambda v: int(v) == v and v > 0, "n_iters", n_iters, "a positive integer")
    require(lambda v: finite(v) and v >= 0, "reg", reg, "finite and >= 0")
    require(lambda v: finite(v) and v >= 0, "bias_reg", bias_reg, "finite and >= 0")
    require(lambda v: finite(v) and v >= 0, "reg_exponent", reg_exponent, ">= 0")
    require(lambda v: finite(v) and v >= 0, "init_scale", init_scale, ">= 0")
    n_users, n_items, k = int(n_users), int(n_items), int(n_factors)

    mu = float(values.mean())
    # One 0/1 pattern matrix per side, and a copy whose data each half-step overwrites with the
    # residual targets.
    by_user = sp.csr_matrix(
        (np.ones(users.size, dtype=np.float64), (users, items)), shape=(n_users, n_items)
    )
    by_user.sum_duplicates()
    if by_user.nnz != users.size:
        raise ValueError("duplicate (user_id, item_id) pairs in the training ratings")
    by_user.sort_indices()
    # Ratings in the CSR order of by_user, and the permutation to the CSR order of by_item.
    order_u = np.lexsort((items, users))
    r_u = values[order_u] - mu
    u_sorted, i_sorted = users[order_u], items[order_u]
    order_i = np.lexsort((u_sorted, i_sorted))
    by_item = sp.csr_matrix(
        (np.ones(users.size), (i_sorted[order_i], u_sorted[order_i])), shape=(n_items, n_users)
    )
    by_item.sort_indices()
    user_targets, item_targets = by_user.copy(), by_item.copy()
    n_per_user = np.diff(by_user.indptr)
    n_per_item = np.diff(by_item.indptr)

    rng = np.random.default_rng(seed)
    user_f = np.zeros((n_users, k))
    user_b = np.zeros(n_users)
    item_f = rng.normal(0.0, init_scale, size=(n_items, k))
    item_b = np.zeros(n_items)
    item_f[n_per_item == 0] = 0.0

    upper = np.triu_indices(k + 1)
    for _ in range(int(n_iters)):
        # Users: features [q_i, 1], target r - mu - b_i.
        user_targets.data = r_u - item_b[i_sorted]
        user_f, user_b = _solve_side(
            by_user, user_targets, item_f, n_per_user, reg, bias_reg, reg_exponent, upper
        )
        # Items: features [p_u, 1], target r - mu - b_u (in by_item's CSR order).
        item_targets.data = (r_u - user_b[u_sorted])[order_i]
        item_f, item_b = _solve_side(
            by_item, item_targets, user_f, n_per_item, reg, bias_reg, reg_exponent, upper
        )

    return BiasedMFModel(
        global_mean=mu,
        user_bias=user_b.astype(np.float32),
        item_bias=item_b.astype(np.float32),
        user_factors=user_f.astype(np.float32),
        item_factors=item_f.astype(np.float32),
    )


def _solve_side(pattern, targets, other_f, counts, reg, bias_reg, reg_exponent, upper):
    """Ridge-solve every row's ``[factors, bias]`` against the other side's ``[factors, 1]``.

    ``pattern`` is the 0/1 CSR matrix of observations (rows = the side being solved) and
    ``targets`` the same pattern holding the residual targets.
    """
    n_rows, k = targets.shape[0], other_f.shape[1]
    features = np.hstack([other_f, np.ones((other_f.shape[0], 1))])  # (n_other, k+1)
    # Gram matrices: G_u = sum_{i in I_u} y_i y_i^T, one sparse product over the upper triangle.
    outer = features[:, upper[0]] * features[:, upper[1]]  # (n_other, (k+1)(k+2)/2)
    gram_upper = pattern @ outer  # (n_rows, n_upper)
    gram = np.empty((n_rows, k + 1, k + 1))
    gram[:, upper[0], upper[1]] = gram_upper
    gram[:, upper[1], upper[0]] = gram_upper
    rhs = targets @ features  # (n_rows, k+1)
    scale = np.maximum(counts, 1).astype(np.float64) ** reg_exponent
    diag = np.arange(k + 1)
    gram[:, diag[:k], diag[:k]] += (reg * scale)[:, None]
    gram[:, k, k] += bias_reg
    # Rows with no observations (or zero penalty and a singular Gram) get an identity system
    # and a zero right-hand side: their parameters stay at zero.
    empty = counts == 0
    gram[empty] = np.eye(k + 1)
    rhs[empty] = 0.0
    try:
        solution = np.linalg.solve(gram, rhs[..., None])[..., 0]
    except np.linalg.LinAlgError:
        solution = _lstsq_rows(gram, rhs)
    return solution[:, :k], solution[:, k]


def _lstsq_rows(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Minimum-norm solutions for (near-)singular systems, e.g. ``reg = 0`` with few ratings."""
    return np.einsum("nij,nj->ni", np.linalg.pinv(gram, hermitian=True), rhs)


def _check_index(ids, size: int, name: str) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.size == 0:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"{name} must be integer indices; got dtype {arr.dtype}")
    low, high = arr.min(), arr.max()
    if low < 0 or high >= size:
        bad = low if low < 0 else high
        raise ValueError(f"{name} must lie in [0, {size}); got {bad}")
    return arr.astype(np.int64, copy=False)
