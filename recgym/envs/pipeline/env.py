"""RecGym-Pipeline-v0 on :mod:`recgym.core`: the functional core and its gymnasium adapters.

* :class:`PipelineCore` — the pure environment (``reset(key, params)``, ``step(key, state, action,
  params)``; jit/vmap/scan), whose dynamics are :mod:`recgym.envs.pipeline.dynamics`.
* :class:`PipelineEnv` — the single gymnasium env (``gym.make("RecGym-Pipeline-v0")``).
* :class:`PipelineVectorEnv` — the native vector env
  (``gym.make_vec("RecGym-Pipeline-v0", n, vectorization_mode="vector_entry_point")``).

Both adapters add the optimum to ``info`` (``optimum``, ``efficiency``, ``optimal_action``): the
exact optimum is evaluation instrumentation computed with NumPy once per episode and condition,
kept out of the jitted dynamics so the vectorised core stays fast. Pass ``track_optimum=False`` to
skip it (e.g. when training on thousands of envs).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import gymnasium as gym
import jax
import numpy as np
from gymnasium import spaces

from recgym.core import FunctionalEnv, FunctionalGymEnv, FunctionalVectorEnv, Transition
from recgym.envs.pipeline import dynamics as D
from recgym.envs.pipeline.dynamics import PipelineWorld
from recgym.envs.pipeline.optimum import optimal_config
from recgym.envs.pipeline.params import NUM_STAGES, PipelineParams, make_params


class _NoiseShape(NamedTuple):
    """The hashable part of the params the noise draws need (see ``FunctionalEnv.noise_params``)."""

    world_uniforms: int


def _absolute_nvec(params: PipelineParams) -> tuple[int, ...]:
    """Choices per entry of an absolute action: cores - 1 per stage, batch-size index, prefetch."""
    return _nvec(params.max_cores_per_stage, params.num_batch_sizes, params.max_prefetch)


def _within(values: list, nvec: tuple) -> bool:
    """``0 <= v < n`` for every entry (Python ints: cheaper than NumPy on eight entries)."""
    return min(values) >= 0 and all(map(int.__lt__, values, nvec))


@functools.lru_cache(maxsize=64)
def _nvec(max_cores_per_stage: int, num_batch_sizes: int, max_prefetch: int) -> tuple[int, ...]:
    return (max_cores_per_stage,) * NUM_STAGES + (num_batch_sizes, max_prefetch + 1)


class PipelineCore(FunctionalEnv):
    """The functional core of RecGym-Pipeline-v0 (see the spec card in ``docs/environments``).

    Args:
        params: Default params returned by :meth:`default_params` (``steady``, ``increment``).
    """

    def __init__(self, params: PipelineParams | None = None):
        self._default = params if params is not None else make_params()

    def default_params(self) -> PipelineParams:
        """The params this core was built with."""
        return self._default

    def noise_params(self, params):
        """The noise draws depend on the params only through the world's uniform count."""
        return _NoiseShape(world_uniforms=D.world_uniforms(params))

    def prefetched_steps(self, params: PipelineParams) -> int:
        """Tuning episodes run to the time limit unless the trainer crashes: draw every step's noise
        with the reset (one jitted call per episode, not two)."""
        return int(params.max_episode_steps)

    def numpy_step_noise(self, block):
        """Python numbers: the single env's dynamics run on :mod:`recgym.core.pyscalar`."""
        return {name: values.tolist() for name, values in block.items()}

    def reset_noise(self, key, params):
        """Uniforms for the world and normals for the first measurement."""
        k_world, k_measure = jax.random.split(key)
        n_world = params.world_uniforms if isinstance(params, _NoiseShape) else D.world_uniforms(params)
        return {
            "world": jax.random.uniform(k_world, (n_world,)),
            "measure": jax.random.normal(k_measure, (D.MEASUREMENT_NORMALS,)),
        }

    def step_noise(self, key, params):
        """One uniform for the neighbour chain and normals for the measurement."""
        k_neighbour, k_measure = jax.random.split(key)
        return {
            "neighbour": jax.random.uniform(k_neighbour, (D.STEP_UNIFORMS,)),
            "measure": jax.random.normal(k_measure, (D.MEASUREMENT_NORMALS,)),
        }

    def init(self, xp, noise, params, options=None):
        """The initial state (see :func:`recgym.envs.pipeline.dynamics.initial_state`)."""
        if options:
            raise ValueError(f"RecGym-Pipeline-v0 takes no reset options, got {sorted(options)}")
        state, _ = D.initial_state(xp, params, noise["world"], noise["measure"])
        return state

    def transition(self, xp, state, action, noise, params) -> Transition:
        """One tuning interval (see :func:`recgym.envs.pipeline.dynamics.transition`)."""
        return Transition(*D.transition(xp, params, state, action, noise["neighbour"], noise["measure"]))

    def observe(self, xp, state, params):
        """The measurement of the last interval, stored in the state."""
        return state.observation

    def observation_space(self, params: PipelineParams) -> spaces.Box:
        """``Box(26,)`` float32; layout :data:`~recgym.envs.pipeline.dynamics.OBSERVATION_NAMES`."""
        low = np.zeros(D.OBS_DIM, dtype=np.float32)
        high = np.full(D.OBS_DIM, D.OBS_CEILING, dtype=np.float32)
        low[D.OBS_CORES] = 1.0
        high[D.OBS_CORES] = params.max_cores_per_stage
        low[D.OBS_BATCH] = 2.0**params.min_batch_log2
        high[D.OBS_BATCH] = 2.0**params.max_batch_log2
        high[D.OBS_PREFETCH] = params.max_prefetch
        high[D.OBS_IDLE] = 1.0
        low[D.OBS_AVAILABLE] = 1.0
        low[D.OBS_BUDGET] = 1.0
        return spaces.Box(low=low, high=high, dtype=np.float32)

    def action_space(self, params: PipelineParams):
        """``Discrete(17)`` (increment) or ``MultiDiscrete([cmax]*6 + [n_batch, max_prefetch+1])``."""
        if params.action_mode == "increment":
            return spaces.Discrete(params.num_increment_actions)
        return spaces.MultiDiscrete(np.asarray(_absolute_nvec(params), dtype=np.int64))

    def check_action(self, action, params, batch_size=None):
        """Validate an action; the ``ValueError`` names the entry, its value and the allowed range."""
        if batch_size is None and params.action_mode == "increment" and isinstance(action, int | np.integer) \
                and not isinstance(action, bool) and 0 <= action < params.num_increment_actions:
            return np.int64(action)  # the common case, without array conversions
        if batch_size is None and type(action) is np.ndarray and action.shape == (NUM_STAGES + 2,) \
                and action.dtype.kind in "iu" and params.action_mode == "absolute" \
                and _within(action.tolist(), _absolute_nvec(params)):
            return action  # the common absolute case: an integer array within bounds
        arr = np.asarray(action)
        if batch_size is not None:
            expected = (batch_size,) if params.action_mode == "increment" else (batch_size, NUM_STAGES + 2)
            if arr.shape != expected:
                raise ValueError(f"expected actions of shape {expected} for {batch_size} envs, got {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            if not (np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
                raise ValueError(f"actions must be integers, got {action!r} (dtype {arr.dtype})")
            arr = arr.astype(np.int64)
        if params.action_mode == "increment":
            if batch_size is None and arr.shape != ():
                raise ValueError(f"an increment action is one integer in [0, {params.num_increment_actions}), got shape {arr.shape}")
            bad = (arr < 0) | (arr >= params.num_increment_actions)
            if np.any(bad):
                raise ValueError(
                    f"increment action must be in [0, {params.num_increment_actions}) "
                    f"({', '.join(D.INCREMENT_ACTION_NAMES)}), got {int(arr[bad].ravel()[0])}"
                )
            return arr
        if batch_size is None and arr.shape != (NUM_STAGES + 2,):
            raise ValueError(
                f"an absolute action has {NUM_STAGES + 2} entries (cores-1 per stage, batch index, prefetch), got shape {arr.shape}"
            )
        nvec = np.asarray(_absolute_nvec(params))
        names = [f"cores[{s}] - 1" for s in D.STAGES] + ["batch-size index", "prefetch"]
        bad = (arr < 0) | (arr >= nvec)
        if np.any(bad):
            j = int(np.argwhere(bad)[0][-1])
            value = arr[..., j].ravel()[np.argmax(bad[..., j].ravel())]
            raise ValueError(f"absolute action entry {j} ({names[j]}) must be in [0, {nvec[j]}), got {int(value)}")
        return arr

    def reset_info(self, xp, state, params) -> dict[str, Any]:
        """The reset's info: the same keys as a step's, for the starting allocation."""
        cond = D.conditions(xp, state.world, xp.zeros_like(state.neighbour_on), state.neighbour_on)
        perf = D.performance(
            xp, state.world, cond, state.cores, state.batch_log2, state.prefetch, params.oversubscription_overhead,
            params.oversubscription_basis,
        )
        measured = state.observation[..., D.OBS_THROUGHPUT] / D.RATE_UNIT
        return D._info(xp, state, cond, perf, measured, xp.zeros_like(state.neighbour_on))


# One core shared by every adapter: the core is stateless, and sharing it lets JAX reuse the
# compiled noise and step functions across env instances with equal params.
_SHARED_CORE = PipelineCore()


def _resolve_params(scenario: str, action_mode: str, params: PipelineParams | None, overrides: dict) -> PipelineParams:
    """The env's params: given ones (checked), else the scenario preset with overrides."""
    if params is None:
        return make_params(scenario, action_mode, **overrides)
    if not isinstance(params, PipelineParams):
        raise ValueError(f"params must be a PipelineParams, got {type(params).__name__}")
    return params


class _OptimumCache:
    """The optimum of each of an episode's (at most four) conditions, computed on first use (NumPy).

    Conditions with equal values share one computation: e.g. in ``steady`` the change event
    changes nothing, so an episode needs one optimum, not two.
    """

    def __init__(self, params: PipelineParams):
        self.params = params
        self.world = None
        self.table: dict[tuple[bool, bool], tuple[float, np.ndarray]] = {}
        self.by_value: dict[tuple, tuple[float, np.ndarray]] = {}

    def new_episode(self, world) -> None:
        self.world = world
        self.table = {}
        self.by_value = {}

    def get(self, after_change: bool, neighbour_on: bool) -> tuple[float, np.ndarray]:
        """``(optimal throughput, optimal absolute action)`` in these conditions."""
        key = (bool(after_change), bool(neighbour_on))
        found = self.table.get(key)
        if found is None:
            value = self._value(*key)
            found = self.by_value.get(value)
            if found is None:
                best = batch_optimum(self.params, stack_worlds([self.world]), *key)
                found = self.by_value[value] = (float(best.throughput[0]), best.absolute_action(self.params)[0])
            self.table[key] = found
        return found

    def preset(self, after_change: bool, neighbour_on: bool, found: tuple[float, np.ndarray]) -> None:
        """Record an optimum computed elsewhere (e.g. for a block of episodes at once)."""
        self.table[(after_change, neighbour_on)] = self.by_value[self._value(after_change, neighbour_on)] = found

    def _value(self, after_change: bool, neighbour_on: bool) -> tuple:
        """The conditions' values, as a hashable key."""
        cond = D.conditions(np, self.world, after_change, neighbour_on)
        return tuple(cond.cpu_seconds), float(cond.available_cores), float(cond.memory_cap_gib)


def stack_worlds(worlds: list) -> PipelineWorld:
    """Stack single-env worlds (Python numbers or arrays) into one float32 world batch."""
    return PipelineWorld(**{name: np.asarray([getattr(w, name) for w in worlds], dtype=np.float32)
                            for name in PipelineWorld.__dataclass_fields__})


def batch_optimum(params: PipelineParams, worlds: PipelineWorld, after_change: bool, neighbour_on: bool):
    """The exact optimum of every world of a batch in one condition, in one batched search (NumPy).

    Returns:
        :class:`~recgym.envs.pipeline.optimum.OptimalConfig` with the worlds' batch shape.
    """
    shape = np.shape(worlds.core_budget)
    cond = D.conditions(np, worlds, np.full(shape, bool(after_change)), np.full(shape, bool(neighbour_on)))
    return optimal_config(np, params, worlds, cond)


def _profile_facts(world) -> dict[str, Any]:
    """What a profiler measures on a live pipeline and tuners may use (tf.data's RAM model does)."""
    return {
        "element_gib": np.array(world.element_gib, dtype=np.float32),
        "shuffle_buffer": np.float32(world.shuffle_buffer),
    }


class PipelineEnv(FunctionalGymEnv):
    """RecGym-Pipeline-v0, the single gymnasium env (NumPy steps; see the spec card).

    Args:
        scenario: One of :data:`~recgym.envs.pipeline.params.SCENARIOS`.
        action_mode: ``"increment"`` or ``"absolute"``.
        params: Full params (overrides ``scenario``, ``action_mode`` and ``overrides``).
        track_optimum: Add ``optimum``, ``efficiency`` and ``optimal_action`` to ``info``.
        render_mode: Unused (no rendering).
        **overrides: Fields of :class:`~recgym.envs.pipeline.params.PipelineParams`.
    """

    def __init__(
        self,
        scenario: str = "steady",
        action_mode: str = "increment",
        params: PipelineParams | None = None,
        track_optimum: bool = True,
        render_mode: str | None = None,
        **overrides,
    ):
        params = _resolve_params(scenario, action_mode, params, overrides)
        super().__init__(_SHARED_CORE, params, render_mode)
        self.track_optimum = bool(track_optimum)
        self._optimum = _OptimumCache(params)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode (the world is drawn from the seed); see :class:`FunctionalGymEnv`."""
        obs, info = super().reset(seed=seed, options=options)
        self._optimum.new_episode(self.state.world)
        # Fixed for the episode: converted once, copied into each info (check_env: no sharing).
        self._facts = _profile_facts(self.state.world)
        return obs, self._augment(info)

    def step(self, action):
        """One tuning interval; ``info`` adds the optimum of the interval's conditions."""
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward, terminated, truncated, self._augment(info)

    def _augment(self, info: dict[str, Any]) -> dict[str, Any]:
        # The single env's info values are immutable scalars (the dynamics run on Python numbers);
        # the arrays handed out are copies (check_env: no sharing with the env).
        info["element_gib"] = self._facts["element_gib"].copy()
        info["shuffle_buffer"] = self._facts["shuffle_buffer"]
        if self.track_optimum:
            opt, action = self._optimum.get(info["after_change"], info["neighbour_on"])
            info["optimum"] = opt
            info["efficiency"] = float(info["throughput"]) / opt if opt > 0 else 0.0
            info["optimal_action"] = action.copy()
        return info


class PipelineVectorEnv(FunctionalVectorEnv):
    """RecGym-Pipeline-v0 as a native vector env: one jitted, vmapped JAX call per step.

    Env ``i`` reproduces a :class:`PipelineEnv` seeded ``seed + i``. ``info`` holds arrays with a
    leading ``num_envs`` axis; with ``track_optimum`` it adds the optimum, computed with NumPy once
    per env, episode and condition when first needed (about a millisecond per env and condition:
    pass ``track_optimum=False`` for thousands of envs in training).

    Args:
        num_envs: Number of environments.
        scenario, action_mode, params, track_optimum, render_mode, overrides: As :class:`PipelineEnv`.
    """

    def __init__(
        self,
        num_envs: int,
        scenario: str = "steady",
        action_mode: str = "increment",
        params: PipelineParams | None = None,
        track_optimum: bool = True,
        render_mode: str | None = None,
        **overrides,
    ):
        params = _resolve_params(scenario, action_mode, params, overrides)
        super().__init__(_SHARED_CORE, num_envs, params, render_mode)
        self.track_optimum = bool(track_optimum)

    #: Worlds per chunk of the NumPy optimum search (bounds its temporary memory).
    OPTIMUM_CHUNK = 64

    def reset(self, *, seed=None, options=None):
        """Reset every env; env ``i`` is seeded ``seed + i``."""
        obs, info = super().reset(seed=seed, options=options)
        n = self.num_envs
        self._opt_throughput = np.zeros((n, 2, 2))
        self._opt_action = np.zeros((n, 2, 2, NUM_STAGES + 2), dtype=np.int64)
        self._opt_known = np.zeros((n, 2, 2), dtype=bool)
        return obs, self._augment(info)

    def step(self, actions):
        """Step every env (next-step auto-reset); see :class:`FunctionalVectorEnv`."""
        obs, reward, terminated, truncated, info = super().step(actions)
        self._opt_known[np.asarray(self.state.time) == 0] = False  # new episodes, new worlds
        return obs, reward, terminated, truncated, self._augment(info)

    def _augment(self, info: dict[str, Any]) -> dict[str, Any]:
        info = dict(info)
        world = jax.tree_util.tree_map(np.asarray, self.state.world)
        info.update(_profile_facts(world))
        if not self.track_optimum:
            return info
        rows = np.arange(self.num_envs)
        after = np.asarray(info["after_change"], dtype=bool).astype(int)
        neighbour = np.asarray(info["neighbour_on"], dtype=bool).astype(int)
        # The optimum of each (env, condition) is computed once per episode, when first needed.
        missing = ~self._opt_known[rows, after, neighbour]
        for a in (0, 1):
            for nb in (0, 1):
                idx = np.flatnonzero(missing & (after == a) & (neighbour == nb))
                for start in range(0, idx.size, self.OPTIMUM_CHUNK):
                    chunk = idx[start : start + self.OPTIMUM_CHUNK]
                    sub = jax.tree_util.tree_map(lambda x, c=chunk: x[c], world)
                    best = batch_optimum(self.params, sub, a, nb)
                    self._opt_throughput[chunk, a, nb] = best.throughput
                    self._opt_action[chunk, a, nb] = best.absolute_action(self.params)
                    self._opt_known[chunk, a, nb] = True
        opt = self._opt_throughput[rows, after, neighbour].astype(np.float32)
        thr = np.asarray(info["throughput"], dtype=np.float32)
        info["optimum"] = opt
        info["efficiency"] = np.where(opt > 0, thr / np.where(opt > 0, opt, 1.0), 0.0).astype(np.float32)
        info["optimal_action"] = self._opt_action[rows, after, neighbour].copy()
        return info


_MEANINGS = {
    "cores": "workers of stage `{stage}`",
    "rate": "measured capacity of stage `{stage}` (thousand samples/s; 0 after a crash)",
    "utilisation": "demand / capacity of stage `{stage}` (> 1: the bottleneck)",
    "batch_size": "batch size (samples)",
    "prefetch": "prefetch depth (batches buffered for the trainer)",
    "throughput": "measured throughput (thousand samples/s)",
    "trainer_idle_fraction": "fraction of time the trainer waits for data",
    "memory_used_gib": "host memory in use (GiB; above the cap = crash)",
    "memory_cap_gib": "memory cap (GiB)",
    "available_cores": "cores available to the pipeline now (budget after changes, minus neighbours)",
    "core_budget": "the machine's nominal core budget",
}


def observation_table(params: PipelineParams | None = None) -> str:
    """The observation layout as a Markdown table generated from the real space (for the docs).

    Consecutive per-stage entries are grouped into one row per block.
    """
    params = params or make_params()
    space = PipelineCore(params).observation_space(params)
    rows = ["| index | name | min | max | meaning |", "| --- | --- | --- | --- | --- |"]

    def fmt(x: float) -> str:
        return f"{x:g}"

    i = 0
    while i < D.OBS_DIM:
        name = D.OBSERVATION_NAMES[i]
        block = name.split("_")[0] if name.split("_")[-1] in D.STAGES else name
        if block in ("cores", "rate", "utilisation"):
            j = i + NUM_STAGES
            index = f"{i}–{j - 1}"
            label = f"`{block}_<stage>`"
            meaning = _MEANINGS[block].format(stage="<stage>") + ", stages in pipeline order"
        else:
            j = i + 1
            index, label, meaning = str(i), f"`{name}`", _MEANINGS[name]
        rows.append(f"| {index} | {label} | {fmt(space.low[i])} | {fmt(space.high[i])} | {meaning} |")
        i = j
    return "\n".join(rows)


def make_env(**kwargs) -> gym.Env:
    """``gym.make("RecGym-Pipeline-v0", **kwargs)`` (imports :mod:`recgym` to register it)."""
    import recgym  # noqa: F401

    return gym.make("RecGym-Pipeline-v0", **kwargs)
