"""Policies x worlds on RecGym-MovieLens: the phenomenon table (held-out users, mean ± 95% CI).

Every policy of :data:`POLICIES` runs the same seeded episodes (same held-out users, same noise)
in every world of :data:`WORLDS`; the table reports the mean and 95% confidence interval of each
per-episode metric, the column "fraction of planner" each policy's mean return over the
privileged planner's (the ceiling, ``BASELINES["planner"]``; paired ratio with 95% CI), and the
notes the paired ratios boredom-aware / oracle-greedy and planner / boredom-aware. To add a policy,
append one line to :data:`POLICIES` (a name and a factory ``PolicyContext -> Policy``).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from benchmarks.common import ExperimentResult, RunContext, format_ci, mean_ci
from benchmarks.experiments.movielens_agent import trained_agent_policies
from recgym.evaluation import BASELINES, PolicyFactory, evaluate, make_eval_env, paired_ratio_ci
from recgym.recommenders.simulator_policy import RECOMMENDER_POLICIES

POLICIES: dict[str, PolicyFactory] = {
    **BASELINES,  # random, most-popular, oracle-greedy, boredom-aware, planner (the ceiling)
    # (the recommenders issue appends its policies here, one line each)
    # classical recommenders fitted on the train users' logged ratings, folding in each episode's
    # clicks and ratings (recgym.recommenders.simulator_policy; never the hidden state)
    "popularity (IMDB weighted)": RECOMMENDER_POLICIES["popularity (IMDB weighted)"],
    "content-based": RECOMMENDER_POLICIES["content-based"],
    "matrix factorization": RECOMMENDER_POLICIES["matrix factorization"],
    "item-kNN": RECOMMENDER_POLICIES["item-kNN"],
    "ensemble": RECOMMENDER_POLICIES["ensemble"],
}
"""Policies evaluated, by display name (factories, see :class:`recgym.evaluation.PolicyContext`)."""

WORLDS: dict[str, tuple[str, dict]] = {
    # the default dynamic world: habit (addiction), satiation (boredom), session budget
    "dynamic": ("RecGym-MovieLens-v0", {}),
    # the same, recommending slates of 5 items (multinomial-logit choice with no-click)
    "dynamic, slate 5": ("RecGym-MovieLens-v0", {"slate_size": 5}),
    # no habit, no satiation, fixed length: myopic greedy is optimal here
    "static": ("RecGym-MovieLensStatic-v0", {}),
    # ML-Fairness-Gym's rule: deterministic ratings, liked genres reinforced, 50 steps
    "fairness": ("RecGym-MovieLensFairness-v0", {}),
}
"""Worlds evaluated: display name -> (env id, env kwargs)."""

METRICS = {
    "return": "return",
    "session length": "length",
    "CTR": "ctr",
    "mean rating": "mean_rating",
    "NDCG@k": "ndcg",
    "session diversity": "session_diversity",
    "genre HHI": "genre_concentration",
}

# --- the planner issue: every policy's return as a fraction of the ceiling's --------------------
CEILING = "planner"
"""The policy the column "fraction of planner" divides by (paired by episode)."""
FRACTION = "fraction of planner"


def _fraction_of_ceiling(rows: list[dict], records: list[dict], returns: dict, world: str) -> None:
    """Fill :data:`FRACTION` for ``world``'s rows: mean return / the planner's, paired 95% CI."""
    ceiling = returns.get((world, CEILING))
    for row, record in zip(rows, records, strict=True):
        if row["world"] != world:
            continue
        if ceiling is None or ceiling.mean() <= 0:
            row[FRACTION] = "n/a"
            continue
        ratio, low, high = paired_ratio_ci(returns[world, row["policy"]], ceiling)
        row[FRACTION] = f"{ratio:.3f} [{low:.3f}, {high:.3f}]"
        record["fraction_of_planner"] = {"ratio": ratio, "low": low, "high": high}
# -------------------------------------------------------------------------------------------------


def run(ctx: RunContext) -> ExperimentResult:
    """Evaluate every policy in every world; write the table, the JSON records and a plot."""
    rows, records, returns = [], [], {}
    seconds: dict[tuple[str, str], float] = {}  # wall-clock of each cell: where the experiment's time goes
    load_before = os.getloadavg()[0]
    n_episodes = None
    # The synthetic stand-in is seeded like every other experiment's (data_summary's).
    data_kwargs = {"dataset": ctx.dataset} | ({"synthetic_seed": ctx.seed} if ctx.synthetic else {})
    for world_name, (env_id, world_kwargs) in WORLDS.items():
        kwargs = data_kwargs | world_kwargs
        env = make_eval_env(env_id, num_envs=None, **kwargs)
        pool = len(env.unwrapped.params.world.user_pool)
        env.close()
        # Each held-out user once (quick) or five times (full), capped for large datasets.
        n_episodes = min(pool, 200) if ctx.quick else min(5 * pool, 1000)
        env = make_eval_env(env_id, num_envs=min(n_episodes, 256), **kwargs)
        # trained agents (movielens_agent experiment) join the worlds they were trained in
        world_policies = POLICIES | trained_agent_policies(ctx, world_name)
        for policy_name, factory in world_policies.items():
            start = time.perf_counter()
            result = evaluate(factory, env, n_episodes, seed=ctx.seed, name=policy_name)
            seconds[world_name, policy_name] = time.perf_counter() - start
            returns[world_name, policy_name] = result.episodes["return"].to_numpy()
            row = {"world": world_name, "policy": policy_name}
            record = dict(row, episodes=n_episodes, coverage=result.coverage,
                          seconds=seconds[world_name, policy_name])
            for label, col in METRICS.items():
                values = result.episodes[col].dropna().to_numpy()
                mean, half = mean_ci(values) if values.size else (math.nan, math.nan)
                row[label] = format_ci(mean, half, 3 if col != "return" else 1)
                record[col] = {"mean": mean, "ci95": half, "n": int(values.size)}
            row["coverage"] = f"{result.coverage:.3f}"
            rows.append(row)
            records.append(record)
        env.close()
        _fraction_of_ceiling(rows, records, returns, world_name)
        _add_ratio_columns(world_name, rows, records, returns)

    notes = [
        f"{n_episodes} episodes per cell on held-out (test) users of {ctx.dataset}, users cycled "
        f"so each is visited equally often; episode e seeded {ctx.seed} + e in every cell "
        "(paired across policies). Mean ± 95% Student-t CI over episodes.",
        "NDCG@k: mean over steps of the NDCG of the served item/slate against the user's current "
        "true utilities (k = slate size). Diversity: mean pairwise genre distance of the consumed "
        "items; genre HHI: Herfindahl index of consumed genres (filter-bubble index).",
    ]
    for world in ("dynamic", "dynamic, slate 5"):
        if (world, "boredom-aware") in returns and (world, "oracle-greedy") in returns:
            ratio, low, high = paired_ratio_ci(
                returns[world, "boredom-aware"], returns[world, "oracle-greedy"]
            )
            notes.append(
                f"{world}: boredom-aware / oracle-greedy return = {ratio:.2f} "
                f"(paired 95% CI [{low:.2f}, {high:.2f}])."
            )
    for world, reference in (("dynamic", "boredom-aware"), ("dynamic, slate 5", "boredom-aware"),
                             ("static", "oracle-greedy")):
        if (world, CEILING) in returns and (world, reference) in returns:
            ratio, low, high = paired_ratio_ci(returns[world, CEILING], returns[world, reference])
            notes.append(f"{world}: {CEILING} / {reference} return = {ratio:.3f} "
                         f"(paired 95% CI [{low:.3f}, {high:.3f}]).")
    static = {p: r.mean() for (w, p), r in returns.items() if w == "static"}
    if static:
        best = max(static, key=static.get)
        notes.append(f"static: best mean return {static[best]:.1f} by {best} "
                     f"(oracle-greedy {static.get('oracle-greedy', math.nan):.1f}).")
    notes.append(_time_note(seconds, load_before))
    figure = _plot(ctx.out_dir / "movielens_policies.png", returns)
    return ExperimentResult(
        name="movielens_policies",
        title=f"RecGym-MovieLens: policies x worlds on held-out users ({ctx.dataset})",
        columns=["world", "policy", *METRICS, "coverage", *RATIOS, FRACTION],
        rows=rows,
        notes=notes,
        records=records,
        figures=[figure] if figure else [],
    )


def _time_note(seconds: dict[tuple[str, str], float], load_before: float) -> str:
    """Where the experiment's wall-clock time went: per world, and the costliest cells."""
    worlds = dict.fromkeys(w for w, _ in seconds)
    per_world = ", ".join(f"{w} {sum(s for (v, _), s in seconds.items() if v == w):.0f} s" for w in worlds)
    costliest = sorted(seconds.items(), key=lambda item: -item[1])[:5]
    cells = ", ".join(f"{p} in {w} {s:.0f} s" for (w, p), s in costliest)
    return (f"Wall-clock time (evaluation only; on {os.cpu_count()} CPU cores, load average {load_before:.1f} "
            f"before, {os.getloadavg()[0]:.1f} after): {sum(seconds.values()):.0f} s in all; per world: "
            f"{per_world}; costliest cells: {cells}.")


