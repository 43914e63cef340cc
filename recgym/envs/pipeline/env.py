"""Gymnasium adapters of RecGym-Pipeline-v0: ``PipelineEnv`` and ``PipelineVectorEnv``.

Both are thin adapters over :class:`~recgym.envs.pipeline.core.PipelineCore`. The registered entry
points are :func:`env_entry_point` and :func:`vector_env_entry_point`, which add the optimum wrappers of
:mod:`recgym.envs.pipeline.wrappers` when ``gym.make`` / ``gym.make_vec`` is given
``track_optimum=True``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
from gymnasium.vector import VectorEnv

from recgym.core import FunctionalGymEnv, FunctionalVectorEnv
from recgym.envs.pipeline.core import PipelineCore
from recgym.envs.pipeline.params import PipelineParams, make_params
from recgym.envs.pipeline.wrappers import PipelineOptimum, PipelineVectorOptimum


def _resolve_params(scenario: str, action_mode: str, params: PipelineParams | None, overrides: dict) -> PipelineParams:
    """The env's params: given ones (checked), else the scenario with overrides."""
    if params is None:
        return make_params(scenario, action_mode, **overrides)
    if not isinstance(params, PipelineParams):
        raise ValueError(f"params must be a PipelineParams, got {type(params).__name__}")
    return params


class PipelineEnv(FunctionalGymEnv):
    """RecGym-Pipeline-v0: tune a DLRM data-ingestion pipeline's cores, batch size and prefetch.

    The full card, with the model's formulas, the generated tables and the baselines' results, is
    docs/environments/pipeline.md; this docstring follows the same order.

    **Description.** A trainer machine's data-ingestion pipeline for a deep recommendation model:
    stages read -> parse -> transform -> shuffle -> batch -> prefetch, each with CPU workers, feed a
    GPU trainer. One step is one tuning interval: the action sets the configuration (workers per
    stage, batch size, prefetch depth), the interval runs, and the observation reports what a
    monitor measured (after Netflix's InTune, RecSys '23). A stage's capacity follows Amdahl's
    law, oversubscribing the available cores slows every stage, the pipeline delivers its
    bottleneck rate through an M/M/1/K prefetch buffer, and memory above the cap crashes the
    trainer. The exact optimum is computable, so policies are scored as throughput / optimum
    (:class:`~recgym.envs.pipeline.wrappers.PipelineOptimum`, ``track_optimum=True``).

    **Action Space.** ``action_mode="increment"`` (InTune's, the default): ``Discrete(17)`` — for
    stage ``i`` in pipeline order, ``2i`` adds a worker and ``2i+1`` removes one; 12 / 13 double /
    halve the batch size; 14 / 15 add / remove a prefetched batch; 16 is a no-op (moves past a
    bound change nothing). ``action_mode="absolute"``: ``MultiDiscrete([32]*6 + [8, 17])`` —
    workers - 1 per stage, the batch-size index (``B = 2 ** (6 + a[6])``) and the prefetch depth.
    Invalid actions raise ``ValueError`` naming the entry, its value and the allowed range.

    **Observation Space.** ``Box(26,)`` float32 (layout
    :data:`~recgym.envs.pipeline.dynamics.OBSERVATION_NAMES`; every bound in the docs'
    generated table):

    ======  ==========================  ========================================================================
    index   name                        meaning
    ======  ==========================  ========================================================================
    0-5     ``cores_<stage>``           workers per stage, 1 .. ``max_cores_per_stage``
    6-11    ``rate_<stage>``            measured stage capacity (thousand samples/s; 0 after a crash)
    12-17   ``utilisation_<stage>``     demand / capacity (above 1 at the bottleneck)
    18      ``batch_size``              samples per batch, ``2 ** min_batch_log2`` .. ``2 ** max_batch_log2``
    19      ``prefetch``                batches buffered for the trainer, 0 .. ``max_prefetch``
    20      ``throughput``              measured throughput (thousand samples/s)
    21      ``trainer_idle_fraction``   fraction of time the trainer waits, 0 .. 1
    22      ``memory_used_gib``         host memory in use (GiB)
    23      ``memory_cap_gib``          memory cap (GiB)
    24      ``available_cores``         cores available now (after changes and neighbours)
    25      ``core_budget``             the machine's nominal core budget
    ======  ==========================  ========================================================================

    **Rewards.** The measured throughput times ``reward_scale`` (1e-3: thousands of samples/s); on
    the step that runs out of memory, ``-oom_penalty`` (-100).

    **Starting State.** One worker per stage, batch size ``2 ** initial_batch_log2`` (256; 1,024 in
    ``memory-tight``) and ``initial_prefetch`` (1); the episode's world is drawn from the reset seed
    (stage costs jittered by ``exp(+-cost_jitter)``, or the whole world in ``random``). The reset
    observation measures that configuration over one interval.

    **Episode End.** Termination: the configuration exceeds the memory cap (OOM crash). Truncation:
    ``max_episode_steps`` (100) tuning intervals, the registration's limit.

    **Arguments.**

    Args:
        scenario: ``"steady"`` (default), ``"drift"``, ``"machine-change"``, ``"noisy-neighbours"``,
            ``"memory-tight"`` or ``"random"`` (:data:`~recgym.envs.pipeline.params.SCENARIOS`).
        action_mode: ``"increment"`` (default) or ``"absolute"``.
        params: Full :class:`~recgym.envs.pipeline.params.PipelineParams` (``scenario``,
            ``action_mode`` and ``overrides`` are then ignored).
        render_mode: Unused (no rendering).
        **overrides: Any :class:`~recgym.envs.pipeline.params.PipelineParams` field (e.g.
            ``measurement_noise=0.0``, ``profile=PipelineProfile.from_measurements({...})``).

    ``gym.make("RecGym-Pipeline-v0", track_optimum=True)`` (default ``False``) wraps the env in
    :class:`~recgym.envs.pipeline.wrappers.PipelineOptimum`: ``info`` then also holds ``optimum``,
    ``efficiency`` and ``optimal_action`` (``env.unwrapped`` is still this class). Bad values
    raise ``ValueError`` naming the field and the value. The env keeps the scenario's name in
    :attr:`scenario` (``None`` when built from ``params``; the params do not store it).

    **Vectorized.** :class:`PipelineVectorEnv` via ``gym.make_vec(..., vectorization_mode=
    "vector_entry_point")`` (one jitted, vmapped call per step, next-step auto-reset; env ``i``
    reproduces this env seeded ``seed + i``; ``track_optimum=True`` wraps it in
    :class:`~recgym.envs.pipeline.wrappers.PipelineVectorOptimum`); the pure JAX core is
    :class:`~recgym.envs.pipeline.core.PipelineCore`, whose params ``vmap`` across scenarios.

    **Version History.** v0: initial release.

    Example:
        >>> import gymnasium as gym
        >>> import recgym
        >>> env = gym.make("RecGym-Pipeline-v0", scenario="drift")
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape, obs.dtype.name, env.action_space
        ((26,), 'float32', Discrete(17))
        >>> obs, reward, terminated, truncated, info = env.step(4)  # transform +1 worker
        >>> int(obs[2]), "optimum" in info
        (2, False)
        >>> env = gym.make("RecGym-Pipeline-v0", action_mode="absolute", track_optimum=True)
        >>> obs, info = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step(info["optimal_action"])
        >>> type(env.unwrapped).__name__, round(info["efficiency"], 2) > 0.9
        ('PipelineEnv', True)
    """

    def __init__(self, scenario: str = "steady", action_mode: str = "increment", params: PipelineParams | None = None,
                 render_mode: str | None = None, **overrides: Any):
        self.scenario = scenario if params is None else None
        params = _resolve_params(scenario, action_mode, params, overrides)
        super().__init__(PipelineCore(params), params, render_mode)


