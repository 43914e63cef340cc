"""The functional-environment base: dynamics written once, run on NumPy or on jax.numpy.

See :mod:`recgym.core` for how to build an environment on it.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, Generic, NamedTuple, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

StateT = TypeVar("StateT")
ParamsT = TypeVar("ParamsT")
PyTree = Any


class Transition(NamedTuple):
    """What :meth:`FunctionalEnv.transition` returns for one step of one environment.

    Fields: ``state`` (the next state), ``reward`` (scalar float32), ``terminated`` (scalar bool:
    the episode reached a terminal state of the MDP) and ``info`` (flat dict of per-step
    diagnostics, fixed shapes).
    """

    state: Any
    reward: Any
    terminated: Any
    info: dict[str, Any]


def is_traced(value: Any) -> bool:
    """Whether ``value`` is (or contains) a JAX tracer, i.e. its concrete value is unknown.

    Parameter validation runs only on concrete values: pytree dataclasses are rebuilt with tracers
    inside ``jit``/``vmap`` and must not fail there.
    """
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(value))


def require(condition: Callable[[Any], bool], field: str, value: Any, expected: str) -> None:
    """Raise ``ValueError`` naming ``field`` and ``value`` unless ``condition(value)`` holds.

    The one validation helper of recgym's parameters: every params and settings class checks its
    fields with it, so every message reads alike. Skipped when ``value`` is traced (see
    :func:`is_traced`).

    Args:
        condition: Predicate on the concrete value.
        field: Name of the parameter, used in the message.
        value: The value to check.
        expected: What a valid value looks like, e.g. ``"in [0, 1]"``.

    Raises:
        ValueError: ``"<field> must be <expected>, got <value>"``.
    """
    if is_traced(value):
        return
    ok = condition(value)
    if isinstance(ok, np.ndarray | jax.Array):
        ok = bool(np.all(np.asarray(ok)))
    if not ok:
        shown = value if np.ndim(value) == 0 else f"array of shape {np.shape(value)}"
        raise ValueError(f"{field} must be {expected}, got {shown!r}")


def is_int(x: Any) -> bool:
    """``True`` for a Python or NumPy integer that is not a bool (helper for :func:`require`)."""
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def finite(x: Any) -> bool:
    """``True`` when every element of ``x`` is finite (helper for :func:`require`)."""
    return bool(np.all(np.isfinite(np.asarray(x, dtype=np.float64))))


def as_jax(tree: Any) -> Any:
    """NumPy array leaves to JAX arrays (Python scalars and JAX values unchanged).

    Lets ``xp=jax.numpy`` code index params built with NumPy arrays under ``jit`` (a no-op for
    params that are already JAX arrays or tracers).
    """
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x) if isinstance(x, np.ndarray) else x, tree)


def episode_key_chain(key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Split an environment's running key into ``(next_key, reset_key, episode_key)``.

    This is the one key chain every adapter follows, so that the single gymnasium env, the native
    vector env and a hand-written JAX loop produce the same episode from the same seed: an episode
    starts from ``reset_key``; its step ``t`` uses ``jax.random.fold_in(episode_key, t)``; the next
    episode starts from ``next_key``.
    """
    next_key, reset_key, episode_key = jax.random.split(key, 3)
    return next_key, reset_key, episode_key


@struct.dataclass
class EnvCarry:
    """One environment's place on its key chain, and its state: what an auto-resetting step carries.

    Built by :meth:`FunctionalEnv.start`, advanced by :meth:`FunctionalEnv.step_autoreset` (agents,
    ``lax.scan``) or :meth:`FunctionalEnv.step_next_reset` (the native vector env). A pytree:
    ``vmap`` it over envs, ``scan`` it over steps. Fields for one env (vmapped carries add a
    leading axis):

    Attributes:
        key: The chain key the *next* episode starts from (see :func:`episode_key_chain`).
        episode_key: The current episode's key: step ``t`` draws its noise from
            ``fold_in(episode_key, t)``.
        state: The core state of the current episode.
        needs_reset: bool scalar. With next-step auto-reset (:meth:`FunctionalEnv.step_next_reset`,
            gymnasium's default for vector envs) ``True`` after the step that ended the episode:
            the next step starts a new episode instead. Always ``False`` with same-step auto-reset
            (:meth:`FunctionalEnv.step_autoreset`), which starts the new episode at once.
    """

    key: jax.Array
    episode_key: jax.Array
    state: Any
    needs_reset: jax.Array


