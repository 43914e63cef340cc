"""The pipeline tuner (PPO, :mod:`agents.tuner`): trained on random pipelines, scored like every baseline.

For each action mode of :data:`MODES` the experiment trains one tuner on the ``random`` scenario
(a fresh pipeline from the documented ranges at every reset, drawn from the training run's key
chain, not from the harness's held-out integer seeds) with the CLI's default config — so the
tuner trains and acts under its memory shield (:class:`agents.tuner.MemoryShield`) — keeps
``candidates`` evenly spaced checkpoints of the run, chooses the one with the best mean
efficiency on validation seeds (:func:`agents.tuner.select_checkpoint`: seeds from
:data:`agents.tuner.VALIDATION_SEED_START`, disjoint from the held-out ones), then scores it and
every baseline tuner of
:mod:`recgym.envs.pipeline.baselines` in the same action mode with the evaluation harness on the
same held-out episodes: :data:`FULL` ``random_pipelines`` held-out ``random`` pipelines and
``scenario_seeds`` held-out seeds of each named scenario. It writes

* ``pipeline_tuner``: the tuner's rows beside the baselines' (mean efficiency ± 95% t-interval
  over episodes, before / after the change, OOM crashes, steps to 90%), with the best non-oracle
  baseline of each scenario marked;
* ``pipeline_tuner_generalisation``: the same tuners on random pipelines whose transform stage
  costs more than any training pipeline's (:data:`SHIFTS`), beside the in-distribution figure;
* ``pipeline_tuner_training``: environment steps, wall and CPU seconds of each training run, and
  the checkpoint chosen;
* ``pipeline_tuner_validation``: every candidate checkpoint's validation scores;
* ``pipeline_tuner_throughput.png``: throughput over an episode (mean over the held-out seeds) of
  the tuner, the AUTOTUNE-style baseline and the optimum in ``machine-change`` and ``memory-tight``.

Reproduce: ``python -m benchmarks.run --only pipeline_tuner`` (``--quick``: a short training and a
few episodes, a smoke test of the whole path, not a result).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import ExperimentResult, RunContext

MODES: tuple[str, ...] = ("increment", "absolute")
"""Action modes trained and evaluated (InTune's increments first)."""

FULL = {"total_steps": {"increment": 4_194_304, "absolute": 1_048_576}, "random_pipelines": 200,
        "scenario_seeds": 20, "candidates": 8, "validation_random": 100, "validation_seeds": 20}
"""Full run: environment steps of each mode's training (about 8 and 3 CPU-minutes: the main job's
~10-minute training budget on 2 cores), held-out random pipelines, held-out seeds per named scenario,
evenly spaced checkpoints compared on validation, validation random pipelines and seeds per named
scenario."""
QUICK = {"total_steps": {"increment": 128 * 16 * 6, "absolute": 128 * 16 * 6}, "random_pipelines": 10,
         "scenario_seeds": 3, "candidates": 2, "validation_random": 3, "validation_seeds": 1}
"""Quick run (CI): a few updates and episodes."""

SHIFTS: dict[str, float] = {"transform cost x2": 2.0, "transform cost x4": 4.0}
"""Generalisation: random pipelines with the profile's transform cost multiplied by this factor, so
that its range (the profile's 150 µs times the training multipliers 0.33-3) starts where the
training range's upper half does and ends 2x (4x) beyond the costliest transform trained on."""

PLOT_SCENARIOS: tuple[str, ...] = ("machine-change", "memory-tight")
"""Scenarios of the throughput-over-an-episode plot."""


def tuner_config(ctx: RunContext, action_mode: str):
    """The config the main job trains with: the CLI's defaults, sized by quick/full."""
    from agents.tuner import TunerConfig

    size = QUICK if ctx.quick else FULL
    extra = {"num_envs": 128, "rollout_steps": 16} if ctx.quick else {}
    return TunerConfig(action_mode=action_mode, seed=ctx.seed, total_steps=size["total_steps"][action_mode],
                       eval_random_pipelines=0, eval_scenario_seeds=0, progress=False, tensorboard=False,
                       **extra)


def shifted_params_overrides(factor: float) -> dict[str, Any]:
    """``PipelineParams`` overrides of the ``random`` scenario with the transform cost times ``factor``."""
    from recgym.envs.pipeline import PipelineProfile
    from recgym.envs.pipeline.params import STAGE_INDEX

    profile = PipelineProfile()
    cost = list(profile.cpu_seconds_per_sample)
    cost[STAGE_INDEX["transform"]] *= factor
    return {"profile": dataclasses.replace(profile, cpu_seconds_per_sample=tuple(cost))}


def run(ctx: RunContext) -> list[ExperimentResult]:
    """Train a tuner per action mode, evaluate it beside the baselines, write tables and the plot."""

    from agents.tuner import (
        VALIDATION_SEED_START,
        TunerPolicy,
        evaluate_policy,
        evaluation_row,
        make_train,
        select_checkpoint,
    )
    from recgym.envs.pipeline import HELD_OUT_SEED_START, SCENARIOS
    from recgym.envs.pipeline.baselines import BASELINES, make_baseline

    size = QUICK if ctx.quick else FULL
    first_seed = HELD_OUT_SEED_START + 1000 * ctx.seed
    rows, records, training_rows, general_rows, validation_rows, tuners = [], [], [], [], [], {}
    for mode in MODES:
        config = tuner_config(ctx, mode)
        training = make_train(config)
        snapshots, wall, cpu = train_with_snapshots(training, size["candidates"])
        best, scores = select_checkpoint(
            {update: (lambda p, s=s, t=training: TunerPolicy.from_training(t, s, p)) for update, s in snapshots.items()},
            mode, random_pipelines=size["validation_random"], scenario_seeds=size["validation_seeds"])
        state = snapshots[best]
        tuners[mode] = (training, state)
        for update, score in scores.items():
            validation_rows.append({
                "action mode": mode, "update": f"{update}{' (chosen)' if update == best else ''}",
                "env steps": f"{update * config.steps_per_update:,}", "validation mean": f"{score['score']:.3f}",
                **{scenario: f"{value:.3f}" for scenario, value in score["scenarios"].items()},
                "OOM crashes": str(score["oom"])})
        steps = config.num_updates * config.steps_per_update
        training_rows.append({"action mode": mode, "env steps": f"{steps:,}", "wall s": f"{wall:.0f}",
                              "CPU s": f"{cpu:.0f}", "env steps / wall s": f"{steps / wall:,.0f}",
                              "env steps / CPU s": f"{steps / cpu:,.0f}",
                              "chosen checkpoint": f"update {best} of {config.num_updates} "
                                                   f"({best * config.steps_per_update:,} steps)"})

        def tuner_for(ctx_, training=training, state=state):
            return TunerPolicy.from_training(training, state, ctx_.params)

        for scenario in SCENARIOS:
            n = size["random_pipelines"] if scenario == "random" else size["scenario_seeds"]
            scenario_records = [evaluate_policy(tuner_for, scenario, mode, n, seed=first_seed)]
            scenario_records += [
                evaluate_policy(lambda c, name=name: make_baseline(name, c.params), scenario, mode, n, seed=first_seed)
                for name in BASELINES
            ]
            best = max((r for r in scenario_records[1:] if r["name"] != "oracle"),
                       key=lambda r: np.mean(r["efficiency"]))
            for record in scenario_records:
                row = evaluation_row(record)
                if record is best:
                    row["policy"] += " (best baseline)"
                rows.append(row)
                records.append(record)

        for label, factor in {"in distribution": 1.0, **SHIFTS}.items():
            overrides = {} if factor == 1.0 else shifted_params_overrides(factor)
            n = size["random_pipelines"]
            for factory in (tuner_for,
                            lambda c: make_baseline("autotune", c.params),
                            lambda c: make_baseline("oracle", c.params)):
                record = evaluate_policy(factory, "random", mode, n, seed=first_seed, **overrides)
                row = evaluation_row(record)
                general_rows.append({"pipelines": label, **row})

    figure = plot_throughput(
        Path(ctx.out_dir) / "pipeline_tuner_throughput.png",
        {mode: (lambda p, t=training, s=state: TunerPolicy.from_training(t, s, p)) for mode, (training, state) in tuners.items()},
        first_seed, size["scenario_seeds"])
    n_random, n_named = size["random_pipelines"], size["scenario_seeds"]
    notes = [
        f"{n_random} held-out random pipelines and {n_named} held-out seeds of each named scenario from seed "
        f"{first_seed}; one 100-step episode each; every policy in the row's action mode on the same episodes; "
        "mean ± 95% t-interval over episodes of the per-episode mean efficiency.",
        "A step's efficiency is the true throughput over the exact optimum of that step's conditions; every step "
        "after an OOM crash counts as 0 (recgym.evaluation.evaluate with the pipeline metrics plug-in).",
        "The tuner trained on the random scenario only (pipelines from its own key chain); the named scenarios are "
        "evaluation scenarios it never trained on. '(best baseline)' marks the best non-oracle baseline.",
        "Workload model, not a measured machine (docs/environments/pipeline.md).",
    ]
    return [
        ExperimentResult(name="pipeline_tuner", uses_dataset=False,
                         title="RecGym-Pipeline-v0: the PPO tuner beside the baseline tuners (efficiency = "
                               "throughput / optimum)",
                         columns=["policy", "action mode", "scenario", "efficiency", "before change", "after change",
                                  "OOM crashes", "steps to 90%"],
                         rows=rows, notes=notes, records=records, figures=[figure] if figure else []),
        ExperimentResult(name="pipeline_tuner_generalisation", uses_dataset=False,
                         title="RecGym-Pipeline-v0: the tuner on random pipelines with a costlier transform stage "
                               "than any it trained on",
                         columns=["pipelines", "policy", "action mode", "efficiency", "before change", "after change",
                                  "OOM crashes", "steps to 90%"],
                         rows=general_rows,
                         notes=[f"{n_random} held-out random pipelines (seeds from {first_seed}); the profile's "
                                "transform cost times 2 (4) before the random multipliers (0.33-3): up to 900 µs "
                                "(1.8 ms) per sample against at most 450 µs in training."]),
        ExperimentResult(name="pipeline_tuner_training", uses_dataset=False,
                         title="RecGym-Pipeline-v0: training the PPO tuner (one jitted train(key) per action mode)",
                         columns=["action mode", "env steps", "wall s", "CPU s", "env steps / wall s",
                                  "env steps / CPU s", "chosen checkpoint"],
                         rows=training_rows,
                         notes=["Wall and process CPU seconds of the training calls (compiled blocks of updates "
                                "between the candidate checkpoints), compilation included, validation excluded; on "
                                "a shared machine the CPU figure is the steadier one. The chosen checkpoint is the "
                                "one the other tables evaluate (pipeline_tuner_validation)."]),
        ExperimentResult(name="pipeline_tuner_validation", uses_dataset=False,
                         title="RecGym-Pipeline-v0: the tuner's candidate checkpoints on validation seeds",
                         columns=["action mode", "update", "env steps", "validation mean", *SCENARIOS,
                                  "OOM crashes"],
                         rows=validation_rows,
                         notes=[f"{size['validation_random']} validation random pipelines and "
                                f"{size['validation_seeds']} validation seeds of each named scenario from seed "
                                f"{VALIDATION_SEED_START} (agents.tuner.select_checkpoint), disjoint from the "
                                "held-out seeds of the other tables and from training's key chain; 'validation mean' "
                                "is the mean over scenarios of the mean episode efficiency, and the best one is "
                                "chosen."]),
    ]


def train_with_snapshots(training: Any, candidates: int) -> tuple[dict[int, Any], float, float]:
    """Run a training in ``candidates`` blocks of updates, keeping the state after each.

    The updates are those of ``train(key)`` (the same key chain and learning-rate schedule), run in
    blocks between the snapshots; the key is the config's seed.

    Returns:
        ``({updates done: TunerState}, wall seconds, process CPU seconds)`` of the training calls.
    """
    import jax

    config = training.config
    block = max(1, config.num_updates // candidates)
    state = training.init(jax.random.key(config.seed))
    snapshots, done, wall, cpu = {}, 0, 0.0, 0.0
    while done < config.num_updates:
        updates = min(block, config.num_updates - done)
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        state, _ = jax.block_until_ready(training.run(state, updates))
        wall += time.perf_counter() - start_wall
        cpu += time.process_time() - start_cpu
        done += updates
        snapshots[done] = state
    return snapshots, wall, cpu


def _episode_throughput(policy_factory, scenario: str, action_mode: str, seeds: list[int]) -> dict[str, np.ndarray]:
    """Per-step true throughput and optimum (k samples/s; 0 after a crash), mean over ``seeds``."""
    import gymnasium as gym

    import recgym  # noqa: F401

    env = gym.make("RecGym-Pipeline-v0", scenario=scenario, action_mode=action_mode, track_optimum=True)
    params = env.unwrapped.params
    horizon = params.max_episode_steps
    throughput, optimum = np.zeros((len(seeds), horizon)), np.zeros((len(seeds), horizon))
    for i, seed in enumerate(seeds):
        policy = policy_factory(params)
        policy.reset(seed=seed)
        obs, info = env.reset(seed=seed)
        for t in range(horizon):
            obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
            throughput[i, t] = info["throughput"] / 1e3
            optimum[i, t] = info["optimum"] / 1e3
            if terminated or truncated:
                optimum[i, t + 1:] = optimum[i, t]
                break
    env.close()
    return {"throughput": throughput.mean(axis=0), "optimum": optimum.mean(axis=0)}


def plot_throughput(path: Path, tuners: dict[str, Any], first_seed: int, n_seeds: int) -> Path | None:
    """Throughput over an episode: the tuners, AUTOTUNE-style (absolute mode, as published) and the optimum.

    Args:
        path: Where to write the PNG.
        tuners: ``{action_mode: factory(env_params) -> Policy}``, one trained tuner per mode.
        first_seed: First held-out scenario seed.
        n_seeds: Seeds averaged per curve.

    Returns:
        ``path``, or ``None`` when matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a dependency; the tables do not need it
        return None
    from recgym.envs.pipeline.baselines import make_baseline

    seeds = [first_seed + i for i in range(n_seeds)]
    fig, axes = plt.subplots(1, len(PLOT_SCENARIOS), figsize=(6 * len(PLOT_SCENARIOS), 4), sharey=False)
    for ax, scenario in zip(np.atleast_1d(axes), PLOT_SCENARIOS):
        curves = {f"PPO tuner ({mode})": _episode_throughput(factory, scenario, mode, seeds)
                  for mode, factory in tuners.items()}
        curves["AUTOTUNE-style (absolute)"] = _episode_throughput(lambda p: make_baseline("autotune", p), scenario,
                                                                  "absolute", seeds)
        steps = np.arange(1, len(next(iter(curves.values()))["throughput"]) + 1)
        for label, curve in curves.items():
            ax.plot(steps, curve["throughput"], label=label)
        ax.plot(steps, next(iter(curves.values()))["optimum"], "k--", label="optimum")
        ax.set_title(f"{scenario} (mean of {n_seeds} held-out seeds)")
        ax.set_xlabel("tuning interval")
        ax.set_ylabel("true throughput (k samples/s; 0 after a crash)")
        ax.set_ylim(bottom=0)
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