class PipelineVectorEnv(FunctionalVectorEnv):
    """RecGym-Pipeline-v0 as a native vector env: ``num_envs`` pipelines stepped by one jitted call.

    Same arguments as :class:`PipelineEnv`, plus ``num_envs``; env ``i`` reproduces a
    :class:`PipelineEnv` seeded ``seed + i``. ``info`` holds arrays with a leading ``num_envs``
    axis; ``gym.make_vec(..., track_optimum=True)`` adds the optimum
    (:class:`~recgym.envs.pipeline.wrappers.PipelineVectorOptimum`).
    """

    def __init__(self, num_envs: int, scenario: str = "steady", action_mode: str = "increment",
                 params: PipelineParams | None = None, render_mode: str | None = None, **overrides: Any):
        self.scenario = scenario if params is None else None
        params = _resolve_params(scenario, action_mode, params, overrides)
        super().__init__(PipelineCore(params), num_envs, params, render_mode)


def env_entry_point(track_optimum: bool = False, **kwargs: Any) -> gym.Env:
    """Entry point of ``gym.make("RecGym-Pipeline-v0", **kwargs)``.

    Args:
        track_optimum: Wrap the env in :class:`~recgym.envs.pipeline.wrappers.PipelineOptimum`
            (``optimum``, ``efficiency`` and ``optimal_action`` in ``info``; evaluation
            instrumentation, off for training).
        **kwargs: Arguments of :class:`PipelineEnv`.
    """
    env = PipelineEnv(**kwargs)
    return PipelineOptimum(env) if track_optimum else env


def vector_env_entry_point(num_envs: int, track_optimum: bool = False, **kwargs: Any) -> VectorEnv:
    """Entry point of ``gym.make_vec("RecGym-Pipeline-v0", num_envs, vectorization_mode="vector_entry_point")``.

    Args:
        num_envs: Number of environments.
        track_optimum: Wrap the env in :class:`~recgym.envs.pipeline.wrappers.PipelineVectorOptimum`.
        **kwargs: Arguments of :class:`PipelineVectorEnv`.
    """
    env = PipelineVectorEnv(num_envs, **kwargs)
    return PipelineVectorOptimum(env) if track_optimum else env
