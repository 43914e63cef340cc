"""The functional core of RecGym-Pipeline-v0 (:class:`PipelineCore`) and its generated docs tables.

:class:`PipelineCore` is the pure environment — ``reset(key, params)``, ``step(key, state, action,
params)`` and the key-chain API of :class:`recgym.core.FunctionalEnv` (jit, vmap, scan) — whose
dynamics are :mod:`recgym.envs.pipeline.dynamics`. The gymnasium adapters are in
:mod:`recgym.envs.pipeline.env`; :func:`summary_table` and :func:`observation_table` write the
docs page's tables from the real spaces, so prose and code cannot drift apart.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import numpy as np
from gymnasium import spaces

from recgym.core import FunctionalEnv, Transition
from recgym.envs.pipeline import dynamics
from recgym.envs.pipeline.dynamics import (
    INCREMENT_ACTION_NAMES,
    MEASUREMENT_NORMALS,
    OBS_AVAILABLE,
    OBS_BATCH,
    OBS_BUDGET,
    OBS_CEILING,
    OBS_CORES,
    OBS_DIM,
    OBS_IDLE,
    OBS_PREFETCH,
    OBS_THROUGHPUT,
    OBSERVATION_NAMES,
    RATE_UNIT,
    STEP_UNIFORMS,
)
from recgym.envs.pipeline.params import (
    ACTION_MODES,
    NUM_STAGES,
    STAGES,
    PipelineParams,
    make_params,
)


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
    """The functional core of RecGym-Pipeline-v0 (the spec card is :class:`~recgym.envs.pipeline.env.PipelineEnv`'s).

    Pure and stateless: every scenario and coefficient lives in the params, whose coefficients are
    pytree leaves, so ``jax.jit(core.reset)`` compiles once for every named scenario but
    ``random`` (see :mod:`~recgym.envs.pipeline.params`) and ``jax.vmap`` runs a batch of scenarios.

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
        return _NoiseShape(world_uniforms=dynamics.world_uniforms(params))

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
        n_world = params.world_uniforms if isinstance(params, _NoiseShape) else dynamics.world_uniforms(params)
        return {
            "world": jax.random.uniform(k_world, (n_world,)),
            "measure": jax.random.normal(k_measure, (MEASUREMENT_NORMALS,)),
        }

    def step_noise(self, key, params):
        """One uniform for the neighbour chain and normals for the measurement."""
        k_neighbour, k_measure = jax.random.split(key)
        return {
            "neighbour": jax.random.uniform(k_neighbour, (STEP_UNIFORMS,)),
            "measure": jax.random.normal(k_measure, (MEASUREMENT_NORMALS,)),
        }

    def init(self, xp, noise, params, options=None):
        """The initial state (see :func:`recgym.envs.pipeline.dynamics.initial_state`)."""
        if options:
            raise ValueError(f"RecGym-Pipeline-v0 takes no reset options, got {sorted(options)}")
        state, _ = dynamics.initial_state(xp, params, noise["world"], noise["measure"])
        return state

    def transition(self, xp, state, action, noise, params) -> Transition:
        """One tuning interval (see :func:`recgym.envs.pipeline.dynamics.transition`)."""
        return Transition(*dynamics.transition(xp, params, state, action, noise["neighbour"], noise["measure"]))

    def observe(self, xp, state, params):
        """The measurement of the last interval, stored in the state."""
        return state.observation

    def observation_space(self, params: PipelineParams) -> spaces.Box:
        """``Box(26,)`` float32; layout :data:`~recgym.envs.pipeline.dynamics.OBSERVATION_NAMES`."""
        low = np.zeros(OBS_DIM, dtype=np.float32)
        high = np.full(OBS_DIM, OBS_CEILING, dtype=np.float32)
        low[OBS_CORES] = 1.0
        high[OBS_CORES] = params.max_cores_per_stage
        low[OBS_BATCH] = 2.0**params.min_batch_log2
        high[OBS_BATCH] = 2.0**params.max_batch_log2
        high[OBS_PREFETCH] = params.max_prefetch
        high[OBS_IDLE] = 1.0
        low[OBS_AVAILABLE] = 1.0
        low[OBS_BUDGET] = 1.0
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
                    f"({', '.join(INCREMENT_ACTION_NAMES)}), got {int(arr[bad].ravel()[0])}"
                )
            return arr
        if batch_size is None and arr.shape != (NUM_STAGES + 2,):
            raise ValueError(
                f"an absolute action has {NUM_STAGES + 2} entries (cores-1 per stage, batch index, prefetch), got shape {arr.shape}"
            )
        nvec = np.asarray(_absolute_nvec(params))
        names = [f"cores[{s}] - 1" for s in STAGES] + ["batch-size index", "prefetch"]
        bad = (arr < 0) | (arr >= nvec)
        if np.any(bad):
            j = int(np.argwhere(bad)[0][-1])
            value = arr[..., j].ravel()[np.argmax(bad[..., j].ravel())]
            raise ValueError(f"absolute action entry {j} ({names[j]}) must be in [0, {nvec[j]}), got {int(value)}")
        return arr

    def reset_info(self, xp, state, params) -> dict[str, Any]:
        """The reset's info: the same keys as a step's, for the starting allocation."""
        cond = dynamics.conditions(xp, state.world, xp.zeros_like(state.neighbour_on), state.neighbour_on)
        perf = dynamics.performance(
            xp, state.world, cond, state.cores, state.batch_log2, state.prefetch, params.oversubscription_overhead
        )
        measured = state.observation[..., OBS_THROUGHPUT] / RATE_UNIT
        return dynamics.step_info(xp, state, cond, perf, measured, xp.zeros_like(state.neighbour_on))


