"""Where a pipeline tuner loses efficiency: a per-phase and per-knob breakdown on validation seeds.

Evaluation instrumentation only (the episode's world and the exact optimum, which no tuner reads):
it runs a policy on the *validation* episodes of :func:`agents.tuner.validation_score` (seeds from
:data:`agents.tuner.VALIDATION_SEED_START`, never the held-out ones) and splits the episode mean's
shortfall ``1 - efficiency`` into

* phases of the 100-step episode: the ramp (steps 1-10), the steady state before the change
  (steps 11-50), the change event and the recovery (steps 51-60), the steady state after it
  (steps 61-100), each split by whether the noisy neighbour switched on or off at that step (a step
  the tuner cannot anticipate), and the steps after an OOM crash (0 each);
* knobs, in the steady-state steps: how much of the gap closes when the tuner's allocation is
  changed one knob group at a time — the prefetch depth set to the deepest that fits in memory
  next to the tuner's own workers and batch size; the workers set to the optimum's (with the
  deepest prefetch that fits); the batch size set to the optimum's (likewise) — and the signed
  difference of each knob from the optimum's.

and, per episode of one scenario (``--episodes SCENARIO``), where the batch size went and what the
memory shield made of its growth: the share of the batch-size choice's probability on growing it,
the share of that the shield masked, and the shield's price of one doubling against its true cost
(:func:`episode_rows`).

``python -m benchmarks.tuner_diagnosis --run runs/tuner-absolute --step 224``
prints the tables (Markdown) and writes them as JSON with ``--out``; ``--sampled`` acts with the
sampled (stochastic) policy instead of each head's most likely choice; ``--oracle`` diagnoses the
oracle baseline instead (the same tables for the one-step-late optimum).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

#: Phases of an episode (0-based step indices, end exclusive): the ramp, the steady state before
#: the change, the change event and recovery, the steady state after it.
PHASES: dict[str, tuple[int, int]] = {"ramp (steps 1-10)": (0, 10), "steady before change (11-50)": (10, 50),
                                      "change and recovery (51-60)": (50, 60), "steady after change (61-100)": (60, 100)}
#: Phases whose steps the per-knob breakdown reads (the steady states).
STEADY_PHASES: tuple[str, ...] = ("steady before change (11-50)", "steady after change (61-100)")


def serial_fraction_overrides(scenario: str, action_mode: str, serial_fraction: float) -> dict[str, Any]:
    """Env overrides that give every stage of ``scenario``'s worlds the Amdahl serial fraction
    ``serial_fraction``: the named scenarios' profile, and ``random``'s range collapsed to it."""
    from recgym.envs.pipeline import make_params

    base = make_params(scenario, action_mode)
    f = float(serial_fraction)
    return {"profile": dataclasses.replace(base.profile, serial_fraction=(f,) * 6),
            "random_ranges": dataclasses.replace(base.random_ranges, serial_fraction=(f, f))}


def run_episodes(policy_factory: Callable[[Any], Any], scenario: str, action_mode: str, seeds: Sequence[int],
                 deterministic_seed: int = 0, serial_fraction: float | None = None) -> dict[str, np.ndarray]:
    """Run ``policy_factory(params)`` on one episode per seed and record every step.

    Args:
        policy_factory: ``factory(env_params) -> Policy``.
        scenario: Scenario name.
        action_mode: Action mode.
        seeds: Scenario seeds (episode ``i`` is the env seeded ``seeds[i]``, as in the harness).
        deterministic_seed: Seed of the policy's own randomness (sampled policies).
        serial_fraction: If given, every stage's Amdahl serial fraction is this value (an
            evaluation-only change of the world: the named scenarios' profile, and ``random``'s
            range collapsed to it), to see how the policy responds to how well the stages scale.

    Returns:
        Arrays over ``(episodes, steps)``: ``efficiency`` (0 after a crash), ``alive`` (the episode
        had not crashed before the step), ``oom``, ``after_change``, ``neighbour_on``, ``switched``
        (the neighbour changed at that step), and the counterfactual efficiencies of the
        steady-state knob fixes (``fix_prefetch``, ``fix_workers``, ``fix_batch``), plus the
        allocation's and the optimum's knobs (``cores``/``opt_cores`` ``(n, T, 6)``,
        ``batch_log2``/``opt_batch_log2``, ``prefetch``/``opt_prefetch``, ``memory_fraction``),
        and, at the observation each step's decision was made from: ``doubling_cost`` the true
        memory one doubling of the batch size would add (GiB; NaN at the largest batch size) and,
        for a :class:`agents.tuner.TunerPolicy`, ``doubling_price`` the shield's estimate of it
        (NaN without a shield), ``growth_mass`` the probability the network put on growing the
        batch size (before the shield) and ``growth_masked`` the part of it the shield masked
        (NaN for other policies; see :func:`batch_growth`).
    """
    import gymnasium as gym
    import jax

    import recgym  # noqa: F401  (registers the ids)
    from recgym.envs.pipeline import dynamics, model

    n = len(seeds)
    overrides = {} if serial_fraction is None else serial_fraction_overrides(scenario, action_mode, serial_fraction)
    env = gym.make_vec("RecGym-Pipeline-v0", num_envs=n, vectorization_mode="vector_entry_point",
                       scenario=scenario, action_mode=action_mode, track_optimum=True, **overrides)
    base = env.unwrapped
    params = base.params
    horizon = params.max_episode_steps
    policy = policy_factory(params)
    policy.reset(num_envs=n, seed=deterministic_seed)
    obs, info = env.reset(seed=[int(s) for s in seeds])
    world = jax.tree_util.tree_map(np.asarray, jax.device_get(base.state.world))
    out = {name: np.zeros((n, horizon)) for name in (
        "efficiency", "fix_prefetch", "fix_workers", "fix_batch", "memory_fraction", "opt_memory_fraction")}
    for name in ("doubling_cost", "doubling_price", "growth_mass", "growth_masked"):
        out[name] = np.full((n, horizon), np.nan)
    for name in ("alive", "oom", "after_change", "neighbour_on", "switched"):
        out[name] = np.zeros((n, horizon), bool)
    for name in ("batch_log2", "prefetch", "opt_batch_log2", "opt_prefetch"):
        out[name] = np.zeros((n, horizon), np.int64)
    out["cores"] = np.zeros((n, horizon, 6), np.int64)
    out["opt_cores"] = np.zeros((n, horizon, 6), np.int64)
    alive = np.ones(n, bool)
    previous_neighbour = np.zeros(n, bool)
    overhead, basis = params.oversubscription_overhead, params.oversubscription_basis

    def efficiency_of(cond, cores, batch_log2, prefetch, best):
        perf = dynamics.performance(np, world, cond, cores.astype(np.float32), batch_log2, prefetch, overhead, basis)
        return np.where(best > 0, np.asarray(perf.throughput) / np.where(best > 0, best, 1.0), 0.0)

    def deepest_prefetch(cond, cores, batch_log2):
        perf = dynamics.performance(np, world, cond, cores.astype(np.float32), batch_log2, np.zeros(n), overhead,
                                    basis)
        per_batch = 2.0 ** batch_log2 * world.element_gib[:, model.PREFETCH_STAGE]
        depth = np.floor((cond.memory_cap_gib - np.asarray(perf.memory_gib)) / per_batch)
        return np.clip(depth, 0, params.max_prefetch)

    def doubling_cost(cond, observation):
        cores = np.rint(observation[:, dynamics.OBS_CORES]).astype(np.float32)
        batch_log2 = np.rint(np.log2(np.maximum(observation[:, dynamics.OBS_BATCH], 1.0))).astype(np.int64)
        prefetch = np.rint(observation[:, dynamics.OBS_PREFETCH])
        now = dynamics.performance(np, world, cond, cores, batch_log2, prefetch, overhead, basis).memory_gib
        doubled = dynamics.performance(np, world, cond, cores, batch_log2 + 1, prefetch, overhead, basis).memory_gib
        return np.where(batch_log2 < params.max_batch_log2, np.asarray(doubled) - np.asarray(now), np.nan)

    cond = dynamics.conditions(np, world, np.asarray(info["after_change"], bool), np.asarray(info["neighbour_on"], bool))
    for t in range(horizon):
        out["doubling_cost"][:, t] = doubling_cost(cond, obs)
        actions = np.asarray(policy.act_batch(obs, info))
        if getattr(policy, "last_decision", None) is not None:
            out["growth_mass"][:, t], out["growth_masked"][:, t], out["doubling_price"][:, t] = batch_growth(
                policy, obs)
        obs, _, terminated, truncated, info = env.step(actions)
        after = np.asarray(info["after_change"], bool)
        neighbour = np.asarray(info["neighbour_on"], bool)
        cond = dynamics.conditions(np, world, after, neighbour)
        best = np.asarray(info["optimum"], np.float64)
        cores = np.rint(obs[:, dynamics.OBS_CORES]).astype(np.int64)
        batch_log2 = np.rint(np.log2(np.maximum(obs[:, dynamics.OBS_BATCH], 1.0))).astype(np.int64)
        prefetch = np.rint(obs[:, dynamics.OBS_PREFETCH]).astype(np.int64)
        optimal = np.asarray(info["optimal_action"], np.int64)
        opt_cores, opt_batch = optimal[:, :6] + 1, optimal[:, 6] + params.min_batch_log2
        out["efficiency"][:, t] = np.where(alive, np.asarray(info["efficiency"], np.float64), 0.0)
        out["fix_prefetch"][:, t] = efficiency_of(cond, cores, batch_log2, deepest_prefetch(cond, cores, batch_log2),
                                                  best)
        out["fix_workers"][:, t] = efficiency_of(cond, opt_cores, batch_log2,
                                                 deepest_prefetch(cond, opt_cores, batch_log2), best)
        out["fix_batch"][:, t] = efficiency_of(cond, cores, opt_batch, deepest_prefetch(cond, cores, opt_batch), best)
        out["alive"][:, t] = alive
        out["oom"][:, t] = alive & np.asarray(info["oom"], bool)
        out["after_change"][:, t], out["neighbour_on"][:, t] = after, neighbour
        out["switched"][:, t] = neighbour != previous_neighbour
        out["cores"][:, t], out["opt_cores"][:, t] = cores, opt_cores
        out["batch_log2"][:, t], out["opt_batch_log2"][:, t] = batch_log2, opt_batch
        out["prefetch"][:, t], out["opt_prefetch"][:, t] = prefetch, optimal[:, 7]
        cap = obs[:, dynamics.OBS_MEMORY_CAP]
        out["memory_fraction"][:, t] = obs[:, dynamics.OBS_MEMORY] / cap
        opt_perf = dynamics.performance(np, world, cond, opt_cores.astype(np.float32), opt_batch, optimal[:, 7],
                                        overhead, basis)
        out["opt_memory_fraction"][:, t] = np.asarray(opt_perf.memory_gib) / cond.memory_cap_gib
        previous_neighbour = neighbour
        alive = alive & ~(np.asarray(terminated, bool) | np.asarray(truncated, bool))
    env.close()
    return out


def batch_growth(policy: Any, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a :class:`agents.tuner.TunerPolicy`'s last decision made of growing the batch size.

    Args:
        policy: The tuner, right after its ``act_batch(observations, ...)``.
        observations: ``(n, 26)`` the observations it acted on.

    Returns:
        ``(growth_mass, growth_masked, doubling_price)``, each ``(n,)``: the probability the
        network's batch-size choice (absolute mode: the batch head; increment mode: the one
        head's "batch x2") put on growing the batch size before the shield; the part of it the
        shield masked; the shield's price of one doubling (GiB: its estimate, or the prior
        ``probe_fraction`` of the cap while unmeasured; NaN without a shield).
    """
    import jax

    from agents.tuner import NUM_STAGES, knob_values
    from recgym.envs.pipeline import dynamics

    decision, heads = policy.last_decision, policy.heads
    logits, allowed = decision["logits"], decision["allowed"]
    if heads.mode == "absolute":
        bounds = np.cumsum(heads.sizes)
        start, stop = int(bounds[NUM_STAGES - 1]), int(bounds[NUM_STAGES])
        current = np.asarray(knob_values(observations, policy.env_params)[0])
        targets = np.asarray(heads.observation_targets(observations, policy.env_params))[:, NUM_STAGES, : stop - start]
        grows = targets > current[:, NUM_STAGES, None]
    else:
        start, stop = 0, heads.num_logits
        grows = np.zeros((len(observations), stop), bool)
        grows[:, 2 * NUM_STAGES] = True  # the increment action "batch size x2"
    probs = np.asarray(jax.nn.softmax(logits[:, start:stop], axis=-1))
    mass = np.sum(np.where(grows, probs, 0.0), axis=-1)
    masked = np.sum(np.where(grows & ~allowed[:, start:stop], probs, 0.0), axis=-1)
    price = np.full(len(observations), np.nan)
    if policy.shield is not None:
        estimate = policy.estimate
        cap = observations[:, dynamics.OBS_MEMORY_CAP]
        price = np.where(estimate.measured[:, NUM_STAGES], estimate.grow_cost[:, NUM_STAGES],
                         policy.shield.probe_fraction * cap)
    return mass, masked, price