class FunctionalEnv(abc.ABC, Generic[StateT, ParamsT]):
    """A pure environment whose dynamics are written once against an array namespace ``xp``.

    Subclasses implement the hooks below (all pure, no mutation, no hidden randomness); the base
    derives the gymnax-style JAX API (:meth:`reset`, :meth:`step`), the auto-resetting JAX API on
    the environment's key chain (:meth:`start`, :meth:`step_autoreset`, :meth:`step_next_reset`,
    carrying an :class:`EnvCarry`), the NumPy API used by the single gymnasium env
    (:meth:`reset_numpy`, :meth:`step_numpy`) and :meth:`episode_noise`, which draws whole
    episodes' noise with a single jitted call.

    Hooks:
        * :meth:`default_params` — the params instance used when ``params`` is ``None``.
        * :meth:`reset_noise` / :meth:`step_noise` — draw the noise of a reset / a step from a key
          with ``jax.random`` (a pytree of arrays with fixed shapes).
        * :meth:`init` — the initial state from reset noise (``xp``-generic).
        * :meth:`transition` — one step from step noise (``xp``-generic), returns a
          :class:`Transition`.
        * :meth:`observe` — the observation of a state (``xp``-generic).
        * :meth:`is_truncated` — defaults to ``state.time >= params.max_episode_steps``.
        * :meth:`observation_space` / :meth:`action_space` — gymnasium spaces of one env.
        * :meth:`prefetched_steps` / :meth:`numpy_step_noise` — how the single gymnasium env
          draws and hands out step noise (defaults suit most cores).

    The instance itself holds no mutable state; it may be captured by ``jit`` freely. Everything
    that varies (the world, coefficients, shapes) lives in ``params``.
    """

    # ----------------------------------------------------------------- hooks (subclass)
    @abc.abstractmethod
    def default_params(self) -> ParamsT:
        """The default parameters of this environment."""

    @abc.abstractmethod
    def reset_noise(self, key: jax.Array, params: ParamsT) -> dict[str, jax.Array]:
        """Draw the noise a reset consumes: a flat dict of arrays (``jax.random`` only)."""

    @abc.abstractmethod
    def step_noise(self, key: jax.Array, params: ParamsT) -> dict[str, jax.Array]:
        """Draw the noise one step consumes: a flat dict of arrays (``jax.random`` only)."""

    @abc.abstractmethod
    def init(self, xp: Any, noise: PyTree, params: ParamsT, options: dict | None = None) -> StateT:
        """Initial state from reset noise; ``options`` are the gymnasium reset options."""

    @abc.abstractmethod
    def transition(self, xp: Any, state: StateT, action: Any, noise: PyTree, params: ParamsT) -> Transition:
        """One step: next state, reward, terminated flag and info, from the step noise."""

    @abc.abstractmethod
    def observe(self, xp: Any, state: StateT, params: ParamsT) -> Any:
        """Observation of ``state`` (matches :meth:`observation_space`)."""

    def is_truncated(self, xp: Any, state: StateT, params: ParamsT) -> Any:
        """Whether the time limit is reached (after the step that produced ``state``)."""
        return state.time >= params.max_episode_steps

    @abc.abstractmethod
    def observation_space(self, params: ParamsT):
        """The gymnasium space of one observation."""

    @abc.abstractmethod
    def action_space(self, params: ParamsT):
        """The gymnasium space of one action."""

    def check_action(self, action: Any, params: ParamsT, batch_size: int | None = None) -> np.ndarray:
        """Validate an action from the gymnasium API and return it as a NumPy array.

        The default checks membership of :meth:`action_space` (batched when ``batch_size`` is
        given); subclasses override it to name the problem precisely.

        Raises:
            ValueError: The action is not valid.
        """
        space = self.action_space(params)
        arr = np.asarray(action)
        items = [arr] if batch_size is None else list(arr)
        if batch_size is not None and len(items) != batch_size:
            raise ValueError(f"expected a batch of {batch_size} actions, got {len(items)}")
        for a in items:
            if not space.contains(a):
                raise ValueError(f"action {a!r} is not in the action space {space}")
        return arr

    def reset_info(self, xp: Any, state: StateT, params: ParamsT) -> dict[str, Any]:
        """The ``info`` dict returned by a reset (default: empty)."""
        return {}

    def batch_options(self, options: dict | None, num_envs: int, params: ParamsT) -> dict | None:
        """Turn gymnasium reset ``options`` into per-env arrays (leading axis ``num_envs``).

        The default accepts only ``None``; subclasses supporting options override it.
        """
        if options:
            raise ValueError(f"unsupported reset options {sorted(options)}")
        return None

    # ----------------------------------------------------------------- JAX API (gymnax contract)
    def _params(self, params: ParamsT | None) -> ParamsT:
        return as_jax(self.default_params() if params is None else params)

    def prefetched_steps(self, params: ParamsT) -> int:
        """Steps of noise the single gymnasium env draws with each episode, at reset.

        Later steps of a longer episode draw theirs in one more call when they get there (same key
        chain, same values). The default, 32 (at most the time limit), suits episodes that often
        end early; a core whose episodes usually run to the limit returns the limit (one jitted
        call per episode instead of two).
        """
        return min(32, int(params.max_episode_steps))

    def numpy_step_noise(self, block: dict[str, np.ndarray]) -> dict[str, Any]:
        """One episode's step noise as the NumPy backend consumes it (``block[name][t]`` is step ``t``).

        ``block`` holds NumPy arrays with a leading step axis; the default hands them over as they
        are. A core whose single-env dynamics run on Python numbers (:mod:`recgym.core.pyscalar`)
        returns nested lists (``.tolist()``), saving two conversions per step.
        """
        return block

    def reset(self, key: jax.Array, params: ParamsT | None = None, options: dict | None = None):
        """Start an episode from reset key ``key``: ``(obs, state)`` (gymnax style).

        Pure, jittable, vmappable over ``key``. ``key`` is used as the episode's reset key as it
        is; to replay what a seeded gymnasium env gives, use :meth:`start` (the key chain).
        """
        params = self._params(params)
        state = self.init(jnp, self.reset_noise(key, params), params, options)
        return self.observe(jnp, state, params), state

    def step(self, key: jax.Array, state: StateT, action: Any, params: ParamsT | None = None):
        """One step without auto-reset, drawing its noise from ``key`` (gymnax style).

        Returns:
            ``(obs, state, reward, terminated, truncated, info)``; ``terminated`` and ``truncated``
            are separate scalar bools (``truncated`` only from the time limit).
        """
        params = self._params(params)
        return self._step_from_noise(jnp, state, action, self.step_noise(key, params), params)

    def start(self, key: jax.Array, params: ParamsT | None = None, options: dict | None = None):
        """The first episode of an environment whose running key is ``key``: ``(obs, carry)``.

        With ``key = PRNGKey(seed)`` (:func:`recgym.core.seed_key`) this is the episode that
        ``env.reset(seed=seed)`` gives on the single gymnasium env, and env ``i`` of a vector env
        reset with ``seed - i``: all three follow :func:`episode_key_chain`. Pure, jittable,
        vmappable over ``key`` (and ``options``).

        Returns:
            ``(obs, carry)``, ``carry`` an :class:`EnvCarry` for :meth:`step_autoreset`.
        """
        params = self._params(params)
        next_key, reset_key, episode_key = episode_key_chain(key)
        state = self.init(jnp, self.reset_noise(reset_key, params), params, options)
        carry = EnvCarry(key=next_key, episode_key=episode_key, state=state, needs_reset=jnp.asarray(False))
        return self.observe(jnp, state, params), carry

    def _advance(self, carry: EnvCarry, action: Any, params: ParamsT):
        """One step of the current episode, and the next episode's start, both from the key chain."""
        state = carry.state
        noise = self.step_noise(jax.random.fold_in(carry.episode_key, state.time), params)
        stepped, reward, terminated, info = self.transition(jnp, state, action, noise, params)
        truncated = self.is_truncated(jnp, stepped, params)
        next_key, reset_key, next_episode_key = episode_key_chain(carry.key)
        fresh = self.init(jnp, self.reset_noise(reset_key, params), params, None)
        return stepped, reward, terminated, truncated, info, fresh, next_key, next_episode_key

    @staticmethod
    def _pick(condition, if_true, if_false):
        return jax.tree_util.tree_map(lambda a, b: jnp.where(condition, a, b), if_true, if_false)

    def step_autoreset(self, carry: EnvCarry, action: Any, params: ParamsT | None = None):
        """One step with same-step auto-reset (gymnax style), on the environment's key chain.

        Where the episode ended, the returned observation and carry are the next episode's first
        (drawn from ``carry.key`` as :func:`episode_key_chain` says); the reward, flags and info are
        those of the finished step, and ``info["final_obs"]`` holds the observation of the state
        the step reached (the pre-reset observation; equal to ``obs`` where the episode goes on):
        bootstrap from it on truncation. Under ``jit`` unused outputs cost nothing.

        A seed replays one trajectory on every path: ``start(PRNGKey(s))`` then ``step_autoreset``
        gives, step for step, what ``gym.make(...).reset(seed=s)`` / ``step`` and env 0 of a vector
        env reset with ``seed=s`` give (given the same actions).

        Returns:
            ``(obs, carry, reward, terminated, truncated, info)``: ``terminated`` and ``truncated``
            are separate scalar bools (``truncated`` only from the time limit).
        """
        params = self._params(params)
        stepped, reward, terminated, truncated, info, fresh, next_key, next_episode_key = self._advance(
            carry, action, params)
        done = jnp.logical_or(terminated, truncated)
        carry = EnvCarry(
            key=jnp.where(done, next_key, carry.key),
            episode_key=jnp.where(done, next_episode_key, carry.episode_key),
            state=self._pick(done, fresh, stepped),
            needs_reset=jnp.asarray(False),
        )
        info = dict(info, final_obs=self.observe(jnp, stepped, params))
        return self.observe(jnp, carry.state, params), carry, reward, terminated, truncated, info

    def step_next_reset(self, carry: EnvCarry, action: Any, params: ParamsT | None = None):
        """One step with next-step auto-reset (gymnasium's vector-env default), on the key chain.

        Where ``carry.needs_reset`` (the previous step ended the episode) the action is ignored and
        the env starts its next episode: the first observation, reward 0 and both flags ``False``.
        Otherwise the episode steps, and ``needs_reset`` records whether it ended.

        Returns:
            ``(obs, carry, reward, terminated, truncated, info, stepped)``; ``stepped`` is ``False``
            where this call reset the env instead of stepping it (its ``info`` is then meaningless).
        """
        params = self._params(params)
        reset = carry.needs_reset
        stepped, reward, terminated, truncated, info, fresh, next_key, next_episode_key = self._advance(
            carry, action, params)
        terminated = jnp.logical_and(terminated, ~reset)
        truncated = jnp.logical_and(truncated, ~reset)
        carry = EnvCarry(
            key=jnp.where(reset, next_key, carry.key),
            episode_key=jnp.where(reset, next_episode_key, carry.episode_key),
            state=self._pick(reset, fresh, stepped),
            needs_reset=jnp.logical_or(terminated, truncated),
        )
        reward = jnp.where(reset, jnp.zeros_like(reward), reward)
        return self.observe(jnp, carry.state, params), carry, reward, terminated, truncated, info, ~reset

    # ----------------------------------------------------------------- NumPy API (single env)
    def reset_numpy(self, noise: PyTree, params: ParamsT, options: dict | None = None):
        """:meth:`reset` on NumPy from pre-drawn reset noise: ``(obs, state)``."""
        state = self.init(np, noise, params, options)
        return self.observe(np, state, params), state

    def step_numpy(self, state: StateT, action: Any, noise: PyTree, params: ParamsT):
        """:meth:`step` on NumPy from pre-drawn step noise (same return as :meth:`step`)."""
        return self._step_from_noise(np, state, action, noise, params)

    def _step_from_noise(self, xp, state, action, noise, params):
        next_state, reward, terminated, info = self.transition(xp, state, action, noise, params)
        truncated = self.is_truncated(xp, next_state, params)
        return self.observe(xp, next_state, params), next_state, reward, terminated, truncated, info

    # ----------------------------------------------------------------- noise for NumPy adapters
    def episode_noise(self, key: jax.Array, params: ParamsT, n_steps: int, n_episodes: int = 1,
                      with_keys: bool = False):
        """Draw the noise of ``n_episodes`` consecutive episodes with one jitted call.

        Follows :func:`episode_key_chain` episode after episode: episode ``e`` starts from the
        ``next_key`` of episode ``e - 1``; its reset noise comes from its ``reset_key`` and its step
        ``t`` noise from ``fold_in(episode_key, t)`` for ``t < n_steps``.

        Args:
            with_keys: Also return each episode's ``episode_key`` (leading axis ``n_episodes``), to
                draw its later steps with :meth:`step_noise_range`.

        Returns:
            ``(next_key, (reset_noise, step_noise))`` (``(next_key, (reset_noise, step_noise,
            episode_keys))`` with ``with_keys``): leaves with leading axes ``(n_episodes,)`` and
            ``(n_episodes, n_steps)``; ``next_key`` starts the episode after the last.
        """
        noise_params = self.noise_params(params)
        try:
            hash(noise_params)
        except TypeError:  # unhashable: trace the params (one compilation per params structure)
            next_key, (resets, steps, keys) = _episode_noise_traced(self, key, noise_params, n_steps, n_episodes)
        else:
            next_key, (resets, steps, keys) = _episode_noise_static(self, key, noise_params, n_steps, n_episodes)
        return (next_key, (resets, steps, keys)) if with_keys else (next_key, (resets, steps))

    def step_noise_range(self, episode_key: jax.Array, params: ParamsT, start: int, stop: int):
        """The noise of steps ``start <= t < stop`` of the episode with ``episode_key`` (one jitted call).

        The same values as :meth:`episode_noise` draws for those steps (``fold_in(episode_key, t)``):
        leaves with leading axis ``stop - start``.
        """
        noise_params = self.noise_params(params)
        try:
            hash(noise_params)
        except TypeError:
            return _step_noise_range_traced(self, episode_key, noise_params, start, stop)
        return _step_noise_range_static(self, episode_key, noise_params, start, stop)

    def noise_params(self, params: ParamsT) -> Any:
        """What :meth:`reset_noise` / :meth:`step_noise` need of ``params`` (default: all of it).

        Return a small hashable object (e.g. a ``NamedTuple`` of the noise shapes) to compile the
        episode-noise draw once per noise shape rather than once per params structure; the noise
        hooks then receive it in place of ``params`` when :meth:`episode_noise` draws.
        """
        return params

    # Cores compare equal by type so that jitted functions taking the core as a static argument
    # are compiled once per environment class and params structure, not once per instance.
    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


def _episode_noise(core: FunctionalEnv, key, params, n_steps: int, n_episodes: int):
    def one_episode(key, _):
        next_key, reset_key, episode_key = episode_key_chain(key)
        step_keys = jax.vmap(lambda t: jax.random.fold_in(episode_key, t))(jnp.arange(n_steps))
        reset = core.reset_noise(reset_key, params)
        steps = jax.vmap(lambda k: core.step_noise(k, params))(step_keys)
        return next_key, (reset, steps, episode_key)

    return jax.lax.scan(one_episode, key, None, length=n_episodes)


def _step_noise_range(core: FunctionalEnv, episode_key, params, start: int, stop: int):
    step_keys = jax.vmap(lambda t: jax.random.fold_in(episode_key, t))(jnp.arange(start, stop))
    return jax.vmap(lambda k: core.step_noise(k, params))(step_keys)


_episode_noise_static = jax.jit(_episode_noise, static_argnums=(0, 2, 3, 4))
_episode_noise_traced = jax.jit(_episode_noise, static_argnums=(0, 3, 4))
_step_noise_range_static = jax.jit(_step_noise_range, static_argnums=(0, 2, 3, 4))
_step_noise_range_traced = jax.jit(_step_noise_range, static_argnums=(0, 3, 4))
