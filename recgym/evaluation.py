"""The evaluation harness: run any policy on any recgym environment and score every episode.

One harness scores baselines, classical recommenders and trained agents alike, on every
environment, because every policy implements :class:`recgym.policies.Policy` and every environment
plugs its own per-episode metrics into the harness (an :class:`EpisodeMetrics`, registered for the
env classes with :func:`register_episode_metrics`). The protocol:

* **Episodes are seeded one by one.** Episode ``e`` of a run with ``seed`` is the episode a single
  env gives after ``reset(seed=seed + e, options=...)``, where the options come from the env's
  metrics plug-in (RecGym-MovieLens cycles through the user population, so every held-out user is
  visited equally often). Two policies evaluated with the same seed face the same episodes and the
  same noise (common random numbers), which makes their difference far more precise than their
  returns; see :func:`paired_ratio_ci`.
* **Vector or single env, one episode loop.** :func:`evaluate` runs ``num_envs`` episodes at a time
  on a native vector env (one jitted call per step for all of them), and a single gymnasium env as
  a batch of one; both give the same per-episode results for deterministic policies (up to float
  rounding between the NumPy and JAX backends).
* **What the harness reads**: observations, rewards, flags and the step ``info`` — never the env's
  internal state. What an env's metrics need of its hidden state comes through the env's own
  documented instrumentation (RecGym-MovieLens: ``true_utilities()`` read through a
  :class:`~recgym.policies.PrivilegedAccess`; RecGym-Pipeline: the optimum wrapper's ``info``).
* **Per-episode results** come back as a table (:class:`EvaluationResult`): the generic columns
  ``episode``, ``seed``, ``terminated``, ``truncated``, ``return`` and ``length``, plus the columns of
  the env's plug-in.

Policies are built by a *factory* ``factory(ctx: PolicyContext) -> Policy`` so that privileged
baselines can bind to the env they will act in and logged-data baselines can read the world's
logged ratings; :data:`BASELINES` maps names to the factories of the MovieLens baselines.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pandas as pd
from scipy import stats

from recgym.policies import (
    BoredomAwarePolicy,
    MostPopularPolicy,
    OracleGreedyPolicy,
    Policy,
    RandomPolicy,
    batch_info,
)

__all__ = [
    "BASELINES",
    "GENERIC_COLUMNS",
    "EpisodeMetrics",
    "EvaluationResult",
    "PolicyContext",
    "PolicyFactory",
    "evaluate",
    "make_eval_env",
    "mean_ci",
    "paired_ratio_ci",
    "register_episode_metrics",
]

GENERIC_COLUMNS: tuple[str, ...] = ("return", "length")
"""The metric columns every evaluation reports: the sum of rewards and the number of steps."""


@dataclass(frozen=True)
class PolicyContext:
    """What a policy factory may use to build a policy for one evaluation run.

    Attributes:
        env: The (unwrapped) env or vector env the policy will act in.
        params: The env's params.
        num_envs: Number of envs the policy acts for at once.
        seed: The run's base seed (policies derive their own seeds from it if they need any).
        access: Privileged read access to :attr:`env` for research baselines (RecGym-MovieLens: a
            :class:`~recgym.policies.PrivilegedAccess` answering batched ``(num_envs, n_items)``), or
            ``None`` when the env documents no hidden state for policies.
        world: RecGym-MovieLens: the built world (``recgym.envs.movielens.MovieLensWorld``) —
            logged ratings (``world.logged_ratings``), logged popularity
            (``world.item_popularity``), observable features; never the hidden utilities, by
            convention. ``None`` for other envs.
        n_items: RecGym-MovieLens: catalogue size (``None`` for other envs).
        slate_size: RecGym-MovieLens: ``None`` for single-item actions, ``k`` for slates of ``k``.
    """

    env: Any
    params: Any
    num_envs: int
    seed: int
    access: Any = None
    world: Any = None
    n_items: int | None = None
    slate_size: int | None = None


PolicyFactory = Callable[[PolicyContext], Policy]
"""Builds a policy for an evaluation run from a :class:`PolicyContext`."""


class EpisodeMetrics(abc.ABC):
    """The environment-specific part of an evaluation: a plug-in of :func:`evaluate`.

    One instance serves one :func:`evaluate` call. The harness runs the episode loop and records
    the generic columns (:data:`GENERIC_COLUMNS`, the flags); the plug-in says which episodes to run
    (reset options), what privileged access and context policies get, what to record at each step
    (from ``info``, never from the env's internal state) and which per-episode columns to report.
    Waves of ``num_envs`` episodes run together; a single env is a wave of one.

    Register a plug-in for env classes with :func:`register_episode_metrics`.

    Args:
        env: The unwrapped env or vector env being evaluated.
        n_episodes: Episodes in the run.
        seed: The run's base seed.
        **options: Plug-in options given to :func:`evaluate` (``TypeError`` on unknown ones).
    """

    #: Per-episode metric columns this plug-in adds (summarised by :meth:`EvaluationResult.summary`).
    columns: ClassVar[tuple[str, ...]] = ()
    #: Defaults :func:`make_eval_env` passes to the env constructor (the held-out protocol).
    env_kwargs: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, env: Any, n_episodes: int, seed: int, **options: Any) -> None:
        if options:
            raise TypeError(f"{type(self).__name__} takes no options, got {sorted(options)}")
        self.env = env
        self.n_episodes = n_episodes
        self.seed = seed

    def context(self) -> dict[str, Any]:
        """Extra :class:`PolicyContext` fields (``access``, ``world``, ...); default none."""
        return {}

    def reset_options(self, episodes: np.ndarray) -> dict[str, np.ndarray] | None:
        """Reset options of a wave's episodes (``(n,)`` episode indices): arrays with a leading
        ``n`` axis, or ``None``."""
        return None

    def env_changed(self) -> None:
        """Hook called after every reset and step (e.g. to invalidate cached privileged reads)."""
        return None

    def begin_wave(self, episodes: np.ndarray, info: Mapping[str, Any]) -> None:
        """A wave of episodes started; ``info`` is the batched reset info (``(n, ...)`` arrays)."""
        return None

    def before_step(self, t: int, alive: np.ndarray) -> None:
        """Step ``t`` is about to be taken in the envs where ``alive`` (``(n,)`` bool)."""
        return None

    @abc.abstractmethod
    def record_step(self, t: int, alive: np.ndarray, actions: np.ndarray, reward: np.ndarray,
                    info: Mapping[str, Any]) -> None:
        """Record step ``t`` of the envs where ``alive``: their actions and the batched step info."""

    @abc.abstractmethod
    def end_wave(self, size: int) -> dict[str, np.ndarray]:
        """Per-episode columns of the wave's first ``size`` episodes (``(size,)`` arrays)."""

    def run_metrics(self) -> dict[str, float]:
        """Metrics of the whole run (e.g. catalogue coverage); default none."""
        return {}

    def settings(self) -> dict[str, Any]:
        """The plug-in's protocol settings, reported with the result."""
        return {}


_EPISODE_METRICS: dict[type, type[EpisodeMetrics]] = {}


def register_episode_metrics(env_classes: type | Iterable[type], metrics: type[EpisodeMetrics]) -> None:
    """Plug ``metrics`` into :func:`evaluate` for envs of ``env_classes`` (and their subclasses).

    Each environment package registers its own (RecGym-MovieLens and RecGym-Pipeline do when
    imported); register one for your own env the same way.
    """
    classes = (env_classes,) if isinstance(env_classes, type) else tuple(env_classes)
    if not (isinstance(metrics, type) and issubclass(metrics, EpisodeMetrics)):
        raise TypeError(f"metrics must be an EpisodeMetrics subclass, got {metrics!r}")
    for cls in classes:
        _EPISODE_METRICS[cls] = metrics


def _metrics_for(env_class: type) -> type[EpisodeMetrics]:
    for cls in env_class.__mro__:
        if cls in _EPISODE_METRICS:
            return _EPISODE_METRICS[cls]
    known = sorted(c.__name__ for c in _EPISODE_METRICS)
    raise TypeError(
        f"{env_class.__name__} has no episode metrics registered for the evaluation harness "
        f"(known: {known}); build the env with make_eval_env() or call register_episode_metrics()"
    )


BASELINES: dict[str, PolicyFactory] = {
    # uniformly random items (distinct within an episode)
    "random": lambda ctx: RandomPolicy(ctx.n_items, ctx.slate_size),
    # the most-rated items of the logged data (train users), the same for everyone
    "most-popular": lambda ctx: MostPopularPolicy(ctx.world.item_popularity, ctx.slate_size),
    # privileged, myopic: the best current true utility
    "oracle-greedy": lambda ctx: OracleGreedyPolicy(_require_access(ctx), ctx.n_items, ctx.slate_size),
    # privileged, far-sighted: current utility minus the boredom cost to the session budget
    "boredom-aware": lambda ctx: BoredomAwarePolicy(
        _require_access(ctx), ctx.n_items, slate_size=ctx.slate_size
    ),
    # privileged, model-predictive: simulates each candidate's future with the true dynamics (the ceiling)
    "planner": lambda ctx: _planner(ctx),
}
"""Factories of the built-in RecGym-MovieLens baselines, by display name; append entries to
evaluate more. (RecGym-Pipeline's baseline tuners: ``recgym.envs.pipeline.baselines.BASELINES``.)"""


def _planner(ctx: PolicyContext) -> Policy:
    # imported here: the MovieLens package imports this module to register its metrics
    from recgym.envs.movielens.planner import PlannerPolicy

    return PlannerPolicy(_require_access(ctx), slate_size=ctx.slate_size)


def _require_access(ctx: PolicyContext) -> Any:
    if ctx.access is None:
        raise TypeError(
            f"{type(ctx.env).__name__} documents no hidden utilities (true_utilities(), "
            "boredom_cost()): privileged baselines cannot run on it"
        )
    return ctx.access


@dataclass
class EvaluationResult:
    """Per-episode results of one policy on one environment.

    Attributes:
        policy: Policy name.
        episodes: One row per episode: ``episode`` (index), ``seed``, ``terminated`` and
            ``truncated`` flags, ``return`` (sum of rewards), ``length`` (steps), then the env's
            plug-in columns (RecGym-MovieLens: ``user``, ``ctr``, ``mean_rating``, ``ndcg``, ...;
            RecGym-Pipeline: ``efficiency``, ``oom``, ...).
        metric_columns: The columns :meth:`summary` summarises (generic then plug-in ones).
        run_metrics: Metrics of the whole run (RecGym-MovieLens: ``coverage``).
        settings: The run's settings (seed, number of episodes, the plug-in's protocol, ...).
    """

    policy: str
    episodes: pd.DataFrame
    metric_columns: tuple[str, ...] = GENERIC_COLUMNS
    run_metrics: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def coverage(self) -> float:
        """Catalogue coverage of every item shown over the run (RecGym-MovieLens; NaN otherwise)."""
        return float(self.run_metrics.get("coverage", math.nan))

    def summary(self, confidence: float = 0.95) -> dict[str, tuple[float, float]]:
        """``{metric: (mean, ci_half_width)}`` over episodes (NaN episodes skipped per metric)."""
        out = {}
        for col in self.metric_columns:
            values = self.episodes[col].to_numpy(dtype=np.float64)
            values = values[~np.isnan(values)]
            out[col] = mean_ci(values, confidence) if values.size else (math.nan, math.nan)
        return out


def mean_ci(values: Any, confidence: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the Student-t confidence interval of the mean.

    Args:
        values: ``(n,)`` sample (e.g. one return per episode).
        confidence: Two-sided level.

    Returns:
        ``(mean, half_width)``; the half-width is NaN for fewer than two values.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("mean_ci needs at least one value")
    if x.size < 2:
        return float(x.mean()), math.nan
    sem = x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean()), float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * sem)