def episode_rows(record: dict[str, np.ndarray], seeds: Sequence[int]) -> list[dict[str, Any]]:
    """One row per episode of :func:`run_episodes`: where its batch size went and what the shield did.

    Means over the episode's steady-state steps (alive, the neighbour not just switched, as in
    :func:`knob_breakdown`) unless named ``last``: ``efficiency`` is the whole episode's mean;
    ``last batch``/``optimum's`` the batch sizes at its last step; ``last prefetch``/``optimum's``
    likewise; ``memory fraction`` the memory in use over the cap; ``growth mass``,
    ``masked``, ``doubling price`` and ``doubling cost`` as in :func:`run_episodes` (``masked`` is
    the masked share of the growth mass, the mean of ``growth_masked`` over that of
    ``growth_mass``).
    """
    mask = steady_steps(record)
    rows = []
    for i, seed in enumerate(seeds):
        m = mask[i]
        last = int(np.flatnonzero(record["alive"][i])[-1])

        def mean(name, m=m, i=i):
            values = record[name][i][m]
            values = values[~np.isnan(values)]
            return float(values.mean()) if values.size else float("nan")

        growth = mean("growth_mass")
        rows.append({"seed": int(seed), "efficiency": float(record["efficiency"][i].mean()),
                     "OOM": bool(record["oom"][i].any()),
                     "last batch": int(2 ** record["batch_log2"][i, last]),
                     "optimum's batch": int(2 ** record["opt_batch_log2"][i, last]),
                     "last prefetch": int(record["prefetch"][i, last]),
                     "optimum's prefetch": int(record["opt_prefetch"][i, last]),
                     "memory fraction": mean("memory_fraction"), "growth mass": growth,
                     "masked": mean("growth_masked") / growth if growth > 0 else float("nan"),
                     "doubling price": mean("doubling_price"), "doubling cost": mean("doubling_cost")})
    return rows


