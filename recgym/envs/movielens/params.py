"""Parameters, state and presets of the MovieLens user simulator.

Every coefficient of the user model is a named field of :class:`MovieLensParams` with a default
and a one-line description; :data:`PRESETS` holds the three registered worlds, and
:func:`make_params` builds the params of a preset over a built world (RecGym-Pipeline's
``make_params`` sits in its ``params`` module too, with the same shape: the named table entry, a
mode, then field overrides). Shape-determining
settings (slate size, history length, time limit, modes) are static pytree fields; coefficients
and world arrays are leaves, so they can be traced, vmapped or randomised.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
from flax import struct

from recgym.core import finite, is_int, require

if TYPE_CHECKING:  # the world builder is only needed to build params, not to describe them
    from recgym.envs.movielens.world import MovieLensWorld

CHOICE_MODELS = ("mnl", "always")
REWARD_TYPES = ("rating", "click")
UTILITY_MODELS = ("mf", "fairness")


@struct.dataclass
class WorldArrays:
    """The arrays of a built world that the dynamics read (see :class:`~recgym.envs.movielens.world.MovieLensWorld`).

    Hidden (never in the observation unless ``observe_hidden``): ``global_mean``, ``user_bias``,
    ``item_bias``, ``user_factors``, ``item_factors``, ``user_mean_utility``,
    ``user_genre_affinity``. Observable (the logged profile): ``profile``, ``item_features``.

    Attributes:
        global_mean: Scalar ``mu`` of the hidden biased MF (rating units).
        user_bias: ``(n_users,)`` ``b_u``.
        item_bias: ``(n_items,)`` ``b_i``.
        user_factors: ``(n_users, d)`` ``p_u``.
        item_factors: ``(n_items, d)`` ``q_i``.
        item_genres: ``(n_items, n_genres)`` genre vectors ``g_i`` (each row sums to 1).
        item_genre_flags: ``(n_items, n_genres)`` multi-hot genres (the Fairness preset's item
            genre part).
        user_mean_utility: ``(n_users,)`` the user's mean utility ``v(u, i)`` over the catalogue:
            the level of satisfaction that leaves the session budget unchanged.
        user_genre_affinity: ``(n_users, n_genres)`` the Fairness preset's initial genre part of the
            user vector.
        profile: ``(n_users, n_genres + d_log)`` observable profile: logged genre preference then
            the CF embedding fitted on the logged ratings.
        item_features: ``(n_items, n_genres + d_log)`` observable item features: ``g_i`` then the
            logged CF item embedding.
        user_pool: ``(n_pool,)`` the users episodes are drawn from (train or test population).
        candidate_pool: ``(n_users, pool)`` each user's retrieval pool (candidate mode), or
            ``(n_users, 0)``.
    """

    global_mean: Any
    user_bias: Any
    item_bias: Any
    user_factors: Any
    item_factors: Any
    item_genres: Any
    item_genre_flags: Any
    user_mean_utility: Any
    user_genre_affinity: Any
    profile: Any
    item_features: Any
    user_pool: Any
    candidate_pool: Any

    @property
    def n_users(self) -> int:
        """Number of users of the world."""
        return self.user_bias.shape[0]

    @property
    def n_items(self) -> int:
        """Catalogue size."""
        return self.item_bias.shape[0]

    @property
    def n_genres(self) -> int:
        """Number of genres."""
        return self.item_genres.shape[1]

    @property
    def n_item_features(self) -> int:
        """Length of one item's observable feature vector."""
        return self.item_features.shape[1]


