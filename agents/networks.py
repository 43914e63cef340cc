"""Flax NNX networks and the item-choice distribution of the recommender agents.

* :class:`MLP` — the torso every network uses (orthogonal init, CleanRL's gains).
* :class:`FactorisedItemHead` — scores a whole catalogue as ``query . item_embedding + item_bias``,
  the item embeddings computed from the env's *observable* item features (genres, logged CF
  embedding), optionally plus a learned per-item table. Parameters grow with the feature size,
  not with the catalogue (but for the bias and the optional table), and every item shares what is
  learned about its features.
* :class:`ActorCritic` — an actor (observation -> query -> item scores) and a separate critic
  (observation -> value).
* Slates: :func:`sample_slate` draws ``k`` distinct items from the scores (Plackett–Luce: item
  after item, each from the softmax of the scores of the items not yet drawn), and
  :func:`slate_log_prob` gives the log-probability of a slate and the entropy of the distribution.
  ``k = 1`` is the categorical policy over items.
* The agent's own memory of what it served this episode is a bitset (:func:`mark_served`,
  :func:`served_mask`), so that it can mask served items without reading the env's hidden state.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "ActorCritic",
    "FactorisedItemHead",
    "Constant",
    "greedy_slate",
    "item_log_prob",
    "mark_served",
    "sample_slate",
    "served_mask",
    "served_words",
    "slate_log_prob",
    "standardisation",
]

ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu}
"""Hidden-layer activations by config name."""

# A blocked item's score: finite (so that masked softmax terms and their gradients stay finite)
# and far enough below any reachable score that exp() underflows to exactly 0.
_BLOCKED_SCORE = -1e9
_BLOCK = 64  # items per block of the two-level sampler
_LOG_WEIGHT_FLOOR = -80.0  # exp(-80) ~ 1.8e-35: still a normal float32


class Constant(nnx.Variable):
    """Fixed data stored with the model and never trained: item features, normalisation statistics."""


def standardisation(values: jax.Array | np.ndarray, axis: int = 0, floor: float = 1e-2) -> tuple[jax.Array, jax.Array]:
    """Mean and standard deviation of ``values`` along ``axis``, for standardising them.

    Returns ``(mean, scale)``: ``(values - mean) / scale`` has mean 0 and unit variance along
    ``axis``. The scale is floored at ``floor`` so that a (nearly) constant column maps to ~0,
    not to noise.
    """
    values = jnp.asarray(values, jnp.float32)
    return values.mean(axis=axis), jnp.maximum(values.std(axis=axis), floor)


class MLP(nnx.Module):
    """A multi-layer perceptron with orthogonal initialisation.

    Args:
        in_features: Input size.
        hidden_sizes: Width of each hidden layer.
        out_features: Output size.
        activation: ``"tanh"`` or ``"relu"``.
        out_scale: Gain of the output layer's orthogonal init (CleanRL: 0.01 for policy logits,
            1 for values); hidden layers use ``sqrt(2)``.
        rngs: Parameter initialisation keys.
    """

    def __init__(self, in_features: int, hidden_sizes: Sequence[int], out_features: int, *,
                 activation: str = "tanh", out_scale: float = 1.0, rngs: nnx.Rngs):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        sizes = [in_features, *hidden_sizes]
        self.hidden = nnx.List([
            nnx.Linear(a, b, kernel_init=nnx.initializers.orthogonal(np.sqrt(2.0)), rngs=rngs)
            for a, b in zip(sizes[:-1], sizes[1:])
        ])
        self.out = nnx.Linear(sizes[-1], out_features, kernel_init=nnx.initializers.orthogonal(out_scale),
                              rngs=rngs)
        self.activation = activation

    def __call__(self, x: jax.Array) -> jax.Array:
        """``(..., in_features)`` -> ``(..., out_features)``."""
        act = ACTIVATIONS[self.activation]
        for layer in self.hidden:
            x = act(layer(x))
        return self.out(x)


class FactorisedItemHead(nnx.Module):
    """Item scores ``dot(query, e_i) + b_i`` with ``e_i = [W f_i (+ t_i), f_i]`` from item features ``f_i``.

    An item's embedding is a learned projection of its features (plus, optionally, a learned
    per-item vector) followed by the features themselves, so a query scores items both through
    learned factors and bilinearly in the features. The features are standardised over the
    catalogue first (each column to mean 0 and standard deviation 1: genre shares of ~0.1 and
    embeddings of ~1 then move the scores alike per unit of parameter change).

    Args:
        item_features: ``(n_items, n_features)`` observable item features (stored as
            :class:`Constant`, with their standardisation, not trained).
        embedding_dim: Size ``d`` of the learned part of the item embeddings; the query has
            ``d + n_features`` entries (:attr:`query_size`).
        learned_item_table: Add a learned ``(n_items, d)`` embedding table ``t`` (zero-initialised)
            to the projected features: lets the agent learn what the features do not say about an
            item, at ``n_items * d`` more parameters.
        rngs: Parameter initialisation keys.
    """

    def __init__(self, item_features: jax.Array | np.ndarray, embedding_dim: int, *,
                 learned_item_table: bool = False, rngs: nnx.Rngs):
        features = jnp.asarray(item_features, jnp.float32)
        if features.ndim != 2 or features.shape[0] < 1:
            raise ValueError(f"item_features must be (n_items, n_features), got shape {features.shape}")
        self.item_features = Constant(features)
        shift, scale = standardisation(features)
        self.feature_shift, self.feature_scale = Constant(shift), Constant(scale)
        n_items, n_features = features.shape
        self.embed = nnx.Linear(n_features, embedding_dim, kernel_init=nnx.initializers.orthogonal(1.0),
                                rngs=rngs)
        self.item_table = nnx.Param(jnp.zeros((n_items, embedding_dim))) if learned_item_table else None
        self.item_bias = nnx.Param(jnp.zeros((n_items,)))

    @property
    def n_items(self) -> int:
        """Catalogue size."""
        return self.item_features.shape[0]

    @property
    def query_size(self) -> int:
        """Length of a query: the learned embedding size plus the number of item features."""
        return self.embed.out_features + self.item_features.shape[1]

    def standardised_features(self) -> jax.Array:
        """``(n_items, n_features)`` the item features, standardised over the catalogue."""
        return (self.item_features[...] - self.feature_shift[...]) / self.feature_scale[...]

    def item_embeddings(self) -> jax.Array:
        """``(n_items, query_size)`` the embedding of every item."""
        features = self.standardised_features()
        learned = self.embed(features)
        if self.item_table is not None:
            learned = learned + self.item_table[...]
        return jnp.concatenate([learned, features], axis=-1)

    def __call__(self, query: jax.Array) -> jax.Array:
        """``(..., query_size)`` queries -> ``(..., n_items)`` scores (unnormalised log-probabilities)."""
        return query @ self.item_embeddings().T + self.item_bias[...]


class ActorCritic(nnx.Module):
    """Separate actor and critic over one observation vector, the actor scoring a catalogue.

    The actor's query has a deep part, an MLP of the observation that meets the learned item
    factors, and a wide part, an affine map of the observation that meets the item features:
    ``score_i = MLP(o) . (W f_i) + (B o + c) . f_i + b_i``. The wide part is zero-initialised and
    linear in its parameters, so from the first update the policy gradient can fit e.g. the dot
    product of the observation's logged user embedding with the items' logged embedding (a logged
    matrix-factorisation score), or the overlap of recently consumed genres with an item's genres
    (boredom), without waiting for two small factors to grow together.

    Observations are standardised with fixed statistics given at construction (e.g. measured on a
    short random rollout, see :func:`agents.a2c.observation_statistics`), stored with the model.

    Args:
        observation_size: Length of the observation vector.
        item_features: ``(n_items, n_features)`` observable item features.
        hidden_sizes: Hidden widths of the actor's and the critic's torsos.
        embedding_dim: Size of the learned item factors (and of the deep query).
        activation: ``"tanh"`` or ``"relu"``.
        learned_item_table: See :class:`FactorisedItemHead`.
        observation_shift: ``(observation_size,)`` subtracted from observations (default 0).
        observation_scale: ``(observation_size,)`` observations are divided by it (default 1).
        rngs: Parameter initialisation keys.
    """

    def __init__(self, observation_size: int, item_features: jax.Array | np.ndarray,
                 hidden_sizes: Sequence[int] = (256, 256), embedding_dim: int = 32, *,
                 activation: str = "tanh", learned_item_table: bool = False,
                 observation_shift: jax.Array | np.ndarray | None = None,
                 observation_scale: jax.Array | np.ndarray | None = None, rngs: nnx.Rngs):
        shift = np.zeros(observation_size, np.float32) if observation_shift is None else observation_shift
        scale = np.ones(observation_size, np.float32) if observation_scale is None else observation_scale
        for name, value in (("observation_shift", shift), ("observation_scale", scale)):
            if jnp.shape(value) != (observation_size,):
                raise ValueError(f"{name} must have shape ({observation_size},), got {jnp.shape(value)}")
        self.observation_shift = Constant(jnp.asarray(shift, jnp.float32))
        self.observation_scale = Constant(jnp.asarray(scale, jnp.float32))
        self.head = FactorisedItemHead(item_features, embedding_dim, learned_item_table=learned_item_table,
                                       rngs=rngs)
        n_features = self.head.query_size - embedding_dim
        self.actor = MLP(observation_size, hidden_sizes, embedding_dim, activation=activation, out_scale=0.01,
                         rngs=rngs)
        self.actor_wide = nnx.Linear(observation_size, n_features, kernel_init=nnx.initializers.zeros_init(),
                                     rngs=rngs)
        self.critic = MLP(observation_size, hidden_sizes, 1, activation=activation, out_scale=1.0, rngs=rngs)

    def normalise(self, observation: jax.Array) -> jax.Array:
        """Observations standardised with the stored statistics."""
        return (observation - self.observation_shift[...]) / self.observation_scale[...]

    def scores(self, observation: jax.Array) -> jax.Array:
        """``(..., observation_size)`` -> ``(..., n_items)`` item scores."""
        x = self.normalise(observation)
        return self.head(jnp.concatenate([self.actor(x), self.actor_wide(x)], axis=-1))

    def value(self, observation: jax.Array) -> jax.Array:
        """``(..., observation_size)`` -> ``(...)`` state values (in scaled-reward units)."""
        return self.critic(self.normalise(observation))[..., 0]

    def __call__(self, observation: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(scores, value)`` of a batch of observations."""
        x = self.normalise(observation)
        return self.head(jnp.concatenate([self.actor(x), self.actor_wide(x)], axis=-1)), self.critic(x)[..., 0]


