"""The exact optimum of RecGym-Pipeline-v0 as evaluation instrumentation: two gymnasium wrappers.

Every policy of the pipeline environment is scored as *efficiency* = throughput / optimum. The
optimum is not part of the dynamics (an agent never sees it) and costs a NumPy search per
episode and condition, so it lives in wrappers that evaluation adds and training leaves out:

* :class:`PipelineOptimum` wraps the single env (:class:`~recgym.envs.pipeline.env.PipelineEnv`);
* :class:`PipelineVectorOptimum` wraps the native vector env
  (:class:`~recgym.envs.pipeline.env.PipelineVectorEnv`).

Both add to ``info``, at reset and after every step, ``optimum`` (samples/s: the best throughput
any configuration reaches in the interval's conditions), ``efficiency`` (the interval's true
throughput / ``optimum``; 0 when nothing fits in memory) and ``optimal_action`` (that best
configuration as an ``absolute``-mode action, int64 ``(8,)``, whatever the env's action mode).

``gym.make("RecGym-Pipeline-v0", track_optimum=True)`` and ``gym.make_vec(..., track_optimum=True)``
apply them; plain ``gym.make("RecGym-Pipeline-v0")`` does not, so training code pays nothing.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import jax
import numpy as np
from gymnasium.vector import VectorEnv, VectorWrapper

from recgym.core import FunctionalGymEnv, FunctionalVectorEnv
from recgym.envs.pipeline import dynamics
from recgym.envs.pipeline.core import PipelineCore
from recgym.envs.pipeline.dynamics import PipelineWorld
from recgym.envs.pipeline.optimum import optimum
from recgym.envs.pipeline.params import NUM_STAGES, PipelineParams


def _pipeline_base(env: gym.Env | VectorEnv, adapter: type, wrapper: str, expected: str) -> Any:
    """The unwrapped env under ``env``, checked to be a RecGym-Pipeline-v0 ``adapter``."""
    base = env.unwrapped
    if not (isinstance(base, adapter) and isinstance(base.core, PipelineCore)):
        raise TypeError(f"{wrapper} wraps a RecGym-Pipeline-v0 {expected}, got {type(base).__name__}")
    return base


def _as_arrays(world: PipelineWorld) -> PipelineWorld:
    """One env's world (Python numbers) as float32 arrays, as the NumPy search takes it (unbatched:
    a third cheaper than a batch of one, with the same float32 arithmetic and result)."""
    return PipelineWorld(**{name: np.asarray(getattr(world, name), dtype=np.float32)
                            for name in PipelineWorld.__dataclass_fields__})


class _EpisodeOptima:
    """The optimum of each of an episode's (at most four) conditions, computed on first use (NumPy).

    Conditions with equal values share one search: e.g. in ``steady`` the change event changes
    nothing, so an episode needs one optimum, not two.
    """

    def __init__(self, params: PipelineParams):
        self.params = params
        self.world = None
        self.by_flags: dict[tuple[bool, bool], tuple[float, np.ndarray]] = {}
        self.by_value: dict[tuple, tuple[float, np.ndarray]] = {}

    def new_episode(self, world: PipelineWorld) -> None:
        self.world = world
        self.by_flags = {}
        self.by_value = {}

    def get(self, after_change: bool, neighbour_on: bool) -> tuple[float, np.ndarray]:
        """``(optimal throughput, optimal absolute action)`` in these conditions."""
        flags = (bool(after_change), bool(neighbour_on))
        found = self.by_flags.get(flags)
        if found is None:
            cond = dynamics.conditions(np, self.world, *flags)
            value = (tuple(cond.cpu_seconds), float(cond.available_cores), float(cond.memory_cap_gib))
            found = self.by_value.get(value)
            if found is None:
                best = optimum(self.params, _as_arrays(self.world), after_change=flags[0], neighbour_on=flags[1])
                found = self.by_value[value] = (float(best.throughput), best.absolute_action(self.params))
            self.by_flags[flags] = found
        return found


class PipelineOptimum(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Adds the exact optimum to the ``info`` of a single RecGym-Pipeline-v0 env.

    At reset and after every step ``info`` gains ``optimum`` (float, samples/s), ``efficiency``
    (float, ``info["throughput"] / optimum``, 0 when nothing fits) and ``optimal_action`` (int64
    ``(8,)``, an ``absolute``-mode action). The optimum is that of the conditions the interval ran
    in (before / after the change event, neighbour on / off), searched with NumPy once per episode
    and distinct condition value (about half a millisecond each), when first needed.

    ``gym.make("RecGym-Pipeline-v0", track_optimum=True)`` returns the env wrapped in it (under
    gymnasium's own wrappers); it also wraps any env whose :attr:`~gymnasium.Env.unwrapped` is a
    :class:`~recgym.envs.pipeline.env.PipelineEnv`.

    Args:
        env: A RecGym-Pipeline-v0 single env (possibly wrapped).

    Raises:
        TypeError: ``env`` is not a RecGym-Pipeline-v0 single env.

    Example:
        >>> import gymnasium as gym
        >>> import recgym
        >>> from recgym.envs.pipeline.wrappers import PipelineOptimum
        >>> env = PipelineOptimum(gym.make("RecGym-Pipeline-v0"))
        >>> obs, info = env.reset(seed=0)
        >>> 0.0 < info["efficiency"] < 1.0 and info["optimal_action"].shape
        (8,)
    """

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        self._base = _pipeline_base(env, FunctionalGymEnv, "PipelineOptimum", "single env (PipelineEnv)")
        self._optima = _EpisodeOptima(self._base.params)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Reset the env; ``info`` gains the optimum of the starting conditions."""
        obs, info = self.env.reset(seed=seed, options=options)
        self._optima.new_episode(self._base.state.world)
        return obs, self._add_optimum(info)

    def step(self, action):
        """Step the env; ``info`` gains the optimum of the interval's conditions."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._add_optimum(info)

    def _add_optimum(self, info: dict[str, Any]) -> dict[str, Any]:
        best, action = self._optima.get(info["after_change"], info["neighbour_on"])
        info["optimum"] = best
        info["efficiency"] = float(info["throughput"]) / best if best > 0 else 0.0
        info["optimal_action"] = action.copy()  # a copy: the info never shares memory with the cache
        return info