@struct.dataclass
class MovieLensParams:
    """Everything that defines a MovieLens world and its user model (see docs/environments/movielens.md).

    Satisfaction of consuming item ``i`` (rating units, clipped to the rating scale)::

        r = clip(v(u,i) + habit_satisfaction_weight * (h . g_i) - satiation_penalty * (s . g_i)
                 - repeat_penalty * [i consumed this session] + rating_noise_std * eps, r_min, r_max)

    with ``v(u,i) = mu + b_u + b_i + p_u . q_i``. Then ``s <- satiation_decay * s + satiation_growth * g_i * clicked``,
    ``h <- habit_decay * h + habit_growth * g_i * [clicked and r >= habit_threshold]`` and the
    session budget moves by ``-1 + budget_satisfaction_weight * (r - mean_u)
    - boredom_cost * max(0, s . g_i - boredom_threshold)`` on a click, ``-1 - no_click_cost``
    otherwise.

    Attributes:
        world: The world arrays (:class:`WorldArrays`).
        habit_satisfaction_weight: ``alpha``: rating points per unit of habit ``h . g_i``.
        satiation_penalty: ``lambda``: rating points lost per unit of satiation ``s . g_i``.
        repeat_penalty: Rating points lost when the item was already consumed this session.
        rating_noise_std: Std of the Gaussian noise on the rating (rating units).
        satiation_decay: ``gamma_s`` in [0, 1): per-step decay of satiation.
        satiation_growth: Satiation added per consumption (times ``g_i``); 0 switches boredom off.
        habit_decay: ``gamma_h`` in [0, 1): per-step decay of habit.
        habit_growth: ``eta`` >= 0: habit added per liked consumption (times ``g_i``).
        habit_threshold: ``tau``: a consumption is liked when its rating is >= tau.
        click_utility_weight: Attraction per rating point of ``v(u, i)`` (multinomial logit).
        click_habit_weight: Attraction per unit of habit ``h . g_i``; larger than
            ``habit_satisfaction_weight`` so habit pulls clicks more than it pleases.
        click_satiation_weight: Attraction lost per unit of satiation ``s . g_i``.
        no_click_utility: Attraction of the no-click option (in the same units as
            ``click_utility_weight * v``).
        initial_budget: Session budget ``b`` at reset (steps of patience).
        budget_satisfaction_weight: Budget gained per rating point above the user's mean utility.
        no_click_cost: Extra budget lost on a step without a click.
        boredom_cost: ``kappa``: budget lost per unit of satiation above ``boredom_threshold``.
        boredom_threshold: ``theta``: satiation ``s . g_i`` (after consumption) the user tolerates.
        fairness_delta: Fairness preset: liked genres' affinity is multiplied by ``1 + delta``.
        fairness_threshold: Fairness preset: a rating >= this counts as liked.
        rating_min: Lower end of the rating scale.
        rating_max: Upper end of the rating scale.
        slate_size: Items per action (1: ``Discrete``; k > 1: :class:`recgym.spaces.Slate`). Static.
        history_length: Interactions of the episode shown in the observation. Static.
        max_episode_steps: Time limit (truncation). Static.
        choice_model: ``"mnl"`` (multinomial logit with a no-click option) or ``"always"`` (the
            first slate item is consumed). Static.
        reward_type: ``"rating"`` (satisfaction of the consumed item, 0 without a click) or
            ``"click"`` (1 per click). Static.
        utility_model: ``"mf"`` (the dynamic/static worlds) or ``"fairness"`` (ML-Fairness-Gym's
            deterministic rule). Static.
        session_budget: Whether the budget can end the session (``False``: fixed length). Static.
        observe_hidden: Append the hidden state (satiation, habit, budget) to the observation.
            Static.
        n_candidates: Candidate mode: ``K > 0`` retrieved candidates per step, shown in the
            observation; actions then index candidates. ``0``: the whole catalogue. Static.
    """

    world: WorldArrays
    habit_satisfaction_weight: float = 0.5
    satiation_penalty: float = 0.3
    repeat_penalty: float = 1.0
    rating_noise_std: float = 0.3
    satiation_decay: float = 0.8
    satiation_growth: float = 1.0
    habit_decay: float = 0.95
    habit_growth: float = 0.3
    habit_threshold: float = 4.0
    click_utility_weight: float = 1.0
    click_habit_weight: float = 2.0
    click_satiation_weight: float = 0.3
    no_click_utility: float = 3.0
    initial_budget: float = 10.0
    budget_satisfaction_weight: float = 1.0
    no_click_cost: float = 0.5
    boredom_cost: float = 1.0
    boredom_threshold: float = 1.5
    fairness_delta: float = 1.0
    fairness_threshold: float = 3.0
    rating_min: float = 0.5
    rating_max: float = 5.0
    slate_size: int = struct.field(pytree_node=False, default=1)
    history_length: int = struct.field(pytree_node=False, default=5)
    max_episode_steps: int = struct.field(pytree_node=False, default=200)
    choice_model: str = struct.field(pytree_node=False, default="mnl")
    reward_type: str = struct.field(pytree_node=False, default="rating")
    utility_model: str = struct.field(pytree_node=False, default="mf")
    session_budget: bool = struct.field(pytree_node=False, default=True)
    observe_hidden: bool = struct.field(pytree_node=False, default=False)
    n_candidates: int = struct.field(pytree_node=False, default=0)

    def __post_init__(self) -> None:
        nonneg = ">= 0 and finite"
        for name in (
            "habit_satisfaction_weight", "satiation_penalty", "repeat_penalty", "rating_noise_std",
            "habit_growth", "satiation_growth", "click_utility_weight", "click_habit_weight",
            "click_satiation_weight", "budget_satisfaction_weight", "no_click_cost",
            "boredom_cost", "boredom_threshold", "fairness_delta",
        ):
            require(lambda v: finite(v) and np.all(np.asarray(v) >= 0), name, getattr(self, name), nonneg)
        for name in ("satiation_decay", "habit_decay"):
            require(lambda v: finite(v) and np.all((np.asarray(v) >= 0) & (np.asarray(v) < 1)), name,
                    getattr(self, name), "in [0, 1)")
        for name in ("habit_threshold", "no_click_utility", "fairness_threshold", "rating_min", "rating_max"):
            require(finite, name, getattr(self, name), "finite")
        require(lambda v: finite(v) and np.all(np.asarray(v) > 0), "initial_budget", self.initial_budget, "> 0 and finite")
        require(lambda v: np.all(np.asarray(v) > np.asarray(self.rating_min)), "rating_max", self.rating_max,
                f"> rating_min={self.rating_min!r}")
        _require_int("history_length", self.history_length, 1)
        _require_int("max_episode_steps", self.max_episode_steps, 1)
        _require_int("n_candidates", self.n_candidates, 0)
        _require_int("slate_size", self.slate_size, 1)
        n_choices = self.n_candidates if self.n_candidates else self.n_items
        if not is_abstract(self.world) and self.slate_size > n_choices:
            raise ValueError(f"slate_size must be <= {n_choices} (the items it picks from), got {self.slate_size}")
        if self.choice_model not in CHOICE_MODELS:
            raise ValueError(f"choice_model must be one of {CHOICE_MODELS}, got {self.choice_model!r}")
        if self.reward_type not in REWARD_TYPES:
            raise ValueError(f"reward_type must be one of {REWARD_TYPES}, got {self.reward_type!r}")
        if self.utility_model not in UTILITY_MODELS:
            raise ValueError(f"utility_model must be one of {UTILITY_MODELS}, got {self.utility_model!r}")
        if self.n_candidates and not is_abstract(self.world):
            pool = self.world.candidate_pool.shape[1]
            if pool < self.n_candidates:
                raise ValueError(
                    f"n_candidates must be <= the candidate pool size {pool}, got {self.n_candidates}"
                )

    @property
    def n_items(self) -> int:
        """Catalogue size."""
        return self.world.n_items

    @property
    def n_genres(self) -> int:
        """Number of genres."""
        return self.world.n_genres

    @property
    def n_choices(self) -> int:
        """What one action index ranges over: ``n_candidates`` in candidate mode, else ``n_items``."""
        return self.n_candidates if self.n_candidates else self.n_items

    @property
    def satiation_bound(self) -> float:
        """Upper bound of every satiation component: ``satiation_growth / (1 - satiation_decay)``."""
        return float(self.satiation_growth) / (1.0 - float(self.satiation_decay))

    @property
    def habit_bound(self) -> float:
        """Upper bound of every habit component: ``habit_growth / (1 - habit_decay)``."""
        return float(self.habit_growth) / (1.0 - float(self.habit_decay))

    @property
    def budget_bound(self) -> float:
        """Upper bound of the session budget over an episode (from the rating scale)."""
        gain = max(0.0, float(self.budget_satisfaction_weight) * (float(self.rating_max) - float(self.rating_min)) - 1.0)
        return float(self.initial_budget) + gain * self.max_episode_steps