# ------------------------------------------------------------------------------ served-item memory
def served_words(n_items: int) -> int:
    """uint32 words of a served-items bitset over ``n_items`` items."""
    return (n_items + 31) // 32


def mark_served(served: jax.Array, items: jax.Array) -> jax.Array:
    """Add ``items`` to the bitsets ``served``.

    Args:
        served: ``(..., served_words(n_items))`` uint32 bitsets (item ``i`` is bit ``i % 32`` of
            word ``i // 32``).
        items: ``(..., k)`` int item ids to add.

    Returns:
        The updated bitsets (a new array).
    """
    items = items.astype(jnp.uint32)
    bits = jnp.left_shift(jnp.uint32(1), items & 31)                       # (..., k)
    words = items >> 5
    onehot = words[..., None] == jnp.arange(served.shape[-1], dtype=jnp.uint32)  # (..., k, W)
    add = jnp.where(onehot, bits[..., None], jnp.uint32(0))
    return served | jax.lax.reduce(add, jnp.uint32(0), jax.lax.bitwise_or, (add.ndim - 2,))


def served_mask(served: jax.Array, n_items: int) -> jax.Array:
    """``(..., n_items)`` bool: the bitsets ``served`` unpacked."""
    # Shifts and a reshape, no gather: XLA fuses this into every consumer, and a fused gather
    # per consumer costs ~10x the whole loss on CPU.
    bits = (served[..., :, None] >> jnp.arange(32, dtype=jnp.uint32)) & 1
    return bits.reshape(*served.shape[:-1], served.shape[-1] * 32)[..., :n_items].astype(bool)


