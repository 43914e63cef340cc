"""Baseline tuners for RecGym-Pipeline-v0, each following its published rule.

Every tuner follows the project-wide policy protocol (``recgym.policies.Policy``):
``reset(num_envs=1, seed=None)`` before the first episode, ``begin_episode(env_mask)`` when some
envs start a new one, and ``act_batch(observations, infos)`` for a vector env or
``act(observation, info)`` for one env. Each env gets its own per-episode memory (a profile in
progress, a frozen allocation, the best configuration so far). Tuners decide a target
configuration (workers per stage, batch size, prefetch depth) and emit it in the environment's
action mode: the configuration itself in ``absolute`` mode, or one increment towards it in
``increment`` mode (see :func:`target_to_action`).

What a tuner may see: the observation (allocation, measured per-stage rates and utilisation,
throughput, trainer idle fraction, memory, budgets) and the profiler facts in ``info``
(``element_gib``, the measured size of a buffered sample per stage). Only :class:`Oracle` reads
the optimum from ``info`` (it needs the env wrapped in
:class:`~recgym.envs.pipeline.wrappers.PipelineOptimum`).

The rules (sources in ``docs/environments/pipeline.md``):

* :class:`StaticEvenSplit` — the hand-written config: cores split evenly, set once.
* :class:`AllCores` — Plumber's HEURISTIC baseline: every stage's parallelism = the core count.
* :class:`Autotune` — tf.data AUTOTUNE's hill climb on its analytical model.
* :class:`PlumberLP` — Plumber: profile, solve an LP for the rate-balanced allocation, round.
* :class:`RayAutoscaler` — Ray Data's utilisation-threshold actor-pool autoscaling.
* :class:`RandomSearch` — random configurations for a step budget, then the best measured.
* :class:`Oracle` — the exact optimum of the current conditions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from recgym.envs.pipeline.dynamics import (
    NOOP_ACTION,
    OBS_AVAILABLE,
    OBS_BATCH,
    OBS_CORES,
    OBS_IDLE,
    OBS_MEMORY_CAP,
    OBS_PREFETCH,
    OBS_RATES,
    OBS_THROUGHPUT,
    OBS_UTILISATION,
    RATE_UNIT,
)
from recgym.envs.pipeline.params import NUM_STAGES, PipelineParams
from recgym.policies import Policy


@dataclass(frozen=True)
class Target:
    """A full configuration: workers per stage, log2 batch size and prefetch depth."""

    cores: tuple[int, ...]
    batch_log2: int
    prefetch: int


def current_config(observation) -> Target:
    """The configuration the observation reports (the allocation is observed exactly)."""
    obs = np.asarray(observation)
    return Target(
        cores=tuple(int(round(c)) for c in obs[OBS_CORES]),
        batch_log2=int(round(math.log2(max(float(obs[OBS_BATCH]), 1.0)))),
        prefetch=int(round(float(obs[OBS_PREFETCH]))),
    )


def clip_target(params: PipelineParams, target: Target) -> Target:
    """Clip a configuration to the action bounds."""
    return Target(
        cores=tuple(int(min(max(c, 1), params.max_cores_per_stage)) for c in target.cores),
        batch_log2=int(min(max(target.batch_log2, params.min_batch_log2), params.max_batch_log2)),
        prefetch=int(min(max(target.prefetch, 0), params.max_prefetch)),
    )


def target_to_action(params: PipelineParams, observation, target: Target):
    """The action that moves towards ``target`` in ``params.action_mode``.

    ``absolute``: the configuration itself (``int64`` vector of length 8). ``increment``: one move
    — first take a worker from the stage with the largest surplus (freeing cores and memory before
    spending them), else give one to the stage with the largest deficit, else fix the batch size,
    else the prefetch depth, else no-op.
    """
    target = clip_target(params, target)
    if params.action_mode == "absolute":
        return np.asarray(
            [c - 1 for c in target.cores] + [target.batch_log2 - params.min_batch_log2, target.prefetch],
            dtype=np.int64,
        )
    now = current_config(observation)
    diff = [t - c for t, c in zip(target.cores, now.cores)]
    if min(diff) < 0:
        return 2 * int(np.argmin(diff)) + 1
    if max(diff) > 0:
        return 2 * int(np.argmax(diff))
    if target.batch_log2 != now.batch_log2:
        return 2 * NUM_STAGES + (0 if target.batch_log2 > now.batch_log2 else 1)
    if target.prefetch != now.prefetch:
        return 2 * NUM_STAGES + (2 if target.prefetch > now.prefetch else 3)
    return NOOP_ACTION


class PipelineTuner(Policy):
    """Base class of the baseline tuners: the project-wide :class:`recgym.policies.Policy` with
    per-env memory.

    Subclasses write :meth:`target` (and :meth:`_fresh`, the memory of a new episode). The base
    constructor calls no overridable method: a subclass sets its own attributes after
    ``super().__init__(params)``, and each env's memory is made from :meth:`_fresh` when first used.

    Args:
        params: The environment's params (action mode and bounds).

    Attributes:
        name: Display name used in results tables.
        num_envs: Envs the tuner acts for (set by :meth:`reset`).
        rng: The tuner's own generator (seeded by :meth:`reset`).
    """

    name = "tuner"

    def __init__(self, params: PipelineParams):
        super().__init__()
        self.params = params
        self._memory: list[dict] = []

    def reset(self, num_envs: int = 1, seed: int | None = None) -> None:
        """Act for ``num_envs`` envs from now on; forget every episode; reseed when given a seed."""
        if isinstance(num_envs, bool) or not isinstance(num_envs, int | np.integer) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        super().reset(int(num_envs), seed)

    def begin_episode(self, env_mask) -> None:
        """The envs where ``env_mask`` (``(num_envs,)`` bool) is true start a new episode."""
        memories = self._memories()
        for i in np.flatnonzero(np.asarray(env_mask, dtype=bool)):
            memories[i] = self._fresh()

    def _memories(self) -> list[dict]:
        """Each env's per-episode memory, made fresh on first use and when ``num_envs`` changed."""
        if len(self._memory) != self.num_envs:
            self._memory = [self._fresh() for _ in range(self.num_envs)]
        return self._memory

    def _fresh(self) -> dict:
        """The per-env memory at the start of an episode."""
        return {}

    def target(self, observation, info, memory: dict | None = None) -> Target:  # pragma: no cover
        """The configuration to run next (``memory``: this env's; defaults to env 0's)."""
        raise NotImplementedError

    def act(self, observation, info):
        """The action for one env (the tuner must have been reset for ``num_envs=1``)."""
        if self.num_envs != 1:
            raise RuntimeError(f"act() serves one env but the tuner was reset for num_envs={self.num_envs}")
        obs = np.asarray(observation)
        return target_to_action(self.params, obs, self.target(obs, info, self._memories()[0]))

    def act_batch(self, observations, infos):
        """Actions for ``num_envs`` envs: ``(n,)`` (increment) or ``(n, 8)`` (absolute) int64."""
        obs = np.asarray(observations)
        if obs.shape[0] != self.num_envs:
            raise ValueError(f"expected {self.num_envs} observations, got {obs.shape[0]}")
        actions = []
        memories = self._memories()
        for i in range(self.num_envs):
            info_i = {k: np.asarray(v)[i] for k, v in infos.items() if not k.startswith("_")}
            actions.append(target_to_action(self.params, obs[i], self.target(obs[i], info_i, memories[i])))
        return np.asarray(actions, dtype=np.int64)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _budget(observation) -> int:
    return max(int(math.floor(float(observation[OBS_AVAILABLE]) + 1e-6)), 1)


