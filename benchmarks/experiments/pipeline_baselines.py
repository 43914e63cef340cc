"""Pipeline baselines: every baseline tuner on every RecGym-Pipeline-v0 scenario.

For each (baseline, scenario) it runs one episode per held-out scenario seed in the ``absolute``
action mode and reports, over seeds: the mean per-step efficiency (true throughput / the optimum
of the step's conditions, with every step after an OOM crash counted as 0 — the trainer is down)
with its 95% confidence interval; the same mean before and after the mid-episode change; the number
of episodes that crashed; and the median number of steps until the efficiency first reached 0.9.

Reproduce: ``python -m benchmarks.run --only pipeline_baselines`` (``--quick``: 3 seeds).
"""

from __future__ import annotations

import math

import numpy as np

from benchmarks.common import ExperimentResult, RunContext, format_ci, mean_ci

COLUMNS = [
    "baseline",
    "scenario",
    "efficiency",
    "before change",
    "after change",
    "OOM crashes",
    "steps to 90%",
]


def run_episode(env, policy, seed: int) -> dict:
    """One episode of ``policy`` on ``env`` (wrapped in ``PipelineOptimum``); per-step efficiencies
    (0 after a crash) and the crash flag."""
    obs, info = env.reset(seed=seed)
    policy.reset(seed=seed)
    horizon = env.unwrapped.params.max_episode_steps
    efficiency = np.zeros(horizon)
    crashed = False
    for t in range(horizon):
        obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
        efficiency[t] = info["efficiency"]
        if terminated:
            crashed = True
            break
        if truncated:
            break
    reached = np.flatnonzero(efficiency >= 0.9)
    return {
        "efficiency": efficiency,
        "crashed": crashed,
        "steps_to_90": int(reached[0]) + 1 if reached.size else None,
    }


def run(ctx: RunContext) -> ExperimentResult:
    """The baselines table (synthetic workload model; the dataset setting does not apply)."""
    from recgym.envs.pipeline.baselines import BASELINES, make_baseline
    from recgym.envs.pipeline.env import PipelineEnv
    from recgym.envs.pipeline.params import HELD_OUT_SEED_START, SCENARIOS
    from recgym.envs.pipeline.wrappers import PipelineOptimum

    n_seeds = 3 if ctx.quick else 20
    seeds = [HELD_OUT_SEED_START + 1000 * ctx.seed + i for i in range(n_seeds)]
    rows, records = [], []
    for scenario in SCENARIOS:
        env = PipelineOptimum(PipelineEnv(scenario=scenario, action_mode="absolute"))
        params = env.unwrapped.params
        change = params.change_step
        for name in BASELINES:
            policy = make_baseline(name, params)
            episodes = [run_episode(env, policy, seed) for seed in seeds]
            per_seed = [float(ep["efficiency"].mean()) for ep in episodes]
            before = [float(ep["efficiency"][:change].mean()) for ep in episodes]
            after = [float(ep["efficiency"][change:].mean()) for ep in episodes]
            crashes = sum(ep["crashed"] for ep in episodes)
            reach = [ep["steps_to_90"] for ep in episodes if ep["steps_to_90"] is not None]
            mean, half = mean_ci(per_seed)
            rows.append(
                {
                    "baseline": name,
                    "scenario": scenario,
                    "efficiency": format_ci(mean, half),
                    "before change": f"{np.mean(before):.3f}",
                    "after change": f"{np.mean(after):.3f}",
                    "OOM crashes": f"{crashes}/{n_seeds}",
                    "steps to 90%": _steps(reach, n_seeds),
                }
            )
            records.append(
                {
                    "baseline": name,
                    "scenario": scenario,
                    "seeds": seeds,
                    "efficiency_per_seed": per_seed,
                    "efficiency_mean": mean,
                    "efficiency_ci95": None if math.isnan(half) else half,
                    "before_change_per_seed": before,
                    "after_change_per_seed": after,
                    "oom_crashes": crashes,
                    "steps_to_90_per_seed": [ep["steps_to_90"] for ep in episodes],
                }
            )
    return ExperimentResult(
        name="pipeline_baselines",
        title="RecGym-Pipeline-v0: baseline tuners, efficiency = throughput / optimum",
        uses_dataset=False,  # simulated pipeline: its numbers do not depend on MovieLens
        columns=COLUMNS,
        rows=rows,
        notes=[
            f"{n_seeds} held-out scenario seeds from {seeds[0]}; one 100-step episode each, absolute "
            "action mode; mean ± 95% t-interval over seeds of the per-episode mean efficiency.",
            "A step's efficiency is the true throughput over the exact optimum of that step's "
            "conditions; every step after an OOM crash counts as 0 (the episode terminates).",
            "'before/after change': steps 1-50 / 51-100 (the change is at step 50 in drift and "
            "machine-change; the other scenarios show two halves of the same conditions).",
            "'steps to 90%': median first step with efficiency >= 0.9 over the seeds that reached it "
            "(count in brackets); '-' when none did.",
            "Workload model, not a measured machine: the numbers compare tuning rules under the "
            "documented model (docs/environments/pipeline.md).",
        ],
        records=records,
    )


def _steps(reached: list[int], n: int) -> str:
    if not reached:
        return "-"
    return f"{int(np.median(reached))} ({len(reached)}/{n})"
