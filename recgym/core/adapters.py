"""Thin gymnasium adapters over a :class:`~recgym.core.functional.FunctionalEnv`.

* :class:`FunctionalGymEnv` — one environment, stepping the dynamics with NumPy on noise drawn for
  the whole episode at reset by one jitted ``jax.random`` call (same key chain as the JAX path).
* :class:`FunctionalVectorEnv` — ``num_envs`` environments stepped by one jitted, vmapped JAX call
  per vector step, with gymnasium's next-step auto-reset.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
from gymnasium.envs.registration import EnvSpec
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from recgym.core.functional import EnvCarry, FunctionalEnv


def seed_key(seed: int) -> jax.Array:
    """The root key of an environment seeded with ``seed`` (a raw ``uint32[2]`` key)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return jax.random.PRNGKey(int(seed))


def _to_numpy(tree: Any) -> Any:
    """JAX arrays to NumPy; Python scalars stay Python scalars (weakly typed: they keep float32
    arithmetic float32 under NumPy 2's promotion rules, as JAX's weak types do)."""
    return jax.tree_util.tree_map(lambda x: np.asarray(x) if isinstance(x, jax.Array) else x, tree)


def _with_core_limit(spec: EnvSpec | None, params: Any) -> EnvSpec | None:
    """``spec`` reporting the core's own time limit as ``max_episode_steps``.

    recgym's registrations add no ``TimeLimit``: every core truncates itself at its params'
    ``max_episode_steps``, which a preset or a keyword may change (``gym.make(id, preset="static")``
    truncates at 100, ``max_episode_steps=300`` as a params keyword of the env class at 300). The
    spec gymnasium attaches to the made env then says what the env does.
    """
    limit = int(params.max_episode_steps)
    if spec is None or spec.max_episode_steps == limit:
        return spec
    return dataclasses.replace(spec, max_episode_steps=limit)