# ----------------------------------------------------------------------------- docs tables
ENV_ID = "RecGym-Pipeline-v0"

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


def _fmt(x: float) -> str:
    return f"{x:g}"


def summary_table(params: PipelineParams | None = None) -> str:
    """The summary rows at the top of the docs page (as gymnasium's CartPole page has), generated
    from the real spaces of both action modes and from ``params`` (default: :func:`make_params`).

    Returns:
        A Markdown table: action space, observation space, reward, episode end, import line.
    """
    params = params or make_params()
    core = PipelineCore(params)
    modes = [(mode, core.action_space(params.replace(action_mode=mode))) for mode in ACTION_MODES]
    actions = " or ".join(f'`{space}` (`action_mode="{mode}"`)' for mode, space in modes)
    obs = core.observation_space(params)
    observation = (f"`Box({_fmt(obs.low.min())}, {_fmt(obs.high.max())}, {obs.shape}, {obs.dtype})` "
                   "(each entry's bounds in the observation table)")
    reward = (f"measured throughput × `reward_scale` ({_fmt(params.reward_scale)}: thousands of samples/s); "
              f"`-{_fmt(params.oom_penalty)}` (`oom_penalty`) on an OOM crash")
    episode = (f"terminated by an OOM crash; truncated after {params.max_episode_steps} tuning intervals "
               "(`max_episode_steps`)")
    rows = [
        "| | |",
        "| --- | --- |",
        f"| Action space | {actions} |",
        f"| Observation space | {observation} |",
        f"| Reward | {reward} |",
        f"| Episode end | {episode} |",
        f'| Import | `import recgym` then `gym.make("{ENV_ID}")` (`scenario=`, `action_mode=`, `track_optimum=`) |',
    ]
    return "\n".join(rows)


def observation_table(params: PipelineParams | None = None) -> str:
    """The observation layout as a Markdown table generated from the real space (for the docs).

    Consecutive per-stage entries are grouped into one row per block.
    """
    params = params or make_params()
    space = PipelineCore(params).observation_space(params)
    rows = ["| index | name | min | max | meaning |", "| --- | --- | --- | --- | --- |"]
    i = 0
    while i < OBS_DIM:
        name = OBSERVATION_NAMES[i]
        block = name.split("_")[0] if name.split("_")[-1] in STAGES else name
        if block in ("cores", "rate", "utilisation"):
            j = i + NUM_STAGES
            index = f"{i}–{j - 1}"
            label = f"`{block}_<stage>`"
            meaning = _MEANINGS[block].format(stage="<stage>") + ", stages in pipeline order"
        else:
            j = i + 1
            index, label, meaning = str(i), f"`{name}`", _MEANINGS[name]
        rows.append(f"| {index} | {label} | {_fmt(space.low[i])} | {_fmt(space.high[i])} | {meaning} |")
        i = j
    return "\n".join(rows)