def is_abstract(tree: Any) -> bool:
    """Whether ``tree`` holds tracers or shape-only placeholders (skip value checks)."""
    return any(isinstance(x, jax.core.Tracer | jax.ShapeDtypeStruct) for x in jax.tree_util.tree_leaves(tree))


def _require_int(name: str, value: Any, minimum: int) -> None:
    require(lambda v: is_int(v) and v >= minimum, name, value, f"an integer >= {minimum}")


@struct.dataclass
class MovieLensState:
    """Hidden state of one user's session (one env). Shapes for one env; vmapped states add a batch axis.

    Attributes:
        user: int32 scalar, world user index.
        time: int32 scalar, steps taken this episode.
        satiation: ``(n_genres,)`` float32 ``s`` (boredom).
        habit: ``(n_genres,)`` float32 ``h`` (addiction).
        budget: float32 scalar session budget ``b``.
        genre_affinity: ``(n_genres,)`` float32 genre part of the user vector (Fairness preset;
            constant in the other worlds).
        seen: ``(ceil(n_items / 32),)`` uint32 bitset of the items consumed (clicked) this
            session: item ``i`` is bit ``i % 32`` of word ``i // 32``. Exact for any session
            length (no ring-buffer limit); unpack it with ``(seen[i >> 5] >> (i & 31)) & 1``.
        history: ``(history_length, 3)`` float32 feedback of the recent interactions, most
            recent first: rating / rating_max (0 on a no-click), clicked (0/1), valid (0/1);
            zeros where there is no interaction yet.
        history_items: ``(history_length,)`` int32 item of each recent interaction (on a
            no-click, the most attractive slate item; 0 where ``valid`` is 0). The observation
            shows their features, looked up when observing.
        candidates: ``(n_candidates,)`` int32 item ids of the current candidates (candidate mode).
    """

    user: Any
    time: Any
    satiation: Any
    habit: Any
    budget: Any
    genre_affinity: Any
    seen: Any
    history: Any
    history_items: Any
    candidates: Any