# ------------------------------------------------------------------------------ Plackett–Luce slates
def _unblock_if_exhausted(blocked: jax.Array, slate_size: int) -> jax.Array:
    """Rows with fewer than ``slate_size`` allowed items start over with every item allowed."""
    exhausted = jnp.sum(~blocked, axis=-1, keepdims=True) < slate_size
    return blocked & ~exhausted


def greedy_slate(scores: jax.Array, blocked: jax.Array, slate_size: int) -> jax.Array:
    """The mode of the Plackett–Luce policy: the ``slate_size`` best allowed items, best first.

    Args:
        scores: ``(B, n_items)`` float scores.
        blocked: ``(B, n_items)`` bool, as for :func:`sample_slate`.
        slate_size: ``k`` (static).

    Returns:
        ``(B, k)`` int32 item ids.
    """
    blocked = _unblock_if_exhausted(blocked, slate_size)
    return jax.lax.top_k(jnp.where(blocked, -jnp.inf, scores), slate_size)[1].astype(jnp.int32)


def _shifted_scores(scores: jax.Array, blocked: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(shifted, weights)``: scores minus the row's best allowed score, floored at
    :data:`_LOG_WEIGHT_FLOOR`, and their exponentials (0 for blocked items).

    The floor keeps every allowed item's weight a normal float32 number, so the mass left after
    any draw is positive; it changes only probabilities below ``exp(-80)`` of the best item's.
    Blocked items get the floor *before* the exponential: a blocked item may score far above the
    best allowed one, and ``where(blocked, 0, exp(inf))`` is 0 forwards but NaN backwards.
    """
    best = jax.lax.stop_gradient(jnp.max(jnp.where(blocked, -jnp.inf, scores), axis=-1, keepdims=True))
    shifted = jnp.where(blocked, _LOG_WEIGHT_FLOOR, jnp.maximum(scores - best, _LOG_WEIGHT_FLOOR))
    return shifted, jnp.where(blocked, 0.0, jnp.exp(shifted))


def sample_slate(key: jax.Array, scores: jax.Array, blocked: jax.Array, slate_size: int) -> jax.Array:
    """Draw ``slate_size`` distinct items per row from the Plackett–Luce distribution of ``scores``.

    Item ``j`` of the slate is drawn from ``softmax(scores)`` restricted to the items neither
    blocked nor drawn before. The draw is an inverse-CDF search in two levels (blocks of 64
    items, then items within the chosen block): one exponential per item and a sum over the
    catalogue per slate position, instead of a random number per item (Gumbel top-k) or a full
    cumulative sum per position.

    Args:
        key: A JAX key for the whole batch, or ``(B,)`` keys, one per row (a row's draw then
            depends only on its own key: the same whatever the batch it is part of).
        scores: ``(B, n_items)`` float scores.
        blocked: ``(B, n_items)`` bool, items that must not be drawn (if fewer than
            ``slate_size`` items are allowed in a row, that row ignores ``blocked``).
        slate_size: ``k`` (static), ``1 <= k <= n_items``.

    Returns:
        ``(B, k)`` int32 item ids, distinct within each row.
    """
    batch, n_items = scores.shape
    if not 1 <= slate_size <= n_items:
        raise ValueError(f"slate_size must lie in [1, n_items={n_items}], got {slate_size}")
    blocked = _unblock_if_exhausted(blocked, slate_size)
    _, weights = _shifted_scores(scores, blocked)
    n_blocks = -(-n_items // _BLOCK)
    padded = jnp.pad(weights, ((0, 0), (0, n_blocks * _BLOCK - n_items))).reshape(batch, n_blocks, _BLOCK)
    item_ids = jnp.arange(n_blocks * _BLOCK, dtype=jnp.int32).reshape(n_blocks, _BLOCK)
    tiny = float(np.finfo(np.float32).tiny)
    if jnp.ndim(key) == 0:
        uniforms = jax.random.uniform(key, (batch, slate_size), minval=tiny)
    else:
        uniforms = jax.vmap(lambda row_key: jax.random.uniform(row_key, (slate_size,), minval=tiny))(key)
    rows = jnp.arange(batch)
    prefix_blocks = jnp.tril(jnp.ones((n_blocks, n_blocks), jnp.float32)).T  # cumulative sums as matmuls
    prefix_items = jnp.tril(jnp.ones((_BLOCK, _BLOCK), jnp.float32)).T
    items: list[jax.Array] = []
    for j in range(slate_size):
        remaining = padded
        for drawn in items:  # (compares fused into the sum below: no copy of the weights)
            remaining = jnp.where(item_ids == drawn[:, None, None], 0.0, remaining)
        block_mass = remaining.sum(axis=-1)                                # (B, n_blocks)
        cumulative = block_mass @ prefix_blocks
        target = uniforms[:, j] * cumulative[:, -1]
        block = _first_reaching(cumulative, target, block_mass > 0)
        before = cumulative[rows, block] - block_mass[rows, block]
        inside = remaining[rows, block]                                    # (B, 64)
        offset = _first_reaching(inside @ prefix_items, target - before, inside > 0)
        items.append((block * _BLOCK + offset).astype(jnp.int32))
    return jnp.stack(items, axis=-1)


def _first_reaching(cumulative: jax.Array, target: jax.Array, positive: jax.Array) -> jax.Array:
    """Per row, the first slot whose cumulative mass reaches ``target`` among slots of positive mass.

    Restricting to ``positive`` slots makes rounding harmless: the pick always has positive mass
    (if rounding puts ``target`` past the last cumulative value, the last positive slot is taken).
    """
    reached = (cumulative >= target[:, None]) & positive
    first = jnp.argmax(reached, axis=-1)
    last_positive = positive.shape[-1] - 1 - jnp.argmax(positive[:, ::-1], axis=-1)
    return jnp.where(reached.any(axis=-1), first, last_positive)


def slate_log_prob(scores: jax.Array, blocked: jax.Array, slates: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Log-probability of each slate under :func:`sample_slate`, and the policy's entropy.

    Args:
        scores: ``(B, n_items)`` float scores.
        blocked: ``(B, n_items)`` bool, as given to :func:`sample_slate`.
        slates: ``(B, k)`` int item ids.

    Returns:
        ``(log_prob, entropy)``, each ``(B,)``: ``log_prob = sum_j log p(slate_j | slate_<j)``;
        ``entropy = sum_j H(position j | slate_<j)``, the chain rule's estimate of the slate
        distribution's entropy (its expectation over slates is the exact entropy; for ``k = 1`` it
        is the exact categorical entropy). Both are differentiable in ``scores``.
    """
    slate_size = slates.shape[-1]
    blocked = _unblock_if_exhausted(blocked, slate_size)
    shifted, weights = _shifted_scores(scores, blocked)
    item_ids = jnp.arange(scores.shape[-1], dtype=slates.dtype)
    log_prob = jnp.zeros(scores.shape[0])
    entropy = jnp.zeros(scores.shape[0])
    for j in range(slate_size):
        drawn_before = jnp.zeros(scores.shape, bool)
        for earlier in range(j):  # (compares fused into the sums: no scatter, no copy)
            drawn_before = drawn_before | (item_ids == slates[:, earlier:earlier + 1])
        remaining = jnp.where(drawn_before, 0.0, weights)
        # Relative to the best remaining item (constant for the gradient, >= exp(-80) > 0), the
        # weights lie in (0, 1] with a sum >= 1: no 1 / mass**2 underflow in the gradients even
        # when the items drawn before held all but exp(-80) of the mass.
        top = jax.lax.stop_gradient(jnp.max(remaining, axis=-1, keepdims=True))
        relative = remaining / top
        mass = jnp.sum(relative, axis=-1)
        log_mass = jnp.log(mass) + jnp.log(top[:, 0])
        chosen = jnp.take_along_axis(shifted, slates[:, j:j + 1], axis=-1)[:, 0]
        log_prob = log_prob + chosen - log_mass
        entropy = entropy + log_mass - jnp.sum(relative * shifted, axis=-1) / mass
    return log_prob, entropy


def _item_terms(scores: jax.Array, blocked: jax.Array, items: jax.Array):
    """Values and backward-pass residuals of :func:`item_log_prob`, in two passes over the scores.

    :func:`slate_log_prob`'s arithmetic for ``k = 1``, minus its normalisation by the best
    remaining weight: that weight is ``exp(0) = 1`` exactly for one item (the best allowed item's
    shifted score is 0), so dividing by it and adding its log change nothing.
    """
    exhausted = jnp.all(blocked, axis=-1, keepdims=True)       # _unblock_if_exhausted(blocked, 1)
    best = jnp.where(exhausted, jnp.max(scores, axis=-1, keepdims=True),
                     jnp.max(jnp.where(blocked, -jnp.inf, scores), axis=-1, keepdims=True))
    allowed = ~blocked | exhausted
    shifted = jnp.where(allowed, jnp.maximum(scores - best, _LOG_WEIGHT_FLOOR), _LOG_WEIGHT_FLOOR)
    weights = jnp.where(allowed, jnp.exp(shifted), 0.0)
    mass = jnp.sum(weights, axis=-1)
    mean_shifted = jnp.sum(weights * shifted, axis=-1) / mass  # E_p[s]
    log_mass = jnp.log(mass)
    log_prob = jnp.take_along_axis(shifted, items, axis=-1)[:, 0] - log_mass
    entropy = log_mass - mean_shifted
    return (log_prob, entropy), (scores, blocked, exhausted, items, best, log_mass, mean_shifted)


@jax.custom_vjp
def item_log_prob(scores: jax.Array, blocked: jax.Array, items: jax.Array) -> tuple[jax.Array, jax.Array]:
    """:func:`slate_log_prob` for slates of one item, in fewer passes, with a closed-form gradient.

    The same values as ``slate_log_prob(scores, blocked, items)`` (up to rounding), and the same
    gradient with respect to ``scores``, in closed form instead of by differentiating the
    masked, floored softmax step by step: with ``p`` the policy over the allowed items, ``s`` the
    shifted scores and ``a`` the item drawn,

        d log_prob / d score_i = g_i (1[i = a] - p_i),    d entropy / d score_i = -g_i p_i (s_i - E_p[s]),

    where ``g_i`` is 1 for an allowed item above the floor and 0 otherwise (as the floor and the
    mask give it). Two passes over the scores forward and one backward; the tests hold values and
    gradient to :func:`slate_log_prob`'s.

    Args:
        scores: ``(B, n_items)`` float scores.
        blocked: ``(B, n_items)`` bool, as for :func:`sample_slate`.
        items: ``(B, 1)`` int item ids.

    Returns:
        ``(log_prob, entropy)``, each ``(B,)``, as :func:`slate_log_prob`.
    """
    return _item_terms(scores, blocked, items)[0]


_item_log_prob_forward = _item_terms


def _item_log_prob_backward(residuals, cotangents):
    scores, blocked, exhausted, items, best, log_mass, mean_shifted = residuals
    d_log_prob, d_entropy = cotangents
    raw = scores - best
    shifted = jnp.maximum(raw, _LOG_WEIGHT_FLOOR)
    probability = jnp.exp(shifted - log_mass[:, None])
    chosen = jnp.arange(scores.shape[-1], dtype=items.dtype) == items
    d_scores = (d_log_prob[:, None] * (chosen - probability)
                - d_entropy[:, None] * probability * (shifted - mean_shifted[:, None]))
    moves = ~(blocked & ~exhausted) & (raw > _LOG_WEIGHT_FLOOR)  # allowed and above the floor
    return jnp.where(moves, d_scores, 0.0), None, None


item_log_prob.defvjp(_item_log_prob_forward, _item_log_prob_backward)