def paired_ratio_ci(
    treatment: np.ndarray, control: np.ndarray, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Ratio of means of paired samples, with a delta-method confidence interval.

    For episodes run with the same seeds and users (common random numbers),
    ``R = mean(treatment) / mean(control)`` and, by the delta method, the standard error of ``R``
    is ``sd(treatment_e - R * control_e) / (sqrt(n) * mean(control))``; the interval uses the
    Student-t quantile with ``n - 1`` degrees of freedom. "Policy A beats B by >= 10%" means the
    lower bound exceeds 1.1.

    Args:
        treatment: ``(n,)`` per-episode values of the policy of interest.
        control: ``(n,)`` per-episode values of the reference policy, paired by episode.
        confidence: Two-sided level.

    Returns:
        ``(ratio, low, high)``.
    """
    a = np.asarray(treatment, dtype=np.float64).ravel()
    b = np.asarray(control, dtype=np.float64).ravel()
    if a.shape != b.shape or a.size < 2:
        raise ValueError(
            f"need two paired samples of equal length >= 2, got {a.size} and {b.size} values"
        )
    if b.mean() <= 0:
        raise ValueError(f"the control mean must be positive for a ratio, got {b.mean()}")
    ratio = a.mean() / b.mean()
    se = (a - ratio * b).std(ddof=1) / (math.sqrt(a.size) * b.mean())
    half = float(stats.t.ppf(0.5 + confidence / 2, a.size - 1) * se)
    return float(ratio), float(ratio - half), float(ratio + half)


def make_eval_env(env_id: str = "RecGym-MovieLens-v0", num_envs: int | None = 256, **kwargs: Any):
    """Build the env :func:`evaluate` runs on: a native vector env, or a single env.

    The env's metrics plug-in supplies the evaluation defaults (:attr:`EpisodeMetrics.env_kwargs`):
    RecGym-MovieLens evaluates on held-out users (``users="test"``), RecGym-Pipeline with the
    optimum instrumentation (``track_optimum=True``). ``kwargs`` override them.

    Args:
        env_id: A registered recgym id.
        num_envs: Episodes stepped at once through ``gym.make_vec(...,
            vectorization_mode="vector_entry_point")``; ``None`` for a single ``gym.make`` env.
        **kwargs: Env arguments (``dataset=``, ``slate_size=``, ``scenario=``, coefficients, ...).

    Returns:
        The env (reusable across :func:`evaluate` calls: build it once per world).
    """
    import recgym  # noqa: F401  (registers the ids)

    def build(env_kwargs: dict[str, Any]):
        if num_envs is None:
            return gym.make(env_id, **env_kwargs)
        return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **env_kwargs)

    spec = gym.spec(env_id)
    entry = spec.entry_point if num_envs is None else spec.vector_entry_point
    env_class = gym.envs.registration.load_env_creator(entry) if isinstance(entry, str) else entry
    if isinstance(env_class, type):
        return build({**_metrics_for(env_class).env_kwargs, **kwargs})
    # A factory entry point (it may wrap the env, e.g. in the pipeline's optimum instrumentation):
    # the plug-in is known only from what it builds, so build, then rebuild with the plug-in's
    # defaults if any is missing.
    env = build(kwargs)
    defaults = _metrics_for(type(env.unwrapped)).env_kwargs
    missing = {key: value for key, value in defaults.items() if key not in kwargs}
    if not missing:
        return env
    env.close()
    return build({**missing, **kwargs})


class _Batch:
    """A single gymnasium env seen as a batch of one, or a vector env as it is: one episode loop."""

    def __init__(self, env: Any, vector: bool) -> None:
        self.env, self.vector = env, vector

    def reset(self, seeds: np.ndarray, options: dict | None):
        if self.vector:
            return self.env.reset(seed=[int(s) for s in seeds], options=options)
        one = None if options is None else {k: np.asarray(v)[0].item() for k, v in options.items()}
        obs, info = self.env.reset(seed=int(seeds[0]), options=one)
        return np.asarray(obs)[None], batch_info(info)

    def step(self, actions: np.ndarray):
        if self.vector:
            return self.env.step(actions)
        action = actions[0]
        obs, reward, terminated, truncated, info = self.env.step(
            int(action) if np.ndim(action) == 0 else action)
        return (np.asarray(obs)[None], np.asarray([reward]), np.asarray([terminated]),
                np.asarray([truncated]), batch_info(info))


def evaluate(
    factory: PolicyFactory | Policy,
    env: Any,
    n_episodes: int,
    seed: int = 0,
    *,
    name: str | None = None,
    **options: Any,
) -> EvaluationResult:
    """Run a policy for ``n_episodes`` seeded episodes and score each one.

    Args:
        factory: A :data:`PolicyFactory` (called once with a :class:`PolicyContext`), or a
            ready :class:`~recgym.policies.Policy` (it must suit ``env``).
        env: From :func:`make_eval_env` (or any env whose class has registered
            :class:`EpisodeMetrics`): a vector env (``num_envs`` episodes at a time) or a single
            env (one at a time).
        n_episodes: Number of episodes.
        seed: Base seed: episode ``e`` is seeded ``seed + e``; the policy is reset with seeds
            derived from ``seed``.
        name: Display name (default: the policy's ``name``).
        **options: Options of the env's metrics plug-in. RecGym-MovieLens: ``ndcg_k`` (NDCG
            cut-off, default the slate size) and ``user_order`` (``"cycle"``, default: episode
            ``e`` serves user ``pool[e % len(pool)]``; ``"sample"``: the env draws the user).

    Returns:
        The :class:`EvaluationResult`.

    Raises:
        ValueError: Bad ``n_episodes`` / ``seed`` or plug-in option value.
        TypeError: ``env`` has no registered metrics, or an unknown option.
    """
    if isinstance(n_episodes, bool) or not isinstance(n_episodes, int | np.integer) or n_episodes < 1:
        raise ValueError(f"n_episodes must be a positive integer, got {n_episodes!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    base = getattr(env, "unwrapped", env)
    vector = isinstance(base, gym.vector.VectorEnv)
    num_envs = int(base.num_envs) if vector else 1
    plugin = _metrics_for(type(base))(base, int(n_episodes), int(seed), **options)
    ctx = PolicyContext(env=base, params=base.params, num_envs=num_envs, seed=int(seed), **plugin.context())
    policy = factory if isinstance(factory, Policy) else factory(ctx)
    horizon = int(base.params.max_episode_steps)
    batch = _Batch(env, vector)

    frames = []
    for wave_start in range(0, n_episodes, num_envs):
        size = min(num_envs, n_episodes - wave_start)
        episodes = np.arange(wave_start, wave_start + num_envs)
        seeds = seed + episodes
        wave_seed = int(np.random.SeedSequence([seed, wave_start]).generate_state(1)[0])
        policy.reset(num_envs=num_envs, seed=wave_seed)
        obs, info = batch.reset(seeds, plugin.reset_options(episodes))
        plugin.env_changed()
        plugin.begin_wave(episodes, info)
        returns = np.zeros(num_envs)
        lengths = np.zeros(num_envs, dtype=np.int64)
        ended = np.zeros((2, num_envs), dtype=bool)  # terminated, truncated
        # the last wave's spare envs (episodes >= n_episodes) step along but are never scored, so
        # the wave ends with its last scored episode
        alive = episodes < n_episodes
        for t in range(horizon):
            plugin.before_step(t, alive)
            actions = np.asarray(policy.act_batch(obs, info))
            obs, reward, terminated, truncated, info = batch.step(actions)
            plugin.env_changed()
            reward = np.asarray(reward, dtype=np.float64)
            returns += np.where(alive, reward, 0.0)
            lengths += alive
            plugin.record_step(t, alive.copy(), actions, reward, info)
            ended[0] |= alive & np.asarray(terminated, dtype=bool)
            ended[1] |= alive & np.asarray(truncated, dtype=bool)
            alive &= ~(np.asarray(terminated, dtype=bool) | np.asarray(truncated, dtype=bool))
            if not alive.any():
                break
        columns = {"seed": seeds[:size], "terminated": ended[0, :size], "truncated": ended[1, :size],
                   "return": returns[:size], "length": lengths[:size]}
        extra = plugin.end_wave(size)
        clash = set(extra) & set(columns)
        if clash:
            raise ValueError(f"{type(plugin).__name__} reports reserved columns {sorted(clash)}")
        frames.append(pd.DataFrame(columns | extra))

    table = pd.concat(frames, ignore_index=True)
    table.insert(0, "episode", np.arange(n_episodes))
    settings = {"seed": int(seed), "n_episodes": int(n_episodes), "num_envs": num_envs, **plugin.settings()}
    return EvaluationResult(
        name or policy.name, table, GENERIC_COLUMNS + tuple(plugin.columns), plugin.run_metrics(), settings
    )
