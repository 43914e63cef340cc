"""Pipeline baselines: every baseline tuner on every RecGym-Pipeline-v0 scenario.

Scored by the project's harness (:func:`recgym.evaluation.evaluate` with the pipeline metrics plug-in,
:class:`~recgym.envs.pipeline.evaluation.PipelineMetrics`), like every other policy.

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


def run(ctx: RunContext) -> ExperimentResult:
    """The baselines table (synthetic workload model; the dataset setting does not apply)."""
    from recgym.envs.pipeline.baselines import BASELINES, make_baseline
    from recgym.envs.pipeline.params import SCENARIOS, held_out_seeds
    from recgym.evaluation import evaluate, make_eval_env

    n_seeds = 3 if ctx.quick else 20
    # the documented held-out seeds, shifted per run seed (the harness seeds episode e with first + e)
    seeds = [s + 1000 * ctx.seed for s in held_out_seeds(n_seeds)]
    rows, records = [], []
    for scenario in SCENARIOS:
        # every seed's episode at once in the native vector env, with the optimum instrumentation
        env = make_eval_env("RecGym-Pipeline-v0", num_envs=n_seeds, scenario=scenario,
                            action_mode="absolute")
        for name in BASELINES:
            result = evaluate(lambda c, name=name: make_baseline(name, c.params), env, n_seeds, seed=seeds[0])
            table = result.episodes
            assert table["seed"].tolist() == seeds
            per_seed = table["efficiency"].tolist()
            before = table["efficiency_before_change"].tolist()
            after = table["efficiency_after_change"].tolist()
            crashes = int(table["oom"].sum())
            steps = table["steps_to_90"].to_numpy()
            reach = [int(v) for v in steps if not np.isnan(v)]
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
                    "steps_to_90_per_seed": [None if np.isnan(v) else int(v) for v in steps],
                }
            )
        env.close()
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