class FunctionalGymEnv(gym.Env):
    """A gymnasium env driving one episode of a functional core with NumPy.

    One jitted call draws the reset noise and the noise of every step up to the core's time limit
    for the next :attr:`EPISODE_BLOCK` episodes of the key chain
    (:meth:`FunctionalEnv.episode_noise`); each step then runs the core's
    ``xp``-generic transition with ``xp=numpy`` on slices of that block. The trajectory equals the
    JAX path's (:meth:`FunctionalEnv.step` with ``fold_in(episode_key, t)`` keys) up to float
    rounding.

    Args:
        core: The functional environment.
        params: Its parameters (``None``: ``core.default_params()``).
        render_mode: Unused (no rendering); kept for gymnasium's signature.
    """

    metadata: dict[str, Any] = {"render_modes": []}
    #: Episodes whose noise one jitted call draws (amortises the 100-300 µs of a JAX call).
    EPISODE_BLOCK = 32

    def __init__(self, core: FunctionalEnv, params: Any = None, render_mode: str | None = None):
        self.core = core
        self.params = core.default_params() if params is None else params
        self.render_mode = render_mode
        self._params_np = _to_numpy(self.params)
        self._params_jax = jax.device_put(self.params)
        self.observation_space = core.observation_space(self.params)
        self.action_space = core.action_space(self.params)
        self._n_noise = int(self.params.max_episode_steps)
        self._first_steps = min(self._n_noise, int(core.prefetched_steps(self.params)))
        self._buffer: list | None = None
        self._key: jax.Array | None = None
        self._state = None
        self._noise: dict[str, Any] | None = None
        self._noise_len = 0
        self._episode_key = None

    @property
    def state(self):
        """The current core state (NumPy leaves); ``None`` before the first reset."""
        return self._state

    @property
    def spec(self) -> EnvSpec | None:
        """The registration's spec, with ``max_episode_steps`` = the core's own time limit."""
        return self.__dict__.get("_spec")

    @spec.setter
    def spec(self, spec: EnvSpec | None) -> None:
        self._spec = _with_core_limit(spec, self.params)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode; ``seed`` fixes the whole trajectory (given the actions)."""
        super().reset(seed=seed)
        if seed is not None:
            self._key = seed_key(seed)
            self._buffer = None
        elif self._key is None:
            self._key = seed_key(int(self.np_random.integers(2**31 - 1)))
        if not self._buffer:  # draw the next EPISODE_BLOCK episodes' noise in one jitted call
            self._key, (resets, steps, keys) = self.core.episode_noise(
                self._key, self._params_jax, self._first_steps, self.EPISODE_BLOCK, with_keys=True
            )
            resets, steps, keys = jax.device_get((resets, steps, keys))
            self._buffer = [
                ({k: v[e] for k, v in resets.items()}, {k: v[e] for k, v in steps.items()}, keys[e])
                for e in range(self.EPISODE_BLOCK)
            ][::-1]
        reset_noise, noise, self._episode_key = self._buffer.pop()
        self._noise = self.core.numpy_step_noise(noise)
        self._noise_len = self._first_steps
        obs, self._state = self.core.reset_numpy(reset_noise, self._params_np, options)
        return obs, self.core.reset_info(np, self._state, self._params_np)

    def step(self, action):
        """Validate ``action`` (``ValueError`` naming the problem), then advance one step."""
        if self._state is None:
            raise gym.error.ResetNeeded("Cannot call step() before reset().")
        t = int(self._state.time)
        if t >= self._n_noise:
            raise gym.error.ResetNeeded(
                f"The episode reached its time limit ({self._n_noise} steps); call reset()."
            )
        action = self.core.check_action(action, self._params_np)
        if t >= self._noise_len:  # a long episode: draw the rest of its noise (same key chain)
            rest = jax.device_get(self.core.step_noise_range(
                self._episode_key, self._params_jax, self._noise_len, self._n_noise))
            rest = self.core.numpy_step_noise(rest)
            self._noise = {k: v + rest[k] if isinstance(v, list) else np.concatenate([v, rest[k]])
                           for k, v in self._noise.items()}
            self._noise_len = self._n_noise
        noise = {name: block[t] for name, block in self._noise.items()}
        obs, self._state, reward, terminated, truncated, info = self.core.step_numpy(
            self._state, action, noise, self._params_np
        )
        return obs, float(reward), bool(terminated), bool(truncated), info


class FunctionalVectorEnv(VectorEnv):
    """A native gymnasium vector env: ``num_envs`` copies of a core stepped by one jitted call.

    Environment ``i`` follows exactly the key chain of a single :class:`FunctionalGymEnv` seeded
    with ``seed + i``, so the vector env reproduces ``num_envs`` single envs (up to float rounding
    between the JAX and NumPy backends).

    Auto-reset follows gymnasium's default :attr:`~gymnasium.vector.AutoresetMode.NEXT_STEP`: after
    an env's episode ends, its next ``step`` ignores the action, resets it and returns the first
    observation of the new episode with reward 0 and both flags ``False``.

    Args:
        core: The functional environment.
        num_envs: Number of environments.
        params: Parameters shared by every env (``None``: ``core.default_params()``).
        render_mode: Unused.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, core: FunctionalEnv, num_envs: int, params: Any = None, render_mode: str | None = None):
        if isinstance(num_envs, bool) or not isinstance(num_envs, int | np.integer) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        self.core = core
        self.num_envs = int(num_envs)
        self.params = core.default_params() if params is None else params
        self.render_mode = render_mode
        self._params_np = _to_numpy(self.params)
        self._params_jax = jax.device_put(self.params)
        self.single_observation_space = core.observation_space(self.params)
        self.single_action_space = core.action_space(self.params)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._carry = None
        self._root_seed: int | None = None

    # gymnasium API --------------------------------------------------------------------------
    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        """Reset every env; env ``i`` is seeded with ``seed + i`` (or ``seed[i]``)."""
        if seed is None:
            if self._root_seed is None:
                self._root_seed = int(np.random.default_rng().integers(2**31 - self.num_envs))
            else:  # a fresh, still reproducible, batch of episodes
                self._root_seed = (self._root_seed + self.num_envs) % (2**31 - self.num_envs)
            seeds = [self._root_seed + i for i in range(self.num_envs)]
        elif isinstance(seed, int | np.integer):
            self._root_seed = int(seed)
            seeds = [int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = [int(s) for s in seed]
            if len(seeds) != self.num_envs:
                raise ValueError(f"seed list must have num_envs={self.num_envs} entries, got {len(seeds)}")
        keys = jnp.stack([seed_key(s) for s in seeds])
        batched_options = self.core.batch_options(options, self.num_envs, self._params_np)
        obs, self._carry = _vector_reset(self.core, keys, self._params_jax, batched_options)
        state = self._carry.state
        info = self.core.reset_info(jnp, state, self._params_jax)
        return np.asarray(obs), _to_numpy(info)

    def step(self, actions):
        """Validate the batch of actions, then step every env (next-step auto-reset)."""
        if self._carry is None:
            raise gym.error.ResetNeeded("Cannot call step() before reset().")
        actions = self.core.check_action(actions, self._params_np, batch_size=self.num_envs)
        obs, self._carry, reward, terminated, truncated, info, stepped = _vector_step(
            self.core, self._carry, self._params_jax, actions
        )
        # one device-to-host transfer of the whole tree; the state stays on the device
        obs, reward, terminated, truncated, info, stepped = jax.device_get(
            (obs, reward, terminated, truncated, info, stepped)
        )
        info.update({f"_{name}": stepped for name in list(info)})  # one mask shared by every key
        return obs, reward, terminated, truncated, info

    @property
    def state(self):
        """The batched core state (JAX leaves with a leading ``num_envs`` axis).

        The next :meth:`step` donates these buffers (updated in place): copy what you want to
        keep past it (e.g. ``jax.device_get(env.state)``).
        """
        return None if self._carry is None else self._carry.state

    @property
    def spec(self) -> EnvSpec | None:
        """The registration's spec, with ``max_episode_steps`` = the core's own time limit."""
        return self.__dict__.get("_spec")

    @spec.setter
    def spec(self, spec: EnvSpec | None) -> None:
        self._spec = _with_core_limit(spec, self.params)

    @property
    def carry(self) -> EnvCarry | None:
        """Every env's :class:`~recgym.core.EnvCarry` (key chain and state, leading ``num_envs``
        axis); ``None`` before the first reset. Donated by the next :meth:`step`, like :attr:`state`."""
        return self._carry


# The vector env's jitted functions take the core as a static argument (cores compare equal by
# type), so every vector env of one class and params structure shares one compilation. Both are
# the core's own key-chain functions, vmapped: the vector env adds nothing to the dynamics.
@functools.partial(jax.jit, static_argnums=0)
def _vector_reset(core, keys, params, options):
    return jax.vmap(lambda k, o: core.start(k, params, o))(keys, options)


# the carry (keys and state, a few MB for thousands of envs) is donated: updated in place
@functools.partial(jax.jit, static_argnums=0, donate_argnums=1)
def _vector_step(core, carry, params, actions):
    return jax.vmap(lambda c, a: core.step_next_reset(c, a, params))(carry, actions)