PRESETS: dict[str, dict[str, Any]] = {
    # the full dynamic world: habit (addiction), satiation (boredom), session budget
    "dynamic": {},
    # no habit, no satiation, no boredom cost, fixed length: myopic greedy is optimal here
    "static": {
        "habit_satisfaction_weight": 0.0,
        "habit_growth": 0.0,
        "click_habit_weight": 0.0,
        "satiation_penalty": 0.0,
        "satiation_growth": 0.0,
        "click_satiation_weight": 0.0,
        "boredom_cost": 0.0,
        "session_budget": False,
        "max_episode_steps": 100,
    },
    # ML-Fairness-Gym's MovieLens: clip(dot([latent; genre] user, [latent; genre] item), 1, 5),
    # liked genres' affinity x (1 + delta), every recommended item consumed, 50 steps
    "fairness": {
        "utility_model": "fairness",
        "choice_model": "always",
        "rating_noise_std": 0.0,
        "habit_satisfaction_weight": 0.0,
        "habit_growth": 0.0,
        "satiation_penalty": 0.0,
        "satiation_growth": 0.0,
        "repeat_penalty": 0.0,
        "boredom_cost": 0.0,
        "session_budget": False,
        "fairness_delta": 1.0,
        "fairness_threshold": 3.0,
        "rating_min": 1.0,
        "rating_max": 5.0,
        "max_episode_steps": 50,
    },
}


_PARAM_FIELDS = {f.name for f in dataclasses.fields(MovieLensParams)} - {"world"}


def make_params(world: MovieLensWorld, preset: str = "dynamic", users: str = "train", **overrides: Any) -> MovieLensParams:
    """Params of a preset world over a built world, with any field overridden.

    Args:
        world: A :class:`~recgym.envs.movielens.world.MovieLensWorld` (see ``build_world``).
        preset: ``"dynamic"`` (default), ``"static"`` or ``"fairness"`` (see :data:`PRESETS`).
        users: Population episodes draw users from: ``"train"``, ``"test"`` or ``"all"``.
        **overrides: Any :class:`~recgym.envs.movielens.params.MovieLensParams` field.

    Returns:
        Validated :class:`MovieLensParams` (``ValueError`` names a bad field and value).
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    unknown = set(overrides) - _PARAM_FIELDS
    if unknown:
        raise TypeError(f"unknown MovieLens parameter(s) {sorted(unknown)}; valid: {sorted(_PARAM_FIELDS)}")
    values: dict[str, Any] = {"rating_min": world.rating_scale[0], "rating_max": world.rating_scale[1]}
    values.update(PRESETS[preset])
    values.update(overrides)
    pool = world.users_of(users)
    if len(pool) == 0:
        raise ValueError(f"the {users!r} population of this world is empty")
    n_candidates = values.get("n_candidates", 0)
    if isinstance(n_candidates, int | np.integer) and n_candidates > 0:
        candidate_pool = world.candidate_pool()
    else:
        candidate_pool = np.zeros((world.n_users, 0), dtype=np.int32)
    arrays = WorldArrays(
        global_mean=np.asarray(world.global_mean, dtype=np.float32),
        user_bias=world.user_bias,
        item_bias=world.item_bias,
        user_factors=world.user_factors,
        item_factors=world.item_factors,
        item_genres=world.item_genres,
        item_genre_flags=world.item_genre_flags,
        user_mean_utility=world.user_mean_utility,
        user_genre_affinity=world.user_genre_share,
        profile=np.concatenate([world.profile_genres, world.profile_embedding], axis=1).astype(np.float32),
        item_features=np.concatenate([world.item_genres, world.item_embedding], axis=1).astype(np.float32),
        user_pool=np.asarray(pool, dtype=np.int32),
        candidate_pool=candidate_pool,
    )
    return MovieLensParams(world=arrays, **values)