class StaticEvenSplit(PipelineTuner):
    """A static configuration: ``budget // 6`` workers per stage (the remainder to the earliest
    stages), the initial batch size and prefetch; decided on the first observation, never changed.
    """

    name = "static-even"

    def target(self, observation, info, memory=None) -> Target:
        memory = self._memories()[0] if memory is None else memory
        if "fixed" not in memory:
            budget = _budget(observation)
            base, extra = divmod(budget, NUM_STAGES)
            cores = tuple(max(base + (1 if i < extra else 0), 1) for i in range(NUM_STAGES))
            memory["fixed"] = Target(cores, self.params.initial_batch_log2, self.params.initial_prefetch)
        return memory["fixed"]


class AllCores(PipelineTuner):
    """Plumber's HEURISTIC baseline (Kuchnik et al., MLSys '22): every stage's parallelism set to
    the machine's core count, decided once; initial batch size and prefetch."""

    name = "all-cores"

    def target(self, observation, info, memory=None) -> Target:
        memory = self._memories()[0] if memory is None else memory
        if "fixed" not in memory:
            budget = _budget(observation)
            memory["fixed"] = Target((budget,) * NUM_STAGES, self.params.initial_batch_log2, self.params.initial_prefetch)
        return memory["fixed"]


def _per_worker_seconds(observation) -> np.ndarray:
    """Per-sample seconds of one worker, estimated the way tf.data and Plumber do: measured stage
    rate divided by its workers (linear scaling assumed; Amdahl and time slicing go unseen)."""
    rates = np.maximum(np.asarray(observation[OBS_RATES], dtype=np.float64) / RATE_UNIT, 1e-9)
    cores = np.asarray(observation[OBS_CORES], dtype=np.float64)
    return cores / rates


