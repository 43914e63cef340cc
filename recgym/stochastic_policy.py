"""Stochastic policies that know the probability of every action they take (propensities).

Off-policy evaluation and offline RL need logs of a *stochastic* policy together with the
probability with which it chose each logged action — the propensity. :class:`StochasticPolicy`
turns any :class:`~recgym.policies.ScoringPolicy` (a baseline, a classical recommender, a trained
agent that scores items) into such a policy, and answers the reverse question as well: how likely
it would have been to take a given action (:meth:`StochasticPolicy.action_probabilities`), which
is what an importance-sampling estimator asks of a *target* policy (:mod:`recgym.ope`).

**The distribution.** For one item per step, with ``s`` the wrapped policy's scores over the
items it may serve now (``A``: finite scores, items not yet served this episode when the wrapped
policy excludes them, or the ``K`` candidates in candidate mode),

.. math::

    \\pi(a \\mid x) = (1 - \\varepsilon)\\,\\operatorname{softmax}(s / T)_a
                     + \\varepsilon / |A|, \\qquad a \\in A,

a Boltzmann policy at temperature ``T`` with an ``epsilon``-uniform floor. ``T = 0`` puts the
softmax mass on the best item (ties to the lowest id), so ``T = 0`` is epsilon-greedy, and
``T = 0, epsilon = 0`` reproduces the wrapped policy's deterministic choice exactly (probability 1
for its action, 0 for any other).

**Slates** (``slate_size = k``) are drawn position by position without replacement, each position
from the same mixture renormalised over the items still available, so that

.. math::

    \\pi(a_1, \\dots, a_k \\mid x) = \\prod_{j=1}^{k} \\pi_j(a_j \\mid x, a_{<j}),

the Plackett–Luce model of the softmax scores with the epsilon floor applied at every position.
Why this design: the probability of any ordered slate is exact and cheap (a product of ``k``
factors, each reported in :attr:`StochasticPolicy.position_propensities`), sampling costs ``k``
draws, it reduces to the single-item rule for ``k = 1``, and with ``epsilon > 0`` every ordered
slate of servable items has positive probability — the support condition importance sampling
needs. The alternative of independent per-position draws would serve duplicate items (which the
environment rejects), and marginal item-position probabilities of Plackett–Luce have no closed
form. The price: whole-slate propensities are products of small numbers, so slate-level
importance weights have a high variance (see :doc:`/logged_data`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from recgym.policies import ScoringPolicy

__all__ = ["StochasticPolicy", "choice_distribution"]


def choice_distribution(
    scores: np.ndarray, available: np.ndarray, temperature: float, epsilon: float
) -> np.ndarray:
    """Per-row probabilities of the softmax / epsilon-uniform mixture over the available items.

    Args:
        scores: ``(n, m)`` float scores; only entries where ``available`` is true are read (and
            must be finite there).
        available: ``(n, m)`` bool, at least one true entry per row.
        temperature: Softmax temperature ``T >= 0`` (``0``: all softmax mass on the best
            available item, ties to the lowest index).
        epsilon: Uniform-exploration weight in ``[0, 1]``.

    Returns:
        ``(n, m)`` float64 probabilities, each row summing to 1, zero where not available.
    """
    s = np.asarray(scores, dtype=np.float64)
    allowed = np.asarray(available, dtype=bool)
    n_allowed = allowed.sum(axis=1, keepdims=True)
    if (n_allowed == 0).any():
        raise ValueError("every row needs at least one available item")
    if temperature > 0:
        logits = np.where(allowed, s / temperature, -np.inf)
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        softmax = weights / weights.sum(axis=1, keepdims=True)
    else:
        best = np.argmax(np.where(allowed, s, -np.inf), axis=1)
        softmax = np.zeros_like(s)
        softmax[np.arange(len(s)), best] = 1.0
    return (1.0 - epsilon) * softmax + epsilon * (allowed / n_allowed)


class StochasticPolicy(ScoringPolicy):
    """A softmax / epsilon-greedy version of a scoring policy that reports its propensities.

    Every step it asks the wrapped policy for its scores (so a recommender still folds in the
    episode's feedback), masks them exactly as :class:`~recgym.policies.ScoringPolicy` does
    (served items, candidate mode), and draws the action from :func:`choice_distribution`,
    position by position for slates (see the module docstring for the model and why).

    Args:
        base: The scoring policy whose scores are used (its ``n_items``, ``slate_size`` and
            ``exclude_served`` are adopted). Its own top-``k`` choice is never called.
        temperature: Softmax temperature in score units, finite and ``>= 0``; ``0`` is greedy.
        epsilon: Probability mass spread uniformly over the servable items, in ``[0, 1]``.
        name: Display name (default: derived from the base policy's name and the settings).

    Attributes:
        propensities: ``(num_envs,)`` probability of the last actions (whole slates), set by
            every :meth:`act_batch` and :meth:`action_probabilities`.
        position_propensities: ``(num_envs, k)`` the per-position factors of
            :attr:`propensities` (``k = 1`` for single items).

    Example:
        >>> import numpy as np
        >>> from recgym.policies import MostPopularPolicy
        >>> base = MostPopularPolicy(np.array([5.0, 1.0, 3.0]))
        >>> policy = StochasticPolicy(base, temperature=1.0, epsilon=0.1)
        >>> policy.reset(num_envs=2, seed=0)
        >>> actions, propensities = policy.act_with_propensities(np.zeros((2, 1)), {})
        >>> actions.shape, bool(np.all((propensities > 0) & (propensities <= 1)))
        ((2,), True)
    """

    def __init__(
        self,
        base: ScoringPolicy,
        temperature: float = 1.0,
        epsilon: float = 0.0,
        name: str | None = None,
    ) -> None:
        if not isinstance(base, ScoringPolicy):
            raise TypeError(
                f"base must be a recgym ScoringPolicy (it scores items), got {type(base).__name__}"
            )
        if isinstance(temperature, bool) or not np.isfinite(temperature) or temperature < 0:
            raise ValueError(f"temperature must be finite and >= 0, got {temperature!r}")
        if isinstance(epsilon, bool) or not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must lie in [0, 1], got {epsilon!r}")
        super().__init__(base.n_items, base.slate_size, base.exclude_served)
        self.base = base
        self.temperature = float(temperature)
        self.epsilon = float(epsilon)
        self.name = name or f"{base.name} (T={self.temperature:g}, eps={self.epsilon:g})"
        k = 1 if self.slate_size is None else self.slate_size
        self.propensities = np.ones(1)
        self.position_propensities = np.ones((1, k))
        self._forced: np.ndarray | None = None

    def reset(self, num_envs: int = 1, seed: int | None = None) -> None:
        """See :meth:`~recgym.policies.Policy.reset`; the wrapped policy and the sampling
        generator get independent seeds derived from ``seed``."""
        if seed is None:
            self.base.reset(num_envs, None)
            super().reset(num_envs, None)
            return
        base_seed, own_seed = np.random.SeedSequence(seed).spawn(2)
        self.base.reset(num_envs, int(base_seed.generate_state(1)[0]))
        super().reset(num_envs, None)
        self.rng = np.random.default_rng(own_seed)

    def begin_episode(self, env_mask: np.ndarray) -> None:
        """Forget the served items of the envs starting a new episode, here and in the base."""
        super().begin_episode(env_mask)
        self.base.begin_episode(env_mask)

    def scores(self, observations: np.ndarray, infos: Mapping[str, Any]) -> np.ndarray:
        """The wrapped policy's scores (it observes ``infos`` as if it were acting itself)."""
        return self.base.scores(observations, infos)

    def select(self, scores: np.ndarray, k: int) -> np.ndarray:
        """Draw ``k`` distinct items per env (or take the forced ones) and record propensities.

        Args:
            scores: ``(num_envs, n_choices)`` masked scores (``-inf``: not servable).
            k: Items per action.

        Returns:
            ``(num_envs, k)`` int64 column indices into ``scores``.
        """
        s = np.asarray(scores, dtype=np.float64)
        n, m = s.shape
        rows = np.arange(n)
        chosen = np.zeros((n, m), dtype=bool)
        picks = np.empty((n, k), dtype=np.int64)
        factors = np.empty((n, k))
        finite_scores = np.where(np.isfinite(s), s, 0.0)
        if self._forced is not None and (self._forced.min() < 0 or self._forced.max() >= m):
            raise ValueError(f"actions must lie in [0, {m}), got {self._forced.tolist()}")
        for position in range(k):
            finite = np.isfinite(s) & ~chosen
            # a row without a finite score left serves any item not yet in the slate
            available = np.where(finite.any(axis=1, keepdims=True), finite, ~chosen)
            probs = choice_distribution(finite_scores, available, self.temperature, self.epsilon)
            if self._forced is not None:
                pick = self._forced[:, position]
            else:
                cumulative = np.cumsum(probs, axis=1)
                draw = self.rng.random(n) * cumulative[:, -1]
                pick = np.argmax(cumulative > draw[:, None], axis=1)
            picks[:, position] = pick
            factors[:, position] = probs[rows, pick]
            chosen[rows, pick] = True
        self.position_propensities = factors
        self.propensities = factors.prod(axis=1)
        return picks

    def act_with_propensities(
        self, observations: np.ndarray, infos: Mapping[str, Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw actions and return them with their probabilities.

        Args:
            observations: ``(num_envs, ...)`` batched observations.
            infos: Batched info dict (see :meth:`~recgym.policies.Policy.act_batch`).

        Returns:
            ``(actions, propensities)``: ``(num_envs,)`` or ``(num_envs, k)`` int64 actions (in
            the env's action space: item ids, or candidate positions in candidate mode) and
            ``(num_envs,)`` float64 probabilities of the whole action.
        """
        actions = self.act_batch(observations, infos)
        return actions, self.propensities.copy()

    def action_probabilities(
        self, observations: np.ndarray, infos: Mapping[str, Any], actions: np.ndarray
    ) -> np.ndarray:
        """The probability this policy gives to ``actions`` now, then remember them as served.

        This replays a logged step: the policy sees what the logging policy saw and its memory
        advances with the *logged* actions (what the user was actually served), so that a
        sequence of calls over a logged episode gives the target probabilities an
        importance-sampling estimator needs.

        Args:
            observations: ``(num_envs, ...)`` batched observations.
            infos: Batched info dict.
            actions: ``(num_envs,)`` or ``(num_envs, k)`` actions in the env's action space.

        Returns:
            ``(num_envs,)`` float64 probabilities (0 for an action this policy never takes now).
        """
        k = 1 if self.slate_size is None else self.slate_size
        forced = np.asarray(actions, dtype=np.int64).reshape(self.num_envs, -1)
        if forced.shape[1] != k:
            raise ValueError(
                f"actions must have shape ({self.num_envs},) or ({self.num_envs}, {k}) for "
                f"slate_size={self.slate_size}, got {np.shape(actions)}"
            )
        self._forced = forced
        try:
            self.act_batch(observations, infos)
        finally:
            self._forced = None
        return self.propensities.copy()