def episodes_markdown(rows: list[dict[str, Any]]) -> str:
    """:func:`episode_rows` as a Markdown table."""
    names = list(rows[0])
    lines = ["| " + " | ".join(names) + " |", "|" + " --- |" * len(names)]
    for row in rows:
        cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def phase_breakdown(record: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """The episode mean's shortfall by phase: each row's ``loss`` adds up to ``1 - mean efficiency``.

    A phase's steps are split into those after a crash, those where the neighbour switched (on or
    off) at that step, and the others; ``loss`` is the phase's summed ``1 - efficiency`` over all
    episodes' steps, divided by episodes x horizon.
    """
    eff, alive, switched = record["efficiency"], record["alive"], record["switched"]
    n, horizon = eff.shape
    rows = []
    for phase, (start, end) in PHASES.items():
        window = np.zeros_like(alive)
        window[:, start:end] = True
        for part, mask in (("after an OOM crash", window & ~alive),
                           ("neighbour switched this step", window & alive & switched),
                           ("other steps", window & alive & ~switched)):
            steps = int(mask.sum())
            rows.append({"phase": phase, "steps": part, "share of steps": steps / (n * horizon),
                         "mean efficiency": float(eff[mask].mean()) if steps else float("nan"),
                         "loss": float((1.0 - eff[mask]).sum() / (n * horizon))})
    return rows


def steady_steps(record: dict[str, np.ndarray]) -> np.ndarray:
    """``(episodes, steps)`` bool: the steady-state steps of :data:`STEADY_PHASES` in which the
    episode was alive and the neighbour did not just switch (what the per-knob and per-episode
    summaries average over)."""
    mask = np.zeros_like(record["alive"])
    for phase in STEADY_PHASES:
        start, end = PHASES[phase]
        mask[:, start:end] = True
    return mask & record["alive"] & ~record["switched"]


def knob_breakdown(record: dict[str, np.ndarray]) -> dict[str, Any]:
    """In the steady-state steps (alive, neighbour not just switched): what fixing each knob buys.

    Returns:
        ``{"steps", "efficiency", "fix_prefetch", "fix_workers", "fix_batch"}`` (mean efficiencies
        over those steps, the fixes as counterfactuals of :func:`run_episodes`), and per knob the
        mean signed difference from the optimum's value, the mean absolute one and the share of
        steps at the optimum's value (``knobs``), plus the mean memory in use as a fraction of the
        cap (``memory_fraction``; ``opt_memory_fraction`` for the optimum), and ``neighbour``: for
        the steps with the noisy neighbour off and on, their count, mean efficiency, the optimum's
        mean total workers and the allocation's mean signed difference from it (None where there
        are no such steps) — a tuner that hedges between the neighbour's states allocates too many
        workers while it is on and too few while it is off.
    """
    mask = steady_steps(record)
    result: dict[str, Any] = {"steps": int(mask.sum())}
    for name in ("efficiency", "fix_prefetch", "fix_workers", "fix_batch", "memory_fraction", "opt_memory_fraction"):
        result[name] = float(record[name][mask].mean())
    knobs = {}
    for i, stage in enumerate(("read", "parse", "transform", "shuffle", "batch", "prefetch")):
        diff = record["cores"][..., i][mask] - record["opt_cores"][..., i][mask]
        knobs[f"{stage} workers"] = diff
    knobs["total workers"] = record["cores"].sum(-1)[mask] - record["opt_cores"].sum(-1)[mask]
    knobs["log2 batch size"] = record["batch_log2"][mask] - record["opt_batch_log2"][mask]
    knobs["prefetch depth"] = record["prefetch"][mask] - record["opt_prefetch"][mask]
    result["knobs"] = {name: {"mean difference": float(d.mean()), "mean |difference|": float(np.abs(d).mean()),
                              "share at the optimum's value": float(np.mean(d == 0))} for name, d in knobs.items()}
    total, opt_total = record["cores"].sum(-1), record["opt_cores"].sum(-1)
    result["neighbour"] = {}
    for state, on in (("off", False), ("on", True)):
        steps = mask & (record["neighbour_on"] == on)
        result["neighbour"][state] = None if not steps.any() else {
            "steps": int(steps.sum()), "efficiency": float(record["efficiency"][steps].mean()),
            "optimum total workers": float(opt_total[steps].mean()),
            "total workers - optimum": float((total[steps] - opt_total[steps]).mean())}
    return result


def diagnose(policy_factory: Callable[[Any], Any], action_mode: str, *, random_pipelines: int = 100,
             scenario_seeds: int = 20, seed: int | None = None,
             serial_fraction: float | None = None) -> dict[str, Any]:
    """:func:`phase_breakdown` and :func:`knob_breakdown` of a policy on every scenario's validation seeds.

    Args:
        policy_factory: ``factory(env_params) -> Policy``.
        action_mode: Action mode.
        random_pipelines: Validation ``random`` pipelines.
        scenario_seeds: Validation seeds per named scenario.
        seed: First validation seed (default :data:`agents.tuner.VALIDATION_SEED_START`).
        serial_fraction: Every stage's serial fraction, if given (see :func:`run_episodes`).

    Returns:
        ``{scenario: {"efficiency", "phases", "knobs"}}`` plus ``"all"`` pooled over scenarios
        (every episode weighted alike).
    """
    from agents.tuner import VALIDATION_SEED_START
    from recgym.envs.pipeline import HELD_OUT_SEED_START, SCENARIOS

    seed = VALIDATION_SEED_START if seed is None else seed
    if seed + max(random_pipelines, scenario_seeds) > HELD_OUT_SEED_START:
        raise ValueError("the diagnosis runs on validation seeds only: they must stay below the held-out seeds")
    results, records = {}, []
    for scenario in SCENARIOS:
        n = random_pipelines if scenario == "random" else scenario_seeds
        if n == 0:
            continue
        record = run_episodes(policy_factory, scenario, action_mode, [seed + i for i in range(n)],
                              serial_fraction=serial_fraction)
        records.append(record)
        results[scenario] = {"efficiency": float(record["efficiency"].mean()), "phases": phase_breakdown(record),
                             "knobs": knob_breakdown(record)}
    pooled = {name: np.concatenate([r[name] for r in records]) for name in records[0]}
    results["all"] = {"efficiency": float(pooled["efficiency"].mean()), "phases": phase_breakdown(pooled),
                      "knobs": knob_breakdown(pooled)}
    return results


def markdown(results: dict[str, Any]) -> str:
    """The diagnosis as Markdown tables (phases per scenario, then knobs per scenario)."""
    scenarios = list(results)
    lines = ["| phase | steps | " + " | ".join(scenarios) + " |", "|" + " --- |" * (2 + len(scenarios))]
    for i, row in enumerate(results["all"]["phases"]):
        cells = [f"{results[s]['phases'][i]['loss']:.3f}" for s in scenarios]
        lines.append(f"| {row['phase']} | {row['steps']} | " + " | ".join(cells) + " |")
    lines.append("| **mean efficiency** | | " + " | ".join(f"**{results[s]['efficiency']:.3f}**" for s in scenarios)
                 + " |")
    lines += ["", "| steady state | " + " | ".join(scenarios) + " |", "|" + " --- |" * (1 + len(scenarios))]
    for name in ("efficiency", "fix_prefetch", "fix_workers", "fix_batch", "memory_fraction", "opt_memory_fraction"):
        lines.append(f"| {name} | " + " | ".join(f"{results[s]['knobs'][name]:.3f}" for s in scenarios) + " |")
    for knob in results["all"]["knobs"]["knobs"]:
        cells = []
        for s in scenarios:
            k = results[s]["knobs"]["knobs"][knob]
            cells.append(f"{k['mean difference']:+.2f} ({k['mean |difference|']:.2f}, {k['share at the optimum' + chr(39) + 's value']:.0%})")
        lines.append(f"| {knob} - optimum | " + " | ".join(cells) + " |")
    for state in ("off", "on"):
        cells = []
        for s in scenarios:
            k = results[s]["knobs"]["neighbour"][state]
            cells.append("-" if k is None else f"{k['total workers - optimum']:+.2f} (of {k['optimum total workers']:.1f}; "
                         f"{k['efficiency']:.3f}, {k['steps']} steps)")
        lines.append(f"| total workers - optimum, neighbour {state} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: diagnose a checkpoint (or the oracle) on the validation seeds."""
    from agents.tuner import SHIELD_OPTIONS

    parser = argparse.ArgumentParser(prog="python -m benchmarks.tuner_diagnosis",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="", help="run folder of agents.tuner (its checkpoints)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint (update) to load; default the last")
    parser.add_argument("--action-mode", default=None, help="action mode (default: the run's)")
    parser.add_argument("--sampled", action="store_true", help="sample each head instead of decoding it")
    parser.add_argument("--decoding", default=None, choices=("mode", "mean"),
                        help="how the deterministic tuner decodes its heads (default: its action mode's, "
                             "agents.tuner.TunerPolicy)")
    parser.add_argument("--oracle", action="store_true", help="diagnose the oracle baseline instead")
    parser.add_argument("--shield-option", action="append", default=[], choices=SHIELD_OPTIONS,
                        help="act under the run's shield with this option switched on (agents.tuner.MemoryShield; "
                             "repeat for several)")
    parser.add_argument("--random-pipelines", type=int, default=100)
    parser.add_argument("--scenario-seeds", type=int, default=20)
    parser.add_argument("--episodes", default="", metavar="SCENARIO",
                        help="instead of the tables, one row per validation episode of SCENARIO (episode_rows)")
    parser.add_argument("--serial-fraction", type=float, default=None, metavar="F",
                        help="evaluate in worlds whose every stage has Amdahl serial fraction F (the named "
                             "scenarios' profile, and random's range collapsed to F): how the policy responds "
                             "to how well the stages scale")
    parser.add_argument("--out", default="", help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.oracle:
        from recgym.envs.pipeline.baselines import make_baseline

        mode = args.action_mode or "absolute"

        def factory(params):
            return make_baseline("oracle", params)
    else:
        from agents.tuner import TunerPolicy

        tuner = TunerPolicy.from_checkpoint(args.run, step=args.step)
        if args.shield_option:
            if tuner.shield is None or not tuner.shield.refine:
                parser.error("--shield-option needs a run with the refining memory shield")
            tuner.shield = dataclasses.replace(tuner.shield, **dict.fromkeys(args.shield_option, True))
        mode = args.action_mode or tuner.heads.mode

        def factory(params):
            return TunerPolicy(tuner.graphdef, tuner.params, tuner.heads, params, shield=tuner.shield,
                               deterministic=not args.sampled, decoding=args.decoding)
    if args.episodes:
        from agents.tuner import VALIDATION_SEED_START
        from recgym.envs.pipeline import HELD_OUT_SEED_START, SCENARIOS

        if args.episodes not in SCENARIOS:
            parser.error(f"--episodes must be one of {', '.join(SCENARIOS)}, got {args.episodes!r}")
        n = args.random_pipelines if args.episodes == "random" else args.scenario_seeds
        if n < 1 or VALIDATION_SEED_START + n > HELD_OUT_SEED_START:
            parser.error(f"{n} validation episodes: need at least 1, below the held-out seeds")
        seeds = [VALIDATION_SEED_START + i for i in range(n)]
        results = episode_rows(run_episodes(factory, args.episodes, mode, seeds,
                                            serial_fraction=args.serial_fraction), seeds)
        print(episodes_markdown(results))
    else:
        results = diagnose(factory, mode, random_pipelines=args.random_pipelines,
                           scenario_seeds=args.scenario_seeds, serial_fraction=args.serial_fraction)
        print(markdown(results))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