def _consumer_rate(observation) -> float:
    """The trainer's rate as the pipeline sees it: throughput / (1 - idle fraction)."""
    x = float(observation[OBS_THROUGHPUT]) / RATE_UNIT
    idle = float(observation[OBS_IDLE])
    return x / max(1.0 - idle, 1e-3) if x > 0 else math.inf


def _mm1k(lam: float, mu: float, k: float) -> float:
    slow, fast = min(lam, mu), max(lam, mu)
    if not math.isfinite(fast):
        return slow
    r = slow / fast
    if abs(1.0 - r) < 1e-9:
        return slow * k / (k + 1.0)
    return slow * (1.0 - r**k) / (1.0 - r ** (k + 1.0))


class Autotune(PipelineTuner):
    """tf.data AUTOTUNE's hill climb (Murray et al., VLDB '21), re-run on every observation.

    The model: stage ``i`` at parallelism ``p_i`` produces ``p_i / s_i`` samples/s with ``s_i`` the
    measured per-element time (linear scaling); the prefetch buffer couples the slowest stage to the
    consumer as an M/M/1/K queue. Starting from parallelism 1 and buffer 1, it repeatedly adds 1 to
    the knob that most lowers the modelled time per element (a knob that lowers it by zero still
    qualifies, as in tf.data, so ties keep climbing), and stops when (a) that time is below
    the total per-element CPU time divided by the CPU budget, (b) its RAM estimate — buffered
    elements only — exceeds the RAM budget of half the machine's memory, or (c) every knob is at its
    maximum (each parallelism at the CPU budget). It never tunes the batch size. Rule (b) ignores
    the workers' resident memory and the trainer's own, which is how AUTOTUNE runs out of memory
    on machines where those dominate.
    """

    name = "autotune"

    def target(self, observation, info, memory=None) -> Target:
        now = current_config(observation)
        if float(observation[OBS_THROUGHPUT]) <= 0:
            return now
        seconds = _per_worker_seconds(observation)
        consumer = _consumer_rate(observation)
        budget = _budget(observation)
        ram_budget = 0.5 * float(observation[OBS_MEMORY_CAP])
        element = np.asarray(info["element_gib"], dtype=np.float64)
        batch = 2.0**now.batch_log2
        shuffle = float(info.get("shuffle_buffer", 0.0))
        par = [1] * NUM_STAGES
        buffer = 1
        target_time = float(np.sum(seconds)) / budget

        def output_time(p, k):
            lam = min(pi / si for pi, si in zip(p, seconds))
            return 1.0 / max(_mm1k(lam, consumer, k + 1.0), 1e-12)

        def ram(p, k):
            inflight = sum(pi * e for pi, e in zip(p[:4], element[:4])) + batch * (
                p[4] * element[4] + p[5] * element[5]
            )
            return inflight + shuffle * element[3] + k * batch * element[5]

        while True:
            current = output_time(par, buffer)
            all_max = all(p >= budget for p in par) and buffer >= self.params.max_prefetch
            if current < target_time or all_max or ram(par, buffer) > ram_budget:
                break
            # tf.data's rule: the knob with the largest decrease of the modelled time wins, and a
            # zero decrease still beats none (best_delta starts at -1), so ties keep climbing.
            best, best_delta = None, -1.0
            for i in range(NUM_STAGES):
                if par[i] < budget:
                    trial = par.copy()
                    trial[i] += 1
                    delta = current - output_time(trial, buffer)
                    if delta > best_delta:
                        best, best_delta = ("p", i), delta
            if buffer < self.params.max_prefetch:
                delta = current - output_time(par, buffer + 1)
                if delta > best_delta:
                    best, best_delta = ("b", 0), delta
            if best is None:
                break
            if best[0] == "p":
                par[best[1]] += 1
            else:
                buffer += 1
        return Target(tuple(par), now.batch_log2, buffer)