# ---- ratio columns (agents issue): every row's return against the references, paired episodes ----
NON_PRIVILEGED = ("most-popular", "popularity (IMDB weighted)", "content-based", "matrix factorization",
                  "item-kNN", "ensemble")
"""The non-privileged baselines (no hidden state read); the best of them in a world is the reference."""

RATIOS = {"× best non-privileged": None, "× oracle-greedy": "oracle-greedy", "× boredom-aware": "boredom-aware"}
"""Ratio columns: header -> reference policy (``None``: the best non-privileged baseline of the world)."""


def _add_ratio_columns(world: str, rows: list, records: list, returns: dict) -> None:
    """Paired ratio (95% CI) of each row's mean return to each reference of :data:`RATIOS`."""
    candidates = [p for p in NON_PRIVILEGED if (world, p) in returns]
    best = max(candidates, key=lambda p: returns[world, p].mean()) if candidates else None
    for row, record in zip(rows, records):
        if row["world"] != world:
            continue
        for header, reference in RATIOS.items():
            reference = reference or best
            if reference is None or (world, reference) not in returns or returns[world, reference].mean() <= 0:
                row[header] = "n/a"
                continue
            ratio, low, high = paired_ratio_ci(returns[world, row["policy"]], returns[world, reference])
            row[header] = f"{ratio:.2f} [{low:.2f}, {high:.2f}]"
            record[header] = {"reference": reference, "ratio": ratio, "ci95": [low, high]}
# ---- end of ratio columns ----


def _plot(path: Path, returns: dict) -> Path | None:
    """Grouped bar chart of mean return per policy per world, with 95% CI bars."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plotting is optional
        return None
    worlds = list(dict.fromkeys(w for w, _ in returns))
    policies = list(dict.fromkeys(p for _, p in returns))
    width = 0.8 / len(policies)
    fig, ax = plt.subplots(figsize=(2.2 * len(worlds) + 2, 4))
    for j, policy in enumerate(policies):
        # a policy may run in some worlds only (a trained agent: the worlds it was trained in)
        present = [i for i, w in enumerate(worlds) if (w, policy) in returns]
        stats = [mean_ci(returns[worlds[i], policy]) for i in present]
        ax.bar(
            [i + (j - (len(policies) - 1) / 2) * width for i in present],
            [m for m, _ in stats],
            width,
            yerr=[0.0 if math.isnan(h) else h for _, h in stats],
            capsize=3,
            label=policy,
        )
    ax.set_xticks(range(len(worlds)), worlds)
    ax.set_ylabel("return per episode (sum of ratings)")
    ax.set_title("RecGym-MovieLens, held-out users (mean ± 95% CI)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
