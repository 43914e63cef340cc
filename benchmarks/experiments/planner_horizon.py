"""RecGym-MovieLens's privileged planner: its return against its horizon and settings, and its cost.

The planner (``BASELINES["planner"]``, :class:`recgym.envs.movielens.PlannerPolicy`) judges each
candidate by simulating ``H`` steps of the true dynamics. This experiment runs it on the held-out
users of the main table (same seeds, so the default row equals the main table's planner row)
for several horizons (to the end of the episode, the default, among them) and, at the default
horizon, with more samples, fewer candidates or a longer shortlist, beside the two privileged
heuristics it is compared with. For every run it reports:

* the mean return (95% CI) and the paired ratios to boredom-aware and oracle-greedy;
* how often, over the scored steps, the planner served what oracle-greedy or boredom-aware would
  have served *in the same state* (read through the same privileged access): 100% agreement with
  oracle-greedy at ``H = 1`` is the check that a one-step horizon reproduces oracle-greedy;
* the wall-clock cost in seconds per 1,000 episodes (with the machine's load average).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from benchmarks.common import ExperimentResult, RunContext, format_ci, mean_ci
from recgym.envs.movielens import PlannerConfig, PlannerPolicy
from recgym.evaluation import BASELINES, PolicyContext, evaluate, make_eval_env, paired_ratio_ci
from recgym.policies import Policy, top_k_items

HORIZONS: tuple[int | None, ...] = (1, 2, 5, 10, 20, None)
"""Horizons of the single-item table (``None``: to the end of the episode, the default)."""

SLATE_HORIZONS: tuple[int | None, ...] = (1, 5, 20, None)
"""Horizons of the slates-of-5 table."""

SENSITIVITY: dict[str, dict[str, int]] = {
    "samples 16": {"samples": 16},
    "candidates 2": {"candidates": 2},
    "shortlist 64": {"shortlist": 64},
}
"""Settings varied one at a time around the default, at the default horizon (single items)."""


def horizon_label(horizon: int | None) -> str:
    """``"H = 5"``, or ``"to the end"`` for rollouts to the end of the episode (``None``)."""
    return "to the end" if horizon is None else f"H = {horizon}"

WORLD_ID = "RecGym-MovieLens-v0"


class _AgreementLog(Policy):
    """Wraps a policy; counts the scored steps where it serves what the heuristics would, state by state."""

    def __init__(self, inner: Policy, access: Any) -> None:
        super().__init__()
        self.inner, self.access, self.name = inner, access, inner.name
        self.steps = self.as_greedy = self.as_aware = 0

    def reset(self, num_envs: int = 1, seed: int | None = None) -> None:
        self.num_envs = num_envs
        self.inner.reset(num_envs, seed)

    def begin_episode(self, env_mask: np.ndarray) -> None:
        self.inner.begin_episode(env_mask)

    def act_batch(self, observations: np.ndarray, infos: Mapping[str, Any]) -> np.ndarray:
        actions = np.asarray(self.inner.act_batch(observations, infos))
        scored = self.access.active()
        served = actions.reshape(self.num_envs, -1)[scored]
        utilities = self.access.true_utilities()[scored]
        k = served.shape[1]
        greedy = top_k_items(utilities, k)
        aware = top_k_items(utilities - self.access.boredom_cost()[scored], k)
        self.steps += int(scored.sum())
        self.as_greedy += int((served == greedy).all(axis=1).sum())
        self.as_aware += int((served == aware).all(axis=1).sum())
        return actions


def _episodes(ctx: RunContext, pool: int) -> int:
    # the main table's protocol: each held-out user five times (full), or once (quick), capped
    return min(pool, 60) if ctx.quick else min(5 * pool, 1000)


def run(ctx: RunContext) -> ExperimentResult:
    """Evaluate the planner at several horizons and settings; write the table."""
    data_kwargs = {"dataset": ctx.dataset} | ({"synthetic_seed": ctx.seed} if ctx.synthetic else {})
    default = PlannerConfig()
    runs: list[tuple[str, str, PlannerConfig]] = []
    if ctx.quick:
        runs += [("dynamic", horizon_label(h), replace(default, horizon=h)) for h in (1, 5)]
    else:
        runs += [("dynamic", horizon_label(h), replace(default, horizon=h)) for h in HORIZONS]
        runs += [("dynamic", name, replace(default, **change)) for name, change in SENSITIVITY.items()]
        runs += [("dynamic, slate 5", horizon_label(h), replace(default, horizon=h)) for h in SLATE_HORIZONS]
    worlds = {"dynamic": {}, "dynamic, slate 5": {"slate_size": 5}}

    rows, records, notes = [], [], []
    load_before = os.getloadavg()[0]
    for world in dict.fromkeys(w for w, _, _ in runs):
        env = make_eval_env(WORLD_ID, num_envs=None, **data_kwargs, **worlds[world])
        n_episodes = _episodes(ctx, len(env.unwrapped.params.world.user_pool))
        env.close()
        env = make_eval_env(WORLD_ID, num_envs=min(n_episodes, 256), **data_kwargs, **worlds[world])
        reference = {name: evaluate(BASELINES[name], env, n_episodes, seed=ctx.seed).episodes["return"].to_numpy()
                     for name in ("oracle-greedy", "boredom-aware")}
        for name, returns in reference.items():
            mean, half = mean_ci(returns)
            rows.append({"world": world, "policy": name, "return": format_ci(mean, half, 1)})
        for run_world, setting, config in runs:
            if run_world != world:
                continue
            logs: list[_AgreementLog] = []

            def factory(pctx: PolicyContext, config=config, logs=logs) -> Policy:
                logs.append(_AgreementLog(PlannerPolicy(pctx.access, config, pctx.slate_size), pctx.access))
                return logs[-1]

            start = time.perf_counter()
            result = evaluate(factory, env, n_episodes, seed=ctx.seed, name="planner")
            seconds = time.perf_counter() - start
            returns = result.episodes["return"].to_numpy()
            mean, half = mean_ci(returns)
            log = logs[0]
            row = {"world": world, "policy": f"planner, {setting}", "H": config.horizon or "end",
                   "candidates": config.candidates, "samples": config.samples, "shortlist": config.shortlist,
                   "return": format_ci(mean, half, 1)}
            record = dict(row, episodes=n_episodes, seconds=seconds, user_steps=int(result.episodes["length"].sum()),
                          traces=log.inner.trace_count, return_mean=mean, return_ci95=half)
            for name, other in reference.items():
                ratio, low, high = paired_ratio_ci(returns, other)
                row[f"/ {name}"] = f"{ratio:.3f} [{low:.3f}, {high:.3f}]"
                record[f"ratio_to_{name}"] = {"ratio": ratio, "low": low, "high": high}
            row["same as oracle-greedy"] = f"{log.as_greedy / log.steps:.1%}"
            row["same as boredom-aware"] = f"{log.as_aware / log.steps:.1%}"
            row["s / 1,000 episodes"] = f"{1000 * seconds / n_episodes:.0f}"
            rows.append(row)
            records.append(record)
        env.close()
        notes.append(f"{world}: {n_episodes} episodes per row on held-out users of {ctx.dataset}, episode e "
                     f"seeded {ctx.seed} + e (paired with every other row and with movielens_policies).")

    notes += [
        f"Defaults: {default}. Each setting row changes one field of it; H = end: rollouts to the end "
        "of the episode (the user leaves or the time limit), the default.",
        "same as X: share of scored steps where the planner served exactly what X would have served in "
        "the same state (same item, or same slate in the same order).",
        f"Cost: wall-clock seconds of the whole evaluation (env, harness and planner) per 1,000 episodes, "
        f"on {os.cpu_count()} CPU cores; load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after (the machine is shared: figures scale with the load).",
    ]
    columns = ["world", "policy", "H", "candidates", "samples", "shortlist", "return", "/ boredom-aware",
               "/ oracle-greedy", "same as oracle-greedy", "same as boredom-aware", "s / 1,000 episodes"]
    return ExperimentResult(
        name="planner_horizon",
        title=f"RecGym-MovieLens: the privileged planner by horizon and settings ({ctx.dataset})",
        columns=columns,
        rows=rows,
        notes=notes,
        records=records,
    )