class PipelineVectorOptimum(VectorWrapper):
    """Adds the exact optimum to the ``info`` of a RecGym-Pipeline-v0 native vector env.

    The same keys and values as :class:`PipelineOptimum` gives each single env, as arrays with a
    leading ``num_envs`` axis (``optimum`` and ``efficiency`` float32, ``optimal_action`` int64
    ``(num_envs, 8)``), with their ``_optimum``-style masks after a step. Each env's optimum is
    searched once per episode and condition when first needed, all envs missing one condition in
    one batched NumPy search (in chunks of :attr:`OPTIMUM_CHUNK` worlds).

    ``gym.make_vec("RecGym-Pipeline-v0", n, vectorization_mode="vector_entry_point",
    track_optimum=True)`` returns the vector env wrapped in it.

    Args:
        env: A :class:`~recgym.envs.pipeline.env.PipelineVectorEnv` (possibly wrapped).

    Raises:
        TypeError: ``env`` is not a RecGym-Pipeline-v0 native vector env.
    """

    #: Worlds per chunk of the NumPy optimum search (bounds its temporary memory).
    OPTIMUM_CHUNK = 64

    def __init__(self, env: VectorEnv):
        super().__init__(env)
        self._base = _pipeline_base(env, FunctionalVectorEnv, "PipelineVectorOptimum",
                                    "native vector env (PipelineVectorEnv)")
        self._throughput = self._action = self._known = None

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        """Reset every env; ``info`` gains each env's optimum of its starting conditions."""
        obs, info = self.env.reset(seed=seed, options=options)
        n = self.num_envs
        # Per env and condition [after_change, neighbour_on]: the optimum, once searched.
        self._throughput = np.zeros((n, 2, 2))
        self._action = np.zeros((n, 2, 2, NUM_STAGES + 2), dtype=np.int64)
        self._known = np.zeros((n, 2, 2), dtype=bool)
        return obs, self._add_optimum(info)

    def step(self, actions):
        """Step every env (next-step auto-reset); ``info`` gains each env's optimum."""
        obs, reward, terminated, truncated, info = self.env.step(actions)
        started = np.asarray(self._base.state.time) == 0  # reset by this call: a new world
        self._known[started] = False
        return obs, reward, terminated, truncated, self._add_optimum(info)

    def _add_optimum(self, info: dict[str, Any]) -> dict[str, Any]:
        info = dict(info)
        rows = np.arange(self.num_envs)
        after = np.asarray(info["after_change"], dtype=bool).astype(int)
        neighbour = np.asarray(info["neighbour_on"], dtype=bool).astype(int)
        missing = ~self._known[rows, after, neighbour]
        if missing.any():
            world = jax.device_get(self._base.state.world)
            params = self._base.params
            for a in (0, 1):
                for nb in (0, 1):
                    idx = np.flatnonzero(missing & (after == a) & (neighbour == nb))
                    for start in range(0, idx.size, self.OPTIMUM_CHUNK):
                        chunk = idx[start : start + self.OPTIMUM_CHUNK]
                        worlds = jax.tree_util.tree_map(lambda x, c=chunk: x[c], world)
                        best = optimum(params, worlds, after_change=bool(a), neighbour_on=bool(nb))
                        self._throughput[chunk, a, nb] = best.throughput
                        self._action[chunk, a, nb] = best.absolute_action(params)
                        self._known[chunk, a, nb] = True
        best = self._throughput[rows, after, neighbour].astype(np.float32)
        throughput = np.asarray(info["throughput"], dtype=np.float32)
        info["optimum"] = best
        info["efficiency"] = np.where(best > 0, throughput / np.where(best > 0, best, 1.0), 0.0).astype(np.float32)
        info["optimal_action"] = self._action[rows, after, neighbour].copy()
        if "_throughput" in info:  # after a step: the envs that stepped (not reset) this call
            for name in ("optimum", "efficiency", "optimal_action"):
                info[f"_{name}"] = info["_throughput"]
        return info