class PlumberLP(PipelineTuner):
    """Plumber (Kuchnik et al., MLSys '22): profile, then one linear program, then fixed.

    For the first ``profile_steps`` observations it keeps the starting configuration and averages
    each stage's measured per-worker rate ``r_i`` (rate / workers: Plumber's linear model). Then it
    solves ``max t  s.t.  t <= r_i x_i,  sum_i x_i <= budget,  x_i >= 1`` with
    :func:`scipy.optimize.linprog`, rounds down, hands the leftover cores to the largest fractional
    parts, and keeps that allocation for the rest of the episode (Plumber is an offline optimiser:
    it rewrites the pipeline once). Batch size and prefetch stay as configured.

    Args:
        params: Environment params.
        profile_steps: Observations averaged before solving.
    """

    name = "plumber-lp"

    def __init__(self, params: PipelineParams, profile_steps: int = 3):
        super().__init__(params)
        if profile_steps < 1:
            raise ValueError(f"profile_steps must be >= 1, got {profile_steps!r}")
        self.profile_steps = profile_steps

    def _fresh(self) -> dict:
        return {"samples": [], "fixed": None}

    def target(self, observation, info, memory=None) -> Target:
        memory = self._memories()[0] if memory is None else memory
        if memory["fixed"] is not None:
            return memory["fixed"]
        now = current_config(observation)
        if float(observation[OBS_THROUGHPUT]) > 0:
            memory["samples"].append(1.0 / _per_worker_seconds(observation))
        if len(memory["samples"]) < self.profile_steps:
            return now
        from scipy.optimize import linprog

        rate = np.mean(memory["samples"], axis=0)
        budget = max(_budget(observation), NUM_STAGES)
        # Variables (x_0..x_5, t); minimise -t.
        c = np.zeros(NUM_STAGES + 1)
        c[-1] = -1.0
        a_ub = np.zeros((NUM_STAGES + 1, NUM_STAGES + 1))
        for i in range(NUM_STAGES):
            a_ub[i, i] = -rate[i]
            a_ub[i, -1] = 1.0
        a_ub[-1, :NUM_STAGES] = 1.0
        b_ub = np.zeros(NUM_STAGES + 1)
        b_ub[-1] = budget
        bounds = [(1.0, None)] * NUM_STAGES + [(0.0, None)]
        result = linprog(c, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
        x = result.x[:NUM_STAGES] if result.success else np.full(NUM_STAGES, budget / NUM_STAGES)
        cores = np.maximum(np.floor(x + 1e-9), 1).astype(int)
        leftover = budget - int(cores.sum())
        for i in np.argsort(-(x - np.floor(x + 1e-9)))[: max(leftover, 0)]:
            cores[i] += 1
        memory["fixed"] = Target(tuple(int(c) for c in cores), now.batch_log2, now.prefetch)
        return memory["fixed"]


class RayAutoscaler(PipelineTuner):
    """Ray Data's actor-pool autoscaling: per stage, +1 worker when its utilisation is above
    ``upscale`` (its queue grows), -1 when below ``downscale``, within the available cores.

    Utilisation is the observation's demand/capacity ratio (see
    :func:`recgym.envs.pipeline.dynamics.observe`). Scale-ups go to the most utilised stages first
    and stop when the cores are all in use; memory is not considered. Batch size and prefetch stay.

    Args:
        params: Environment params.
        upscale: Utilisation above which a stage gets one more worker.
        downscale: Utilisation below which a stage loses one.
    """

    name = "ray-autoscaler"

    def __init__(self, params: PipelineParams, upscale: float = 1.0, downscale: float = 0.5):
        super().__init__(params)
        if not 0.0 < downscale < upscale:
            raise ValueError(f"need 0 < downscale < upscale, got downscale={downscale!r}, upscale={upscale!r}")
        self.upscale, self.downscale = upscale, downscale

    def target(self, observation, info, memory=None) -> Target:
        now = current_config(observation)
        util = np.asarray(observation[OBS_UTILISATION], dtype=np.float64)
        if float(observation[OBS_THROUGHPUT]) <= 0:
            return now
        cores = list(now.cores)
        for i in range(NUM_STAGES):
            if util[i] < self.downscale and cores[i] > 1:
                cores[i] -= 1
        free = _budget(observation) - sum(cores)
        for i in np.argsort(-util):
            if free <= 0:
                break
            if util[i] > self.upscale:
                cores[i] += 1
                free -= 1
        return Target(tuple(cores), now.batch_log2, now.prefetch)


class RandomSearch(PipelineTuner):
    """Random search with a step budget: try ``budget`` random configurations (cores split at
    random over the available cores, any batch size and prefetch), then run the one with the best
    measured throughput for the rest of the episode. Crashes while exploring are real crashes.

    Args:
        params: Environment params.
        budget: Configurations tried.
    """

    name = "random-search"

    def __init__(self, params: PipelineParams, budget: int = 20):
        super().__init__(params)
        if budget < 1:
            raise ValueError(f"budget must be >= 1, got {budget!r}")
        self.budget = budget

    def _fresh(self) -> dict:
        return {"tried": 0, "last": None, "best": None}

    def target(self, observation, info, memory=None) -> Target:
        memory = self._memories()[0] if memory is None else memory
        if memory["last"] is not None:
            measured = float(observation[OBS_THROUGHPUT])
            if memory["best"] is None or measured > memory["best"][0]:
                memory["best"] = (measured, memory["last"])
        if memory["tried"] >= self.budget:
            memory["last"] = None
            return memory["best"][1] if memory["best"] is not None else current_config(observation)
        budget = _budget(observation)
        cuts = np.sort(self.rng.integers(0, max(budget - NUM_STAGES, 0) + 1, size=NUM_STAGES - 1))
        extra = np.diff(np.concatenate([[0], cuts, [max(budget - NUM_STAGES, 0)]]))
        p = self.params
        memory["last"] = Target(
            tuple(int(1 + e) for e in extra),
            int(self.rng.integers(p.min_batch_log2, p.max_batch_log2 + 1)),
            int(self.rng.integers(0, p.max_prefetch + 1)),
        )
        memory["tried"] += 1
        return memory["last"]


class Oracle(PipelineTuner):
    """The exact optimum of the conditions just observed (``info["optimal_action"]``, absolute).

    It reads the optimum from ``info``, which only an env wrapped in
    :class:`~recgym.envs.pipeline.wrappers.PipelineOptimum` (or
    :class:`~recgym.envs.pipeline.wrappers.PipelineVectorOptimum`) provides:
    ``gym.make("RecGym-Pipeline-v0", track_optimum=True)``.
    """

    name = "oracle"

    def target(self, observation, info, memory=None) -> Target:
        if "optimal_action" not in info:
            raise KeyError(
                "the oracle reads info['optimal_action'], which this env does not provide: make it with "
                "gym.make('RecGym-Pipeline-v0', track_optimum=True) or wrap it in "
                "recgym.envs.pipeline.wrappers.PipelineOptimum (PipelineVectorOptimum for a vector env)"
            )
        a = np.asarray(info["optimal_action"], dtype=np.int64)
        return Target(
            tuple(int(v) + 1 for v in a[:NUM_STAGES]),
            int(a[NUM_STAGES]) + self.params.min_batch_log2,
            int(a[NUM_STAGES + 1]),
        )


#: Every baseline by name, in table order.
BASELINES: dict[str, type[PipelineTuner]] = {
    cls.name: cls for cls in (StaticEvenSplit, AllCores, Autotune, PlumberLP, RayAutoscaler, RandomSearch, Oracle)
}


def make_baseline(name: str, params: PipelineParams, **kwargs) -> PipelineTuner:
    """Build a baseline by name (see :data:`BASELINES`)."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose from {sorted(BASELINES)}")
    return BASELINES[name](params, **kwargs)
