"""A privileged model-predictive planner for RecGym-MovieLens: the ceiling of its policies table.

:class:`PlannerPolicy` reads the users' hidden state through a
:class:`~recgym.envs.movielens.MovieLensAccess` and plans with the simulator's own pure core
(:class:`~recgym.envs.movielens.MovieLensCore`): at every step it judges a few options (items,
or slates) by rolling the true dynamics forward under a base policy (by default to the end of
the session), with noise drawn from its *own* seeded keys, and serves the best. It is a research
instrument, like oracle-greedy: it knows the user model exactly, which no recommender does, so
its return bounds what a recommender (or a trained agent) could reach from the same world. It is
an upper bound in that sense, not an optimum: it improves on one base policy, over a few options
and noise samples, so a cleverer planner could earn more.

The value of serving option ``o`` now is its simulated return

    Q(o) = mean over samples of (r_1 + r_2 + ... + r_H)

where ``r_1`` is the simulated reward of serving ``o`` (the user's click and rating; for a slate,
of the item the user chooses from it, as the env does) and ``r_2 .. r_H`` those of the next
steps simulated by the core, the base policy choosing (0 once the simulated user leaves). With
``horizon=None`` (the default) the rollouts run until the simulated user leaves or the episode
reaches its time limit: this is Bertsekas' *rollout algorithm*. Each ``Q`` is then an unbiased
estimate of the return of "``o`` now, the base policy after", and serving the option of highest
``Q`` improves on the base policy when the estimates are exact (with noisy ones, up to their
noise: see ``confidence``). A finite horizon ``H`` values
nothing beyond step ``H``: an option that earns more now and costs session budget later (the
user leaves sooner) then looks better than it is, which put the slate planner 1% *below* its
base policy at ``H = 20`` (docs/environments/movielens_results.md). A one-step horizon serves
oracle-greedy's choice (the highest current true utility; nothing is simulated). The planner
serves the base policy's option unless another one's gain is confirmed on fresh samples by
``confidence`` standard errors: the simulated futures are noisy, and the option that looks best
on a few samples is mostly the one whose noise flattered it.

Two things keep it cheap enough to run over every held-out user (docs/metrics_and_policies.md,
docs/environments/movielens_results.md for the measured cost):

* The simulated users live in a *local world*: the env's world restricted to the one user and
  a shortlist of items (the candidates, then the base policy's current top items). The core's
  own functions run unchanged on it (:func:`~recgym.envs.movielens.true_utilities`,
  ``boredom_cost``, ``MovieLensCore.transition``), on ``shortlist`` items instead of the whole
  catalogue; only the base policy's choices in the rollouts are restricted to the shortlist.
* One jitted function plans for a batch of envs, every option and every noise sample at once
  (``vmap``); the rollout is a ``lax.while_loop`` that stops as soon as every simulated user of
  the batch has left (or the horizon or time limit is reached), so its cost follows the
  remaining sessions, not the time limit. It is traced once per settings and batch shape, and
  envs whose episode is no longer scored are not planned.

The planner never sees the env's future noise: its rollouts draw their own from keys seeded by
the policy's generator (:meth:`~recgym.policies.Policy.reset`). A planner that knew the
realised noise (the env's key chain) would know which item the user will click and how they
will rate it, and would be no fair ceiling for a policy that must act under that uncertainty.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from recgym.core import as_jax, is_int, require
from recgym.envs.movielens.dynamics import MovieLensCore, boredom_cost, true_utilities
from recgym.envs.movielens.params import MovieLensParams, MovieLensState, WorldArrays
from recgym.policies import Policy, PrivilegedAccess, top_k_items

__all__ = ["BASE_POLICIES", "PlannerConfig", "PlannerPolicy"]

BASE_POLICIES: tuple[str, ...] = ("boredom-aware", "oracle-greedy")
"""Base policies the rollouts can follow (the baselines of :mod:`recgym.policies` of that name)."""

# Envs planned per jitted call: the active envs go in calls of this fixed size (the last padded),
# so the planner traces once yet works in proportion to the envs still being scored. Small,
# because a call's rollouts run until the longest simulated session of the call has ended: 8
# envs per call cost less than 32 on ml-latest-small slates (same plans; the measurements are in
# docs/metrics_and_policies.md, "Cost").
_ENVS_PER_CALL = 8
_CORE = MovieLensCore()  # stateless: every planner simulates with it


@dataclass(frozen=True)
class PlannerConfig:
    """Settings of :class:`PlannerPolicy`.

    The defaults come from the measurements on docs/environments/movielens_results.md (610
    paired held-out episodes of ml-latest-small): rollouts to the end of the session are what
    make the planner match or beat its base policy with slates of 5 (a 20-step horizon fell 1.2%
    below it), and a 64-item shortlist earned no more than 32 items (on 128 slate episodes) at
    about twice the cost.

    Attributes:
        horizon: Steps each candidate is judged over: ``None`` (default), until the simulated
            user leaves or the episode reaches its time limit (the rollout algorithm, which
            improves on its base policy); ``H >= 1``, the step it is served, then ``H - 1``
            simulated steps of the base policy, nothing valued beyond. ``H = 1`` is
            oracle-greedy.
        candidates: ``M >= 1``, the items of highest current true utility, considered for every
            slot (raised to the slate size for slates).
        base_candidates: ``>= 1`` further candidates from the base policy's current ranking
            (raised to the slate size for slates): its own choice (its best item, or slate, that
            is not already a candidate), then its best items of genres (an item's genre: its
            first genre of highest weight) the candidates do not cover yet, or its next-best
            items when the shortlist holds no new genre.
        samples: ``>= 1``, simulated futures per candidate. Every candidate is judged on the same
            noise samples (common random numbers), so their differences are more precise than
            their values.
        shortlist: ``L``, the items the rollouts' base policy chooses from: the candidates, then
            the base policy's current top items. At least ``candidates + base_candidates``.
        base_policy: What the simulated user is served after the candidate: ``"boredom-aware"``
            (current utility minus ``boredom_weight`` times the boredom cost, as
            :class:`~recgym.policies.BoredomAwarePolicy`) or ``"oracle-greedy"``.
        boredom_weight: ``>= 0``, the boredom-aware base policy's weight (rating points per step
            of session budget).
        confidence: ``>= 0``, how sure the planner must be to leave the base policy's choice: it
            serves another candidate only when that candidate's estimated advantage exceeds
            ``confidence`` standard errors of the paired differences (0: the best estimate,
            however noisy; needs ``samples >= 2`` when positive).
    """

    horizon: int | None = None
    candidates: int = 4
    base_candidates: int = 2
    samples: int = 8
    shortlist: int = 32
    base_policy: str = "boredom-aware"
    boredom_weight: float = 1.0
    confidence: float = 2.0

    def __post_init__(self) -> None:
        if self.horizon is not None:
            require(lambda v: is_int(v) and v >= 1, "PlannerConfig.horizon", self.horizon,
                    "an integer >= 1 or None (to the end of the episode)")
        for name, minimum in (("candidates", 1), ("base_candidates", 1), ("samples", 1), ("shortlist", 1)):
            require(lambda v, m=minimum: is_int(v) and v >= m, f"PlannerConfig.{name}",
                    getattr(self, name), f"an integer >= {minimum}")
        n_candidates = self.candidates + self.base_candidates
        require(lambda v: v >= n_candidates, "PlannerConfig.shortlist", self.shortlist,
                f">= candidates + base_candidates = {n_candidates}")
        require(lambda v: v in BASE_POLICIES, "PlannerConfig.base_policy", self.base_policy,
                f"one of {BASE_POLICIES}")
        for name in ("boredom_weight", "confidence"):
            require(lambda v: isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v) and v >= 0,
                    f"PlannerConfig.{name}", getattr(self, name), ">= 0 and finite")
        if self.confidence > 0:
            require(lambda v: v >= 2, "PlannerConfig.samples", self.samples,
                    f">= 2 when confidence > 0 (a standard error needs two samples; confidence={self.confidence})")


class PlannerPolicy(Policy):
    """Privileged model-predictive planner: serve the candidate whose simulated future is best.

    See the module docstring for what it maximises. Each step it reads, through ``access`` only,
    which envs are still scored (:meth:`~recgym.envs.movielens.MovieLensAccess.active`), the
    current true utilities (and, for the boredom-aware base policy, the boredom costs) to pick
    the candidates and the shortlist, and the hidden state
    (:meth:`~recgym.envs.movielens.MovieLensAccess.hidden_state`) to start its rollouts from;
    the world and the coefficients come from ``access.params``. Observations and ``info`` are
    not used.

    Args:
        access: Privileged read access to the env(s) the policy acts in: a
            :class:`~recgym.envs.movielens.MovieLensAccess` (``params``, ``active()``,
            ``true_utilities()``, ``boredom_cost()``, ``hidden_state()``).
        config: The planner's settings (default :class:`PlannerConfig`).
        slate_size: ``None`` for single items (``(n,)`` item ids), ``k`` for slates (``(n, k)``);
            must agree with the env's ``slate_size``.

    Attributes:
        trace_count: How many times this policy's calls traced (compiled) the planning function:
            at most once per ``num_envs``, however many steps; 0 when a planner with the same
            settings and shapes compiled it first (the compilation is shared).

    Raises:
        ValueError: The env runs in candidate mode or rewards clicks (the planner plans over the
            whole catalogue, in rating units), the slate size disagrees with the env's, or the
            config does not fit the catalogue or the slate.
    """

    name = "planner"

    def __init__(self, access: PrivilegedAccess, config: PlannerConfig | None = None,
                 slate_size: int | None = None) -> None:
        super().__init__()
        config = PlannerConfig() if config is None else config
        params: MovieLensParams = access.params
        k = 1 if slate_size is None else int(slate_size)
        if params.slate_size != k:
            raise ValueError(f"slate_size={slate_size} does not match the env's slate_size={params.slate_size}")
        if params.n_candidates:
            raise ValueError(f"the planner plans over the whole catalogue: candidate mode "
                             f"(n_candidates={params.n_candidates}) is not supported")
        if params.reward_type != "rating":
            raise ValueError(f"the planner maximises ratings: reward_type={params.reward_type!r} is not supported")
        # a slate needs oracle-greedy's slate (a one-step horizon serves it) and the base policy's
        self._n_top, self._n_base = max(config.candidates, k), max(config.base_candidates, k)
        require(lambda v: v >= self._n_top + self._n_base, "PlannerConfig.shortlist", config.shortlist,
                f">= {self._n_top + self._n_base}, the candidates of slates of {k} "
                f"(candidates and base_candidates are raised to the slate size)")
        require(lambda v: v <= params.n_items, "PlannerConfig.shortlist", config.shortlist,
                f"<= the catalogue size n_items={params.n_items}")
        self.access = access
        self.config = config
        self.slate_size = slate_size
        self.trace_count = 0
        self._slots = k
        self._params = as_jax(params)
        # an item's genre for the diversity of the candidates: its first genre of highest weight
        self._main_genre = np.argmax(np.asarray(params.world.item_genres), axis=1)
        self._n_genres = int(params.n_genres)
        self._rollouts = _Rollouts(config, k, self._n_top, self._n_base)

    def act_batch(self, observations: np.ndarray, infos: Mapping[str, Any]) -> np.ndarray:
        """Plan for every active env; see :meth:`Policy.act_batch`.

        Envs the access reports inactive (their episode has ended and is no longer scored) are
        served items ``0 .. k-1`` without planning.
        """
        active = np.asarray(self.access.active(), dtype=bool)
        if active.shape != (self.num_envs,):
            raise ValueError(f"the access answers for {active.size} envs, the policy acts for "
                             f"num_envs={self.num_envs}")
        items = np.broadcast_to(np.arange(self._slots), (self.num_envs, self._slots)).copy()
        # one seed per step, drawn whatever is active: an env's noise depends on the step and the env only
        seed = self.rng.integers(0, 2**32, dtype=np.uint32)
        rows = np.flatnonzero(active)
        if rows.size:
            utilities = np.asarray(self.access.true_utilities())[rows]
            base = utilities
            if self.config.base_policy == "boredom-aware":
                base = utilities - self.config.boredom_weight * np.asarray(self.access.boredom_cost())[rows]
            shortlist = self._shortlist(utilities, base)
            immediate = np.take_along_axis(utilities, shortlist[:, :self._n_top + self._n_base], axis=1)
            state = self.access.hidden_state()
            size = min(_ENVS_PER_CALL, self.num_envs)
            padded = np.resize(np.arange(rows.size), -(-rows.size // size) * size)
            for chunk in padded.reshape(-1, size):
                traced = _TRACES[0]
                picks = np.asarray(_plan(
                    self._rollouts, self._params, state, jnp.asarray(rows[chunk], jnp.int32),
                    jnp.asarray(shortlist[chunk], jnp.int32), jnp.asarray(immediate[chunk], jnp.float32), seed))
                self.trace_count += _TRACES[0] - traced
                items[rows[chunk]] = np.take_along_axis(shortlist[chunk], picks, axis=1)
        return items[:, 0] if self.slate_size is None else items

    # ------------------------------------------------------------------ host side: what to plan over
    def _shortlist(self, utilities: np.ndarray, base: np.ndarray) -> np.ndarray:
        """``(n, L)`` item ids: the top candidates, the base candidates, then the base ranking.

        The first ``candidates`` columns are oracle-greedy's ranking (:func:`top_k_items`, the
        same tie-breaking), so a one-step horizon serves oracle-greedy's items.
        """
        top = top_k_items(utilities, self._n_top)
        n_rest = self.config.shortlist - self._n_top
        others = base.astype(np.float64)                               # the base ranking without `top`
        np.put_along_axis(others, top, -np.inf, axis=1)
        rest = np.argpartition(-others, n_rest - 1, axis=1)[:, :n_rest]
        rest = np.take_along_axis(rest, np.argsort(-np.take_along_axis(others, rest, axis=1), axis=1,
                                                   kind="stable"), axis=1)
        return np.concatenate([top, self._base_candidates_first(top, rest)], axis=1)

    def _base_candidates_first(self, top: np.ndarray, rest: np.ndarray) -> np.ndarray:
        """``rest`` (base ranking order) with the base candidates moved to its first columns."""
        n_pick, k = self._n_base, self._slots
        if n_pick <= k:
            return rest  # the base policy's own choice is already first
        rows = np.arange(len(rest))
        genres = self._main_genre[rest]
        covered = np.zeros((len(rest), self._n_genres), dtype=bool)
        covered[rows[:, None], self._main_genre[top]] = True
        picked = np.zeros(rest.shape, dtype=bool)
        order = np.zeros(rest.shape, dtype=np.int64)                   # pick rank of each column
        for j in range(n_pick):
            new_genre = ~picked & ~covered[rows[:, None], genres]
            if j < k:
                new_genre[:] = False                                   # first: the base policy's choice
            # the base ranking's best new genre, else its best item not yet picked
            col = np.where(new_genre.any(axis=1), np.argmax(new_genre, axis=1), np.argmax(~picked, axis=1))
            picked[rows, col] = True
            order[rows, col] = j - n_pick                              # negative: before every other column
            covered[rows, genres[rows, col]] = True
        order[~picked] = np.nonzero(~picked)[1]
        return np.take_along_axis(rest, np.argsort(order, axis=1, kind="stable"), axis=1)


@dataclass(frozen=True)
class _Rollouts:
    """The device side of the planner: what it simulates, as a hashable static argument of ``jit``.

    Planners with the same settings share one compilation per batch shape.

    Attributes:
        config: The planner's settings.
        slots: Items per action (the slate size; 1 for single items).
        n_top: Candidates of highest current utility (``candidates``, raised to ``slots``).
        n_base: Candidates from the base policy's ranking (``base_candidates``, raised to ``slots``).
        early_exit: Stop each rollout once every simulated user of the batch has left (a
            ``lax.while_loop``) rather than running every step (a ``lax.scan``); same values.
    """

    config: PlannerConfig
    slots: int
    n_top: int
    n_base: int
    early_exit: bool = True

    def _plan_batch(self, params: MovieLensParams, state: MovieLensState, envs: jax.Array, shortlist: jax.Array,
                    immediate: jax.Array, seed: jax.Array) -> jax.Array:
        """``(m, k)`` candidate positions of the slates served to envs ``envs``.

        Args:
            params: The env's params (JAX arrays).
            state: Every env's hidden state (leading ``num_envs`` axis).
            envs: ``(m,)`` the envs to plan for (indices into ``state``).
            shortlist: ``(m, L)`` item ids, candidates first.
            immediate: ``(m, C)`` the candidates' current true utilities (the one-step horizon's ranking).
            seed: uint32 scalar, this step's seed.
        """
        _TRACES[0] += 1  # a Python side effect: runs only when jax.jit traces
        step_key = jax.random.key(seed)

        def plan_env(env, items, utilities):
            env_state = jax.tree_util.tree_map(lambda x: x[env], state)
            return self._plan_one(params, env_state, items, utilities, jax.random.fold_in(step_key, env))

        return jax.vmap(plan_env)(envs, shortlist, immediate)

    def _plan_one(self, params: MovieLensParams, state: MovieLensState, shortlist: jax.Array,
                  immediate: jax.Array, key: jax.Array) -> jax.Array:
        """One env: ``(k,)`` candidate positions of the item or slate to serve."""
        k, n_top = self.slots, self.n_top
        n_cand = n_top + self.n_base
        if self.config.horizon == 1:  # no simulated future: oracle-greedy's choice (first of equals)
            return jnp.argmax(immediate)[None].astype(jnp.int32) if k == 1 else jnp.arange(k, dtype=jnp.int32)
        local = params.replace(world=_local_world(params.world, state.user, shortlist))
        start = _local_state(state, shortlist)
        base_scores = self._base_scores(start, local)                                   # (L,)
        if k == 1:
            options = jnp.arange(n_cand, dtype=jnp.int32)[:, None]                       # every candidate
            default = jnp.argmax(base_scores[:n_cand])
        else:
            # the base policy's slate (all candidates: base_candidates >= k), oracle-greedy's, and the
            # base slate with its last item swapped for each top candidate it lacks
            base_slate = _top_items(base_scores[:n_cand], k)
            tops = jnp.arange(n_top, dtype=jnp.int32)
            swapped = jnp.tile(base_slate, (n_top, 1)).at[:, -1].set(tops)
            swapped = jnp.where(jnp.isin(tops, base_slate)[:, None], base_slate[None], swapped)
            options = jnp.concatenate([base_slate[None], jnp.arange(k, dtype=jnp.int32)[None], swapped])
            default = 0
        screen_key, confirm_key = jax.random.split(key)

        def returns(options, key):  # (A, S): every option on the same S noise samples
            samples = jax.random.split(key, self.config.samples)
            return jax.vmap(lambda option: jax.vmap(lambda sample: self.simulated_return(local, start, option, sample))(
                samples))(options)

        # screen: the option with the best estimated gain over the base policy's
        gain = _gains(returns(options, screen_key), default).mean(axis=1)
        challenger = jnp.argmax(gain)
        # confirm on fresh samples: the screen's winner is flattered by the noise that made it win
        pair = jnp.stack([default, challenger])
        gain = _gains(returns(options[pair], confirm_key), 0)[1]
        advantage = gain.mean()
        if self.config.confidence > 0:
            advantage = advantage - self.config.confidence * gain.std(ddof=1) / np.sqrt(gain.shape[0])
        return options[jnp.where(advantage > 0, challenger, default)]

    def _base_scores(self, state: MovieLensState, params: MovieLensParams) -> jax.Array:
        """The base policy's scores of the local world's items (the core's own utilities and costs)."""
        scores = true_utilities(jnp, state, params)
        if self.config.base_policy == "boredom-aware":
            scores = scores - self.config.boredom_weight * boredom_cost(jnp, state, params)
        return scores

    def simulated_return(self, params: MovieLensParams, state: MovieLensState, slate: jax.Array,
                         key: jax.Array) -> jax.Array:
        """One sample of the return of serving ``slate`` now, then following the base policy.

        The sum of the simulated rewards of the step ``slate`` is served and of the base policy's
        steps after it, up to ``horizon`` steps in all (``None``: until the simulated user leaves
        or the episode reaches its time limit). Step ``t`` draws its noise from ``fold_in(key, t)``
        with the core's own :meth:`~recgym.envs.movielens.MovieLensCore.step_noise` and is
        simulated by :meth:`~recgym.envs.movielens.MovieLensCore.transition`; rewards stop when
        the simulated user leaves or the episode reaches its time limit.

        With ``early_exit`` the steps run in a ``lax.while_loop`` that stops once the user has
        left (under ``vmap``: once every simulated user of the batch has), so a rollout costs
        what the remaining sessions last, not the horizon; without it a ``lax.scan`` runs every
        step. The two give the same return (a left user earns 0).

        Args:
            params: The params of the local world the rollout runs in (JAX arrays).
            state: The user's state in that world (unbatched).
            slate: ``(k,)`` item ids (positions in the local world) served first.
            key: This sample's PRNG key.

        Returns:
            float32 scalar, in rating units.
        """
        core, k = _CORE, self.slots
        steps = params.max_episode_steps if self.config.horizon is None else self.config.horizon

        def advance(state, alive, action, t):
            noise = core.step_noise(jax.random.fold_in(key, t), params)
            nxt, reward, terminated, _ = core.transition(jnp, state, action, noise, params)
            return nxt, alive & ~(terminated | core.is_truncated(jnp, nxt, params)), jnp.where(alive, reward, 0.0)

        def base_step(carry, t):
            state, alive, total = carry
            scores = self._base_scores(state, params)
            action = jnp.argmax(scores) if k == 1 else _top_items(scores, k)
            nxt, still, reward = advance(state, alive, action.astype(jnp.int32), t)
            return nxt, still, total + reward

        state, alive, first = advance(state, jnp.asarray(True), slate[0] if k == 1 else slate, 0)
        carry = (state, alive, first.astype(jnp.float32))
        if self.early_exit:
            def more(loop):
                t, (_, alive, _) = loop
                return alive & (t < steps)

            _, (_, _, total) = jax.lax.while_loop(more, lambda loop: (loop[0] + 1, base_step(loop[1], loop[0])),
                                                  (jnp.int32(1), carry))
        else:
            (_, _, total), _ = jax.lax.scan(lambda c, t: (base_step(c, t), None), carry, jnp.arange(1, steps))
        return total


# one compiled planning function per (settings, shapes), shared by every PlannerPolicy
_plan = jax.jit(lambda rollouts, *args: rollouts._plan_batch(*args), static_argnums=0)
_TRACES = [0]  # how many times _plan traced (each policy reads its own share: PlannerPolicy.trace_count)


def _gains(returns: jax.Array, default: jax.Array | int) -> jax.Array:
    """``(A, S)`` paired gains of each option over option ``default``, sample by sample.

    ``returns`` (``(A, S)``) are each option's simulated returns; the noise an option shares with
    the default (same samples) cancels.
    """
    return returns - returns[default]


def _top_items(scores: jax.Array, k: int) -> jax.Array:
    """``(k,)`` int32 positions of the ``k`` highest ``scores``, best first (first of equals).

    ``k`` rounds of argmax: for the few items of a slate over a short list this is several times
    cheaper on CPU than ``lax.top_k``, which sorts.
    """
    picks = []
    for _ in range(k):
        best = jnp.argmax(scores)
        picks.append(best)
        scores = scores.at[best].set(-jnp.inf)
    return jnp.stack(picks).astype(jnp.int32)


def _local_world(world: WorldArrays, user: jax.Array, items: jax.Array) -> WorldArrays:
    """The world as one user sees it over ``items``: the same arrays, restricted (the user is index 0).

    The dynamics read per-item rows (utility, genres) and per-user rows (biases, factors, mean
    utility) only, so the core run on this world simulates the user exactly as long as it is
    served shortlist items.
    """
    def user_row(a):
        return a[user][None]

    return WorldArrays(
        global_mean=world.global_mean,
        user_bias=user_row(world.user_bias),
        item_bias=world.item_bias[items],
        user_factors=user_row(world.user_factors),
        item_factors=world.item_factors[items],
        item_genres=world.item_genres[items],
        item_genre_flags=world.item_genre_flags[items],
        user_mean_utility=user_row(world.user_mean_utility),
        user_genre_affinity=user_row(world.user_genre_affinity),
        profile=user_row(world.profile),
        item_features=world.item_features[items],
        user_pool=jnp.zeros((1,), jnp.int32),
        candidate_pool=user_row(world.candidate_pool),
    )


def _local_state(state: MovieLensState, items: jax.Array) -> MovieLensState:
    """One env's state in its local world: user 0, the seen set re-indexed to ``items``."""
    ids = items.astype(jnp.uint32)
    seen = (state.seen[ids >> 5] >> (ids & 31)) & 1                     # the bitset layout of MovieLensState
    words = (items.shape[0] + 31) // 32
    bits = jnp.pad(seen, (0, 32 * words - items.shape[0])).reshape(words, 32)
    packed = jnp.sum(bits << jnp.arange(32, dtype=jnp.uint32), axis=1, dtype=jnp.uint32)  # bits are disjoint
    return state.replace(user=jnp.int32(0), seen=packed, history_items=jnp.zeros_like(state.history_items))
