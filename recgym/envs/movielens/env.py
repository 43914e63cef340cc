"""Gymnasium adapters of the MovieLens simulator: ``MovieLensEnv`` and ``MovieLensVectorEnv``."""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from recgym.core import FunctionalGymEnv, FunctionalVectorEnv
from recgym.envs.movielens.dynamics import MovieLensCore, boredom_cost, true_utilities
from recgym.envs.movielens.params import make_params
from recgym.envs.movielens.world import MovieLensWorld, WorldSettings, build_world


def _world_and_params(dataset, preset, users, world_settings, synthetic_seed, overrides):
    if isinstance(dataset, MovieLensWorld):
        world = dataset
    else:
        settings = WorldSettings(**(world_settings or {}))
        world = build_world(dataset if isinstance(dataset, str) else os.fspath(dataset), settings,
                            synthetic_seed=synthetic_seed)
    return world, make_params(world, preset, users, **overrides)


class MovieLensEnv(FunctionalGymEnv):
    """RecGym-MovieLens: a MovieLens user whose tastes drift with what they are recommended.

    The full card, with the generated observation table and every parameter, is
    docs/environments/movielens.md; this docstring follows the same order.

    **Description.** Each episode is one session of one MovieLens user (train or test
    population). Their hidden utility of item ``i`` is a biased MF ``v(u, i)`` fitted on the
    ratings; consuming items builds *habit* ``h`` (addiction: liked genres become more attractive
    and a little more satisfying) and *satiation* ``s`` (boredom: repeated genres please less and
    cost session budget). The user leaves when the session budget ``b`` runs out.

    **Action Space.** ``Discrete(n_items)`` (one item), ``Slate(n_items, k)`` for
    ``slate_size=k`` (:class:`recgym.spaces.Slate`: a ``MultiDiscrete([n_items] * k)`` whose
    samples and members hold distinct items), or indices into the ``n_candidates`` current candidates in
    candidate mode. Invalid actions raise ``ValueError`` naming the problem.

    **Observation Space.** ``Box`` float32: logged genre preference (``n_genres``) and logged CF
    embedding of the user; for each of the last ``history_length`` interactions the item's genre
    vector and logged embedding, rating / rating_max, clicked and valid flags; the elapsed time
    fraction; optionally (``observe_hidden``) satiation, habit and budget; optionally the
    candidates' features. See :func:`~recgym.envs.movielens.observation_layout`.

    **Rewards.** The consumed item's satisfaction (rating units; 0 without a click), or 1 per
    click with ``reward_type="click"``.

    **Starting State.** A random user of the population (or ``options={"user_id": u}``), zero
    habit and satiation, budget ``initial_budget``, empty history.

    **Episode End.** Termination: ``budget <= 0``. Truncation: ``max_episode_steps`` (200; 100 in
    the static world, 50 in the Fairness world).

    **Arguments.**

    Args:
        dataset: A data-layer name (``"ml-latest-small"``, ``"ml-100k"``, ...), ``"synthetic"``, a
            path to MovieLens files, or a built :class:`MovieLensWorld`.
        preset: ``"dynamic"``, ``"static"`` or ``"fairness"``.
        users: ``"train"`` (default), ``"test"`` or ``"all"``.
        world_settings: Dict of :class:`WorldSettings` fields.
        synthetic_seed: Seed of the synthetic dataset.
        render_mode: Unused.
        **params: Any :class:`MovieLensParams` field (``slate_size``, ``n_candidates``,
            ``observe_hidden``, ``reward_type``, coefficients...).

    **Presets.** ``dynamic`` (default); ``static`` (no habit, no satiation, no budget, 100 steps);
    ``fairness`` (ML-Fairness-Gym's deterministic ``clip(dot(user, item), 1, 5)`` rule, liked
    genres' affinity times ``1 + delta``, every item consumed, 50 steps).

    **Vectorized.** :class:`MovieLensVectorEnv` via ``gym.make_vec(...,
    vectorization_mode="vector_entry_point")`` (next-step auto-reset); the pure JAX core is
    :class:`~recgym.envs.movielens.MovieLensCore`.

    **Version History.** v0: initial release.

    Example:
        >>> import gymnasium as gym
        >>> import recgym
        >>> env = gym.make("RecGym-MovieLens-v0", dataset="synthetic")
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape == env.observation_space.shape and obs.dtype.name
        'float32'
        >>> obs, reward, terminated, truncated, info = env.step(0)
        >>> sorted(info)[:4]
        ['budget', 'clicked', 'clicked_item', 'habit']
    """

    def __init__(self, dataset: str | os.PathLike | MovieLensWorld = "ml-latest-small", preset: str = "dynamic",
                 users: str = "train", world_settings: dict | None = None, synthetic_seed: int = 0,
                 render_mode: str | None = None, **params: Any):
        self.world, p = _world_and_params(dataset, preset, users, world_settings, synthetic_seed, params)
        super().__init__(MovieLensCore(p), p, render_mode)

    def true_utilities(self) -> np.ndarray:
        """``(n_items,)`` the current user's current true utilities (privileged; see ``true_utilities``)."""
        if self.state is None:
            raise RuntimeError("call reset() first")
        return true_utilities(np, self.state, self._params_np)

    def boredom_cost(self) -> np.ndarray:
        """``(n_items,)`` immediate budget cost of the satiation each item would add (privileged)."""
        if self.state is None:
            raise RuntimeError("call reset() first")
        return boredom_cost(np, self.state, self._params_np)


class MovieLensVectorEnv(FunctionalVectorEnv):
    """``num_envs`` MovieLens users stepped by one jitted call (next-step auto-reset).

    Same arguments as :class:`MovieLensEnv`, plus ``num_envs``.
    """

    def __init__(self, num_envs: int, dataset: str | os.PathLike | MovieLensWorld = "ml-latest-small",
                 preset: str = "dynamic", users: str = "train", world_settings: dict | None = None,
                 synthetic_seed: int = 0, render_mode: str | None = None, **params: Any):
        self.world, p = _world_and_params(dataset, preset, users, world_settings, synthetic_seed, params)
        super().__init__(MovieLensCore(p), num_envs, p, render_mode)
        self._utilities = jax.jit(jax.vmap(lambda s, p: true_utilities(jnp, s, p), in_axes=(0, None)))
        self._boredom = jax.jit(jax.vmap(lambda s, p: boredom_cost(jnp, s, p), in_axes=(0, None)))

    def true_utilities(self) -> np.ndarray:
        """``(num_envs, n_items)`` current true utilities of every env's user (privileged)."""
        if self.state is None:
            raise RuntimeError("call reset() first")
        return np.asarray(self._utilities(self.state, self._params_jax))

    def boredom_cost(self) -> np.ndarray:
        """``(num_envs, n_items)`` immediate budget cost of boredom per item (privileged)."""
        if self.state is None:
            raise RuntimeError("call reset() first")
        return np.asarray(self._boredom(self.state, self._params_jax))
