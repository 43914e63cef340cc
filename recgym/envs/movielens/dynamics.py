"""The MovieLens user model as a :class:`~recgym.core.FunctionalEnv`: one implementation, two backends.

Every function here is written against an array namespace ``xp`` (NumPy for the single gymnasium
env, ``jax.numpy`` under ``jit``/``vmap``/``scan``) and takes its noise as input; the formulas are
those of :class:`~recgym.envs.movielens.params.MovieLensParams` and docs/environments/movielens.md.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np

from recgym.biased_mf import mf_scores
from recgym.core import FunctionalEnv, Transition, as_jax
from recgym.envs.movielens.params import MovieLensParams, MovieLensState
from recgym.spaces import Slate, repeating_rows

F32 = np.float32
_FAST_INTS = (int, np.int64, np.int32)


class ObservationField(NamedTuple):
    """One block of the observation vector (see :func:`observation_layout`).

    Fields: ``name`` (e.g. ``"profile_genres"`` or ``"history[0].rating"``), ``start`` (index of
    its first element), ``size`` (number of elements), ``low`` / ``high`` (bounds of its elements)
    and ``description`` (what it means, with units).
    """

    name: str
    start: int
    size: int
    low: float
    high: float
    description: str


def observation_layout(params: MovieLensParams) -> list[ObservationField]:
    """The observation vector, block by block, with bounds (the source of the space and the docs table)."""
    w = params.world
    g, f = w.n_genres, w.n_item_features
    prof = np.asarray(w.profile)
    feat = np.asarray(w.item_features)
    emb_lo = float(min(prof[:, g:].min(initial=0.0), feat[:, g:].min(initial=0.0))) - 1e-3
    emb_hi = float(max(prof[:, g:].max(initial=0.0), feat[:, g:].max(initial=0.0))) + 1e-3
    blocks: list[tuple[str, int, float, float, str]] = [
        ("profile_genres", g, 0.0, 1.0, "logged genre preference of the user (sums to 1)"),
        ("profile_embedding", f - g, emb_lo, emb_hi, "user CF embedding fitted on the logged ratings"),
    ]
    for j in range(params.history_length):
        ago = "the latest interaction" if j == 0 else f"the interaction {j} step(s) before the latest"
        blocks += [
            (f"history[{j}].genres", g, 0.0, 1.0, f"genre vector g_i of {ago} (zeros if none)"),
            (f"history[{j}].embedding", f - g, emb_lo, emb_hi, f"logged CF item embedding of {ago}"),
            (f"history[{j}].rating", 1, 0.0, 1.0, f"rating of {ago} / rating_max (0: no click)"),
            (f"history[{j}].clicked", 1, 0.0, 1.0, f"1 if {ago} was a click"),
            (f"history[{j}].valid", 1, 0.0, 1.0, f"1 if {ago} exists"),
        ]
    blocks.append(("time", 1, 0.0, 1.0, "steps taken / max_episode_steps"))
    if params.observe_hidden:
        budget_lo = -(1.0 + float(params.no_click_cost)
                      + float(params.budget_satisfaction_weight) * (float(params.rating_max) - float(params.rating_min))
                      + float(params.boredom_cost) * params.satiation_bound) / float(params.initial_budget)
        blocks += [
            ("satiation", g, 0.0, params.satiation_bound + 1e-3, "hidden satiation s per genre"),
            ("habit", g, 0.0, params.habit_bound + 1e-3, "hidden habit h per genre"),
            ("budget", 1, budget_lo - 1e-3, params.budget_bound / float(params.initial_budget) + 1e-3,
             "hidden session budget / initial_budget"),
        ]
    for j in range(params.n_candidates):
        blocks += [
            (f"candidates[{j}].genres", g, 0.0, 1.0, f"genre vector of candidate {j}"),
            (f"candidates[{j}].embedding", f - g, emb_lo, emb_hi, f"logged CF embedding of candidate {j}"),
        ]
    out, start = [], 0
    for name, size, lo, hi, desc in blocks:
        if size:
            out.append(ObservationField(name, start, size, lo, hi, desc))
            start += size
    return out


def observation_table(params: MovieLensParams) -> str:
    """The observation layout as a Markdown table (index range, name, min, max, meaning).

    The spec card in docs/environments/movielens.md is this table for the default
    ``RecGym-MovieLens-v0`` on ml-latest-small; a test keeps the two identical.
    """

    def num(x: float) -> str:
        return f"{x:.3g}"

    lines = ["| index | block | min | max | meaning |", "| --- | --- | --- | --- | --- |"]
    for f in observation_layout(params):
        index = str(f.start) if f.size == 1 else f"{f.start}–{f.start + f.size - 1}"
        lines.append(f"| {index} | `{f.name}` | {num(f.low)} | {num(f.high)} | {f.description} |")
    return "\n".join(lines)


def _seen_words(n_items: int) -> int:
    """Number of uint32 words of the seen-set bitset of a catalogue of ``n_items`` items."""
    return (n_items + 31) // 32


def _seen_mask(xp: Any, seen: Any, n_items: int) -> Any:
    """``(n_items,)`` 0/1: the bitset ``seen`` unpacked (bit ``i % 32`` of word ``i // 32``)."""
    idx = xp.arange(n_items, dtype=np.uint32)
    return (seen[idx >> 5] >> (idx & 31)) & 1


def _is_seen(xp: Any, seen: Any, items: Any) -> Any:
    """float32 0/1 per item of ``items`` (a scalar or an array): whether it is in the seen set.

    One word read per item: no scan of the session (backend-specific data movement).
    """
    if xp is np and not isinstance(items, np.ndarray):  # a scalar item: Python ints are cheapest
        i = int(items)
        return F32(1.0) if (int(seen[i >> 5]) >> (i & 31)) & 1 else F32(0.0)
    items = items.astype(np.uint32)
    return ((seen[items >> 5] >> (items & 31)) & 1).astype(F32)


def _mark_seen(xp: Any, seen: Any, item: Any, clicked: Any) -> Any:
    """The bitset ``seen`` with ``item`` added when ``clicked`` (a new array; ``seen`` is unchanged)."""
    if xp is np:
        if not clicked:
            return seen  # states are never mutated in place: sharing the array is safe
        i = int(item)
        out = seen.copy()
        out[i >> 5] |= np.uint32(1 << (i & 31))
        return out
    i = item.astype(jnp.uint32)
    word = i >> 5
    bit = clicked.astype(jnp.uint32) << (i & 31)
    return seen.at[word].set(seen[word] | bit)


def _clip(xp: Any, x: Any, low: Any, high: Any) -> Any:
    """``min(max(x, low), high)`` (``high=None``: no upper bound).

    On a NumPy float32 scalar with Python-float bounds two comparisons are ~10x cheaper than
    ufunc calls; the result is the same number (float32; a bound is returned as float32).
    """
    if xp is np and type(x) is np.float32:
        if x < low:
            return F32(low)
        return F32(high) if high is not None and x > high else x
    x = xp.maximum(x, low)
    return x if high is None else xp.minimum(x, high)


def _f32(xp: Any, flag: Any) -> Any:
    """float32 0/1 of a bool (or bool array): ``flag * 1.0``, a branch on a NumPy scalar."""
    if xp is np and type(flag) is np.bool_:
        return F32(1.0) if flag else F32(0.0)
    return flag * F32(1.0)


def _as_slate(xp: Any, x: Any, single: bool) -> Any:
    """``x`` with a slate axis: ``(1,)`` from a scalar when ``single``, unchanged otherwise."""
    if not single:
        return x
    return np.array([x]) if xp is np else xp.reshape(x, (1,))


def _push_front(xp: Any, history: Any, row: Any) -> Any:
    """``history`` (``(L, ...)``) shifted down one row, with ``row`` as the new first row."""
    if xp is np:
        out = np.empty_like(history)
        out[1:] = history[:-1]
        out[0] = row
        return out
    return jnp.concatenate([jnp.asarray(row, history.dtype)[None], history[:-1]])


def _mf_utility(params: MovieLensParams, user: Any, items: Any) -> Any:
    """Hidden biased-MF utility ``v(u, i)`` of the user for an item or an array of items."""
    w = params.world
    return mf_scores(w.global_mean, w.user_bias[user], w.item_bias[items], w.user_factors[user], w.item_factors[items])


def _fairness_rating(xp: Any, params: MovieLensParams, value: Any, genre_affinity: Any, items: Any) -> Any:
    """ML-Fairness-Gym's ``clip(dot([latent; genre] user, [latent; genre] item), r_min, r_max)``."""
    return _clip(xp, value + params.world.item_genre_flags[items] @ genre_affinity, params.rating_min, params.rating_max)


def _satisfaction(params: MovieLensParams, value: Any, habit_dot: Any, satiation_dot: Any, seen: Any) -> Any:
    """Noise-free satisfaction before clipping: ``v + alpha h.g_i - lambda s.g_i - repeat_penalty [seen]``.

    The one place the satisfaction formula is written: the transition adds the rating noise to it
    and clips; :func:`true_utilities` clips it as it is.
    """
    return (value + params.habit_satisfaction_weight * habit_dot
            - params.satiation_penalty * satiation_dot - params.repeat_penalty * seen)


def true_utilities(xp: Any, state: MovieLensState, params: MovieLensParams) -> Any:
    """The user's *current* expected satisfaction of consuming each item (privileged access).

    ``clip(v(u,i) + alpha h.g_i - lambda s.g_i - repeat_penalty [seen], r_min, r_max)`` (noise-free);
    in the Fairness world its deterministic rating. This is what oracle-greedy maximises and what
    NDCG is measured against. Pure and ``xp``-generic: vmap it over a batched state.

    Args:
        xp: ``numpy`` or ``jax.numpy``.
        state: One user's state (unbatched).
        params: The env's params.

    Returns:
        ``(n_items,)`` float32 utilities in rating units.
    """
    if xp is not np:
        params = as_jax(params)
    w = params.world
    everything = xp.arange(w.n_items)
    value = _mf_utility(params, state.user, everything)
    if params.utility_model == "fairness":
        return _fairness_rating(xp, params, value, state.genre_affinity, everything).astype(F32)
    base = _satisfaction(params, value, w.item_genres @ state.habit, w.item_genres @ state.satiation,
                         _seen_mask(xp, state.seen, w.n_items))
    return _clip(xp, base, params.rating_min, params.rating_max).astype(F32)


def boredom_cost(xp: Any, state: MovieLensState, params: MovieLensParams) -> Any:
    """Immediate session-budget cost of the satiation each item would add if consumed now.

    ``boredom_cost * max(0, (satiation_decay * s + satiation_growth * g_i) . g_i - boredom_threshold)``: the budget a
    click on item ``i`` loses to boredom (0 when the session budget is off).

    Returns:
        ``(n_items,)`` float32, in budget units (steps).
    """
    if xp is not np:
        params = as_jax(params)
    g = params.world.item_genres
    after = params.satiation_decay * (g @ state.satiation) + params.satiation_growth * xp.sum(g * g, axis=1)
    cost = params.boredom_cost * xp.maximum(after - params.boredom_threshold, 0.0)
    if not params.session_budget:
        cost = cost * 0.0
    return cost.astype(F32)


def _draw_candidates(xp: Any, user: Any, uniforms: Any, params: MovieLensParams) -> Any:
    """``n_candidates`` distinct items from the user's retrieval pool, one per stratum of the pool."""
    k = params.n_candidates
    if k == 0:
        return xp.zeros((0,), dtype=np.int32)
    pool = params.world.candidate_pool
    stride = pool.shape[1] // k
    offset = xp.minimum((uniforms * stride).astype(np.int32), stride - 1)
    return pool[user][xp.arange(k, dtype=np.int32) * stride + offset].astype(np.int32)


class NoiseShape(NamedTuple):
    """What the noise draws need of the params (hashable: one compiled draw per shape)."""

    slate_size: int
    n_candidates: int


class MovieLensCore(FunctionalEnv):
    """The MovieLens user simulator's pure dynamics (see :class:`MovieLensParams` for the model).

    Use it directly for JAX training loops::

        core = MovieLensCore()
        params = make_params(build_world("synthetic"))
        obs, carry = core.start(key, params)      # the env's key chain, like env.reset(seed)
        obs, carry, reward, terminated, truncated, info = core.step_autoreset(carry, action, params)

    ``default_params()`` needs a world, so pass ``params`` explicitly (or construct the core with
    ``MovieLensCore(params)``).

    Args:
        params: Optional default params returned by :meth:`default_params`.
    """

    def __init__(self, params: MovieLensParams | None = None):
        self._default = params

    def default_params(self) -> MovieLensParams:
        """The params given at construction (a world must be built first, see ``make_params``)."""
        if self._default is None:
            raise ValueError("MovieLensCore() was built without params; pass params explicitly")
        return self._default

    # ------------------------------------------------------------------ noise
    def noise_params(self, params: MovieLensParams) -> NoiseShape:
        """The noise depends only on the slate size and the number of candidates."""
        return NoiseShape(params.slate_size, params.n_candidates)

    def reset_noise(self, key: jax.Array, params: MovieLensParams) -> dict[str, jax.Array]:
        """``user``: U(0,1) scalar picking the user; ``candidates``: ``(K,)`` U(0,1) (one draw)."""
        u = jax.random.uniform(key, (1 + params.n_candidates,), jnp.float32)
        return {"user": u[0], "candidates": u[1:]}

    def step_noise(self, key: jax.Array, params: MovieLensParams) -> dict[str, jax.Array]:
        """``rating``: ``(S,)`` N(0,1); ``choice``: ``(S+1,)`` Gumbel; ``candidates``: ``(K,)`` U(0,1).

        One uniform draw, transformed (inverse normal CDF, ``-log(-log u)``): a single call of
        the counter-based generator is the cheapest way to feed thousands of vmapped users.
        """
        s, k = params.slate_size, params.n_candidates
        tiny = float(np.finfo(np.float32).tiny)
        u = jax.random.uniform(key, (2 * s + 1 + k,), jnp.float32, minval=tiny, maxval=1.0)
        return {
            "rating": jax.scipy.special.ndtri(u[:s]),
            "choice": -jnp.log(-jnp.log(u[s:2 * s + 1])),
            "candidates": u[2 * s + 1:],
        }

    # ------------------------------------------------------------------ dynamics
    def init(self, xp: Any, noise: Any, params: MovieLensParams, options: dict | None = None) -> MovieLensState:
        """A fresh session: a user from the pool (or ``options["user_id"]``), zero habit and satiation."""
        w = params.world
        user_id = None if not options else options.get("user_id")
        if user_id is None:
            pool = w.user_pool
            n = pool.shape[0]
            user = pool[xp.minimum((noise["user"] * n).astype(np.int32), n - 1)]
        else:
            user = xp.asarray(user_id)
        user = xp.int32(user)  # a scalar, not a 0-d array: cheap indexing on NumPy
        zeros_g = xp.zeros((w.n_genres,), dtype=F32)
        return MovieLensState(
            user=user,
            time=xp.int32(0),
            satiation=zeros_g,
            habit=zeros_g,
            budget=xp.float32(params.initial_budget),
            genre_affinity=xp.asarray(w.user_genre_affinity[user], dtype=F32),
            seen=xp.zeros((_seen_words(w.n_items),), dtype=np.uint32),
            history=xp.zeros((params.history_length, 3), dtype=F32),
            history_items=xp.zeros((params.history_length,), dtype=np.int32),
            candidates=_draw_candidates(xp, user, noise["candidates"], params),
        )

    def transition(self, xp: Any, state: MovieLensState, action: Any, noise: Any, params: MovieLensParams) -> Transition:
        """Serve the slate, let the user choose, rate, and update satiation, habit and budget.

        With ``slate_size == 1`` the slate axis is dropped (scalars instead of ``(1,)`` arrays):
        the same formulas, but NumPy then runs cheap scalar operations, which is what makes the
        single gymnasium env fast.
        """
        w = params.world
        user = state.user
        single = params.slate_size == 1
        # (check_action already shaped NumPy actions; np.reshape of a NumPy scalar is slow)
        picks = action if xp is np else xp.reshape(action, () if single else (params.slate_size,))
        items = state.candidates[picks] if params.n_candidates else picks
        genres = w.item_genres[items]                                   # (G,) or (S, G)
        value = _mf_utility(params, user, items)
        seen = _is_seen(xp, state.seen, items)                          # 0/1 (per slate item)
        habit_dot = genres @ state.habit                                # h . g_i per slate item
        satiation_dot = genres @ state.satiation                        # s . g_i per slate item
        if params.utility_model == "fairness":
            value = _fairness_rating(xp, params, value, state.genre_affinity, items)
            utility = rating = value
        else:
            base = _satisfaction(params, value, habit_dot, satiation_dot, seen)
            utility = _clip(xp, base, params.rating_min, params.rating_max)
            noisy = base + params.rating_noise_std * (noise["rating"][0] if single else noise["rating"])
            rating = _clip(xp, noisy, params.rating_min, params.rating_max)
        if params.choice_model == "always":
            position = 0
            clicked = xp.asarray(True)
        else:
            attraction = (params.click_utility_weight * value + params.click_habit_weight * habit_dot
                          - params.click_satiation_weight * satiation_dot - params.repeat_penalty * seen
                          + (noise["choice"][1] if single else noise["choice"][1:]))
            position = 0 if single else xp.argmax(attraction)
            chosen = attraction if single else attraction[position]
            clicked = chosen > params.no_click_utility + noise["choice"][0]
        if single:
            item, item_genres, item_rating = items, genres, rating
        else:
            item, item_genres, item_rating = items[position], genres[position], rating[position]
        clicked_f = _f32(xp, clicked)
        rating_out = item_rating * clicked_f                                     # 0 without a click
        liked = _f32(xp, rating_out >= params.habit_threshold)

        satiation = params.satiation_decay * state.satiation + (params.satiation_growth * clicked_f) * item_genres
        habit = params.habit_decay * state.habit + (params.habit_growth * liked) * item_genres
        if params.utility_model == "fairness":
            boost = ((rating_out >= params.fairness_threshold) * w.item_genre_flags[item]) * params.fairness_delta
            genre_affinity = state.genre_affinity * (F32(1.0) + boost)
        else:
            genre_affinity = state.genre_affinity
        if params.session_budget:
            boredom = _clip(xp, satiation @ item_genres - params.boredom_threshold, 0.0, None)
            gain = (params.budget_satisfaction_weight * (rating_out - w.user_mean_utility[user])
                    - params.boredom_cost * boredom)
            budget = state.budget + (clicked_f * gain - (F32(1.0) - clicked_f) * params.no_click_cost - F32(1.0))
            terminated = budget <= F32(0.0)
        else:
            budget = state.budget
            terminated = xp.asarray(False)

        if xp is np and type(clicked) is np.bool_:                              # -1 without a click
            consumed_item = item if clicked else type(item)(-1)
        else:
            consumed_item = clicked * (item + 1) - 1
        next_state = MovieLensState(
            user=user,
            time=state.time + 1,
            satiation=satiation,
            habit=habit,
            budget=budget,
            genre_affinity=genre_affinity,
            seen=_mark_seen(xp, state.seen, item, clicked),
            history=_push_front(xp, state.history,
                                (rating_out * (1.0 / params.rating_max), clicked_f, 1.0) if xp is np
                                else jnp.stack([rating_out * (1.0 / params.rating_max), clicked_f, jnp.ones_like(clicked_f)])),
            history_items=_push_front(xp, state.history_items, item),
            candidates=_draw_candidates(xp, user, noise["candidates"], params) if params.n_candidates
            else state.candidates,
        )
        info = {
            "user": user + 0,
            "slate": _as_slate(xp, items, single),
            "clicked": clicked,
            "clicked_item": consumed_item,
            "rating": rating_out,
            "true_utility": _as_slate(xp, utility, single),
            "satiation": satiation,
            "habit": habit,
            "budget": budget,
        }
        if params.n_candidates:  # what the next action indexes: policies read it here
            info["candidates"] = next_state.candidates.copy() if xp is np else next_state.candidates
        reward = rating_out if params.reward_type == "rating" else clicked_f
        return Transition(next_state, reward, terminated, info)

    def observe(self, xp: Any, state: MovieLensState, params: MovieLensParams) -> Any:
        """The float32 observation vector laid out by :func:`observation_layout`."""
        w = params.world
        if xp is np:
            return self._observe_numpy(state, params)
        # the history's item features are looked up here, not carried in the state (cheaper steps)
        features = w.item_features[state.history_items] * state.history[:, 2:]  # zeros where invalid
        history = xp.concatenate([features, state.history], axis=1)
        parts = [w.profile[state.user], history.reshape(-1),
                 xp.asarray([state.time * (1.0 / params.max_episode_steps)], dtype=F32)]
        if params.observe_hidden:
            parts += [state.satiation, state.habit,
                      xp.asarray([state.budget * (1.0 / params.initial_budget)], dtype=F32)]
        if params.n_candidates:
            parts.append(w.item_features[state.candidates].reshape(-1))
        return xp.concatenate(parts)

    @staticmethod
    def _observe_numpy(state: MovieLensState, params: MovieLensParams) -> np.ndarray:
        """:meth:`observe` on NumPy: the same blocks written into one preallocated vector.

        Data movement only (a few slice writes instead of building and concatenating the blocks,
        ~3x cheaper for one env); the backend-agreement tests hold it equal to the JAX path.
        """
        w = params.world
        p = w.profile.shape[1]
        f, g = w.item_features.shape[1], w.item_genres.shape[1]
        n_hist = params.history_length * (f + 3)
        size = p + n_hist + 1 + (2 * g + 1 if params.observe_hidden else 0) + params.n_candidates * f
        out = np.empty(size, dtype=F32)
        out[:p] = w.profile[state.user]
        history = out[p:p + n_hist].reshape(params.history_length, f + 3)
        history[:, f:] = state.history
        # every step pushes one valid row: the first min(time, L) rows are the valid ones
        n_valid = min(int(state.time), params.history_length)
        if n_valid == params.history_length:
            history[:, :f] = w.item_features.take(state.history_items, axis=0)
        else:
            history[:n_valid, :f] = w.item_features.take(state.history_items[:n_valid], axis=0)
            history[n_valid:, :f] = 0.0
        i = p + n_hist
        out[i] = int(state.time) / params.max_episode_steps
        i += 1
        if params.observe_hidden:
            out[i:i + g] = state.satiation
            out[i + g:i + 2 * g] = state.habit
            out[i + 2 * g] = state.budget * (1.0 / params.initial_budget)
            i += 2 * g + 1
        if params.n_candidates:
            out[i:] = w.item_features[state.candidates].reshape(-1)
        return out

    # ------------------------------------------------------------------ spaces and API checks
    def observation_space(self, params: MovieLensParams) -> gym.spaces.Box:
        """A float32 ``Box`` whose bounds come from :func:`observation_layout`."""
        layout = observation_layout(params)
        low = np.concatenate([np.full(f.size, f.low, dtype=F32) for f in layout])
        high = np.concatenate([np.full(f.size, f.high, dtype=F32) for f in layout])
        return gym.spaces.Box(low, high, dtype=F32)

    def action_space(self, params: MovieLensParams) -> gym.Space:
        """``Discrete(n)`` for one item; for a slate, :class:`recgym.spaces.Slate` ``(n, slate_size)``.

        ``n`` is ``n_choices``. A ``Slate`` is a ``MultiDiscrete([n] * slate_size)`` whose samples
        hold distinct items (and whose ``contains`` rejects repeats), as ``step`` requires.
        """
        n = params.n_choices
        if params.slate_size == 1:
            return gym.spaces.Discrete(n)
        return Slate(n, params.slate_size)

    def check_action(self, action: Any, params: MovieLensParams, batch_size: int | None = None) -> np.ndarray:
        """Validate one action (or a batch): integer dtype, shape, range, no duplicates in a slate.

        Raises:
            ValueError: Naming the problem (dtype, shape, the out-of-range value, the duplicate).
        """
        n, s = params.n_choices, params.slate_size
        if batch_size is None and s == 1 and type(action) in _FAST_INTS:  # the common fast path
            if not 0 <= action < n:
                raise ValueError(f"action {action} is out of range: item ids lie in [0, {n})")
            return np.int32(action)
        arr = np.asarray(action)
        if arr.dtype.kind not in "iu":
            raise ValueError(f"actions must be integer item ids, got dtype {arr.dtype} ({action!r})")
        expected = (() if s == 1 else (s,)) if batch_size is None else ((batch_size,) if s == 1 else (batch_size, s))
        if arr.shape != expected and not (s == 1 and arr.shape == expected + (1,)):
            what = "a batch of actions" if batch_size else "an action"
            raise ValueError(f"{what} must have shape {expected} (slate_size={s}), got shape {arr.shape}")
        if arr.size and (arr.min() < 0 or arr.max() >= n):
            bad = arr[(arr < 0) | (arr >= n)].ravel()[0]
            raise ValueError(f"action contains {bad}, out of range: item ids lie in [0, {n})")
        if s > 1:
            dup = repeating_rows(arr, s)
            if dup.any():
                row = int(np.nonzero(dup)[0][0])
                raise ValueError(f"slate contains duplicate items: {arr.reshape(-1, s)[row].tolist()}")
        out = arr.astype(np.int32).reshape(expected)
        return out[()] if out.ndim == 0 else out

    def reset_info(self, xp: Any, state: MovieLensState, params: MovieLensParams) -> dict[str, Any]:
        """Reset info: the ``user``, their ``budget`` and (candidate mode) the ``candidates``."""
        info = {"user": state.user, "budget": state.budget}
        if params.n_candidates:
            info["candidates"] = state.candidates
        return info

    def check_options(self, options: dict | None, params: MovieLensParams) -> None:
        """Validate reset options (``{"user_id": int}``)."""
        if not options:
            return
        unknown = set(options) - {"user_id"}
        if unknown:
            raise ValueError(f"unsupported reset options {sorted(unknown)}; supported: ['user_id']")
        uid = np.asarray(options["user_id"])
        if uid.dtype.kind not in "iu":
            raise ValueError(f"options['user_id'] must be an integer, got {options['user_id']!r}")
        n = params.world.n_users
        if uid.size and (uid.min() < 0 or uid.max() >= n):
            raise ValueError(f"options['user_id'] must lie in [0, {n}) (world user index), got {options['user_id']!r}")

    def reset_numpy(self, noise: Any, params: MovieLensParams, options: dict | None = None):
        """See :meth:`FunctionalEnv.reset_numpy`; validates ``options`` first."""
        self.check_options(options, params)
        return super().reset_numpy(noise, params, options)

    def batch_options(self, options: dict | None, num_envs: int, params: MovieLensParams) -> dict | None:
        """``{"user_id": int or (num_envs,) ints}`` -> per-env ``user_id`` array."""
        if not options:
            return None
        self.check_options(options, params)
        uid = np.broadcast_to(np.asarray(options["user_id"], dtype=np.int32), (num_envs,))
        return {"user_id": jnp.asarray(uid)}
