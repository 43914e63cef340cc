"""Several training seeds of the main job's A2C, then every seed scored on the held-out table episodes.

Two steps, so a long training can run in the background while nothing else waits on it::

    python -m benchmarks.a2c_seeds train --world dynamic --seeds 0 1 2 --out runs/a2c_seeds
    python -m benchmarks.a2c_seeds evaluate --out runs/a2c_seeds
    python -m benchmarks.a2c_seeds report --out runs/a2c_seeds    # Markdown tables (docs/agents.md)

``train`` takes any further flags as A2C config flags over the main job's configuration (e.g.
``--rollout-steps 8``), to train a variant and compare it on the selection episodes
(``evaluate --episodes 244``).

``train`` trains the main job's configuration (:func:`benchmarks.experiments.movielens_agent.agent_config`:
``TUNED`` and ``WORLD_TUNED`` over the :class:`~agents.a2c.A2CConfig` defaults) for every seed at
once, ``jax.jit(jax.vmap(...))`` over the seeds' keys (seed ``s`` trains from
``jax.random.key(s)``, the key ``python -m agents.a2c --seed s`` trains from), on the *train*
users, in blocks of updates with a checkpoint after each block (``--resume`` continues from the
last one). ``evaluate`` scores each seed's greedy policy, every baseline and the privileged
oracle-greedy and boredom-aware policies on the same held-out episodes (test users, episode ``e``
seeded ``e``: those of the ``movielens_policies`` table) and writes every episode's return, so the
ratios below can be recomputed from ``returns.npz`` (``baselines`` scores the baselines alone, cached
for ``evaluate``, e.g. while the agent trains):

* per seed, the paired ratio of means to the best non-privileged baseline (best by mean return on
  the episodes scored), with its 95% CI over episodes (:func:`recgym.evaluation.paired_ratio_ci`);
* over seeds, the mean of the per-seed ratios with a Student-t 95% interval over seeds (the
  variation between training runs), and the pooled paired ratio (each episode's return averaged
  over seeds against the baseline's, CI over episodes);
* the same on the episodes ``--holdout-from`` onwards only (by default 244-609: the episodes that
  played no part in choosing the configuration, which was chosen on episodes 0-243).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from agents.a2c import make_train
from agents.checkpoint import Checkpointer, abstract_like
from agents.config import config_to_dict
from agents.movielens import make_env_params
from agents.runner import RESUME_OVERRIDABLE
from benchmarks.common import RunContext
from benchmarks.experiments.movielens_agent import WORLDS, agent_config, world_folder

NON_PRIVILEGED = ("most-popular", "popularity (IMDB weighted)", "content-based", "matrix factorization",
                  "item-kNN", "ensemble")
"""The baselines the issue's targets compare against (the best of them per world)."""
PRIVILEGED = ("oracle-greedy", "boredom-aware")
"""Policies that read the simulator's hidden state: reported beside, never the bar."""
SELECTION_EPISODES = 244
"""The configuration was chosen on the table's first 244 episodes; later ones are held out from that."""


def seed_keys(seeds: list[int]) -> jax.Array:
    """``(len(seeds),)`` typed keys: seed ``s`` is ``jax.random.key(s)``, as ``python -m agents.a2c --seed s``."""
    return jnp.stack([jax.random.key(seed) for seed in seeds])


class ResumeMismatch(ValueError):
    """``--resume`` of a checkpoint trained with other seeds or another configuration."""


def check_resumable(saved: dict[str, Any], current: dict[str, Any], folder: Path | None = None) -> None:
    """Refuse to resume a run whose checkpoint was trained with another configuration.

    Without this check a changed scalar (``--gae-lambda 0.9`` given to the resumption of a run
    started with 1.0) would resume silently with the new value: the restore only checks shapes.

    Args:
        saved: The checkpoint's metadata (:meth:`agents.a2c.A2CTraining.checkpoint_metadata` plus
            ``"seeds"``).
        current: The same metadata for the run asked for now.
        folder: The checkpoints folder (named in the error).

    Raises:
        ResumeMismatch: The seeds or a config field other than :data:`agents.runner.RESUME_OVERRIDABLE` differ
            (every differing field named with both values).
    """
    where = f"--resume of {folder}" if folder is not None else "--resume"
    if list(saved.get("seeds", [])) != list(current["seeds"]):
        raise ResumeMismatch(f"{where}: the checkpoint holds seeds {saved.get('seeds')}, asked for {current['seeds']}")
    mine, theirs = current["config"], saved.get("config", {})
    differing = sorted(name for name in set(mine) | set(theirs)
                       if name not in RESUME_OVERRIDABLE and mine.get(name) != theirs.get(name))
    if differing:
        shown = ", ".join(f"{name}={mine.get(name)!r} (checkpoint {theirs.get(name)!r})" for name in differing)
        raise ResumeMismatch(f"{where}: the run asked for differs from the checkpoint's: {shown}; "
                         "resume with the flags the run started with, or train into another --out")


def train_seeds(training: Any, seeds: list[int], folder: Path | None, block: int, resume: bool = False,
                label: str = "") -> tuple[Any, float]:
    """Train ``seeds`` at once (``jax.jit(jax.vmap(...))`` over their keys), in blocks of updates.

    The result equals ``jax.jit(jax.vmap(training))(seed_keys(seeds))`` (the blocks run the same
    updates in the same order), and seed ``s``'s parameters equal ``training(jax.random.key(s))``'s
    to float tolerance.

    Args:
        training: A single-device :class:`agents.a2c.A2CTraining`.
        seeds: Training seeds.
        folder: Checkpoints folder (one checkpoint after each block; ``None``: none).
        block: Updates per compiled call.
        resume: Continue from the last checkpoint in ``folder``.
        label: Prefix of the progress lines (stderr).

    Returns:
        ``(states, seconds)``: the final training states (leading seed axis) and the seconds spent
        in the compiled calls (compilation excluded).

    Raises:
        ValueError: ``training`` runs on several devices (only one device can be vmapped).
        ResumeMismatch: With ``resume``, the checkpoint was trained with other seeds or another
            config (:func:`check_resumable`).
        FloatingPointError: A loss became non-finite (the last good checkpoint is kept).
    """
    config = training.config
    if not config.single_device:
        raise ValueError(f"num_devices must be 1 to vmap over seeds, got {config.num_devices}")
    states = jax.jit(jax.vmap(training.init))(seed_keys(seeds))
    checkpoints = Checkpointer(folder, max_to_keep=1) if folder is not None else None
    update = 0
    metadata = {**training.checkpoint_metadata(num_seeds=len(seeds)), "seeds": list(seeds)}
    if resume and checkpoints is not None and checkpoints.latest_step() is not None:
        try:
            check_resumable(checkpoints.metadata(), metadata, folder)
        except ResumeMismatch:
            checkpoints.close()
            raise
        states = checkpoints.restore({"train_state": abstract_like(states)})["train_state"]
        update = int(np.asarray(states.learner.update)[0])
        print(f"{label}: resumed at update {update} of {config.num_updates}", file=sys.stderr, flush=True)
    compiled: dict[int, Any] = {}
    first, seconds = update, 0.0
    try:
        while update < config.num_updates:
            size = min(block, config.num_updates - update)
            if size not in compiled:  # with one device training.run is the jitted block itself
                step = jax.jit(jax.vmap(lambda state, size=size: training.run(state, size)))
                compiled[size] = step.lower(states).compile()
            start = time.perf_counter()
            new_states, metrics = jax.block_until_ready(compiled[size](states))
            seconds += time.perf_counter() - start
            if not np.isfinite(np.asarray(metrics["losses/total_loss"])).all():
                raise FloatingPointError(f"{label}: non-finite loss in updates {update}-{update + size}")
            states, update = new_states, update + size
            if checkpoints is not None:
                checkpoints.save(update, training.checkpoint_items(states), metadata)
            episodic = np.asarray(metrics["charts/episodic_return"])  # (seeds, updates)
            with warnings.catch_warnings():  # no episode ended in the block yet: nan, said as such
                warnings.simplefilter("ignore", RuntimeWarning)
                recent = np.nanmean(episodic[:, -max(1, size // 10):], axis=1)
            print(f"{label}: update {update}/{config.num_updates}, {update * config.steps_per_update:,} steps "
                  f"per seed, training return {np.round(recent, 1).tolist()}, "
                  f"{(update - first) * config.steps_per_update * len(seeds) / seconds:,.0f} env-steps/s "
                  "(all seeds)", file=sys.stderr, flush=True)
    finally:
        if checkpoints is not None:
            checkpoints.close()
    return states, seconds


FIXED_BY_THE_RUN = frozenset({"env", "dataset", "slate_size", "seed", "out", "resume", "num_devices", "total_steps",
                              "progress", "tensorboard", "coordinator", "num_processes", "process_id"})
"""A2C config fields a ``train`` run sets itself (the world, the seeds, the folder, one device)."""


def config_overrides(flags: list[str]) -> dict[str, Any]:
    """Parse A2C command-line flags (``python -m agents.a2c``'s, e.g. ``--rollout-steps 8``) into overrides.

    To train a variant of the main job's configuration on the selection episodes without editing
    :data:`~benchmarks.experiments.movielens_agent.TUNED`.

    Returns:
        ``{field: value}`` of the flags given (nothing else).

    Raises:
        SystemExit: An unknown flag or a bad value (argparse's message).
        ValueError: A flag for a field the run sets itself (:data:`FIXED_BY_THE_RUN`).
    """
    from agents.a2c import A2CConfig
    from agents.config import parse_flags

    if not flags:
        return {}
    values, given, _ = parse_flags(A2CConfig, flags, prog="python -m benchmarks.a2c_seeds train ... [A2C flags]")
    fixed = sorted(given & FIXED_BY_THE_RUN)
    if fixed:
        raise ValueError(f"these A2C fields are set by the seeds run itself and cannot be overridden: {fixed} "
                         "(use --seeds, --total-steps, --out, --resume)")
    return {name: values[name] for name in sorted(given)}


def train_world(world: str, seeds: list[int], out_dir: Path, total_steps: int | None, block: int,
                resume: bool, memory_decays: tuple[float, ...] | None = None,
                overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``seeds`` of the main job's configuration in ``world`` (ml-latest-small) at once.

    Args:
        world: A key of :data:`~benchmarks.experiments.movielens_agent.WORLDS`.
        seeds: Training seeds; seed ``s`` starts from ``jax.random.key(s)``.
        out_dir: Run folder; the world's checkpoints go to ``world_folder(out_dir, world) / "checkpoints"``.
        total_steps: Environment steps per seed (``None``: the main job's full run).
        block: Updates per compiled call (one checkpoint after each).
        resume: Continue from the world's last checkpoint.
        memory_decays: The consumption memory's decays instead of the main job's (to compare
            settings on the selection episodes; ``None``: the main job's, ``()``: no memory).
        overrides: Other A2C fields over the main job's configuration (:func:`config_overrides`),
            to compare variants on the selection episodes.

    Returns:
        A record of the run (config, seeds, steps per seed, seconds).
    """
    env_id, kwargs = WORLDS[world]
    ctx = RunContext(quick=False, out_dir=out_dir, dataset="ml-latest-small", synthetic=False, seed=0)
    config = agent_config(ctx, env_id, kwargs, world)
    if total_steps is not None:
        config = dataclasses.replace(config, total_steps=total_steps)
    if memory_decays is not None:
        config = dataclasses.replace(config, memory_decays=tuple(memory_decays))
    if overrides:
        config = dataclasses.replace(config, **overrides)  # the config validates the values
    env = make_env_params(config, users="train")
    training = make_train(config, env.params, env.core, env.item_features)
    _, seconds = train_seeds(training, seeds, world_folder(out_dir, world) / "checkpoints", block, resume, world)
    return {"world": world, "seeds": list(seeds), "env_steps_per_seed": config.num_updates * config.steps_per_update,
            "config": config_to_dict(config), "overrides": dict(overrides or {}), "train_seconds": seconds}


def baseline_returns(world: str, out_dir: Path, n_episodes: int, names: list[str]) -> dict[str, np.ndarray]:
    """Return of every episode (test users, episode ``e`` seeded ``e``) of each baseline in ``world``.

    Saved to ``baseline_returns.npz`` in the world's folder and read from there when every
    baseline asked for is present for ``n_episodes`` or more (the first ``n_episodes`` of a longer
    run are the same episodes; the baselines do not depend on training, so they can be scored
    while the agent trains).

    Returns:
        ``{name: (n_episodes,) returns}``.
    """
    from recgym.evaluation import BASELINES, evaluate, make_eval_env
    from recgym.recommenders.simulator_policy import RECOMMENDER_POLICIES

    folder = world_folder(out_dir, world)
    cache = folder / "baseline_returns.npz"
    returns: dict[str, np.ndarray] = {}
    if cache.exists():
        with np.load(cache) as saved:
            returns = {name: saved[name][:n_episodes] for name in saved.files if len(saved[name]) >= n_episodes}
    missing = [name for name in names if name not in returns]
    if missing:
        env_id, kwargs = WORLDS[world]
        env = make_eval_env(env_id, num_envs=min(n_episodes, 256), users="test", dataset="ml-latest-small", **kwargs)
        factories = {**BASELINES, **RECOMMENDER_POLICIES}
        for name in missing:
            start = time.perf_counter()
            returns[name] = evaluate(factories[name], env, n_episodes, seed=0, name=name).episodes["return"].to_numpy()
            print(f"{world}: {name} {returns[name].mean():.1f} ({time.perf_counter() - start:.0f} s)",
                  file=sys.stderr, flush=True)
            folder.mkdir(parents=True, exist_ok=True)
            np.savez(cache, **returns)
        env.close()
    return {name: returns[name] for name in names}


def agent_returns(world: str, out_dir: Path, n_episodes: int) -> dict[str, np.ndarray]:
    """Return of every episode (as :func:`baseline_returns`) of each trained seed's greedy policy.

    Returns:
        ``{"a2c seed <s>": (n_episodes,) returns}``, one entry per seed in the world's checkpoint.
    """
    from agents.policy import AgentPolicy
    from recgym.evaluation import evaluate, make_eval_env

    env_id, kwargs = WORLDS[world]
    folder = world_folder(out_dir, world) / "checkpoints"
    with Checkpointer(folder) as checkpoints:
        seeds = checkpoints.metadata()["seeds"]
    env = make_eval_env(env_id, num_envs=min(n_episodes, 256), users="test", dataset="ml-latest-small", **kwargs)
    returns = {}
    for index, seed in enumerate(seeds):
        policy = AgentPolicy.from_checkpoint(folder, seed_index=index, name=f"a2c seed {seed}")
        returns[f"a2c seed {seed}"] = evaluate(policy, env, n_episodes, seed=0).episodes["return"].to_numpy()
    env.close()
    return returns


def summarise(returns: dict[str, np.ndarray], episodes: slice) -> dict[str, Any]:
    """Ratios of the agent's seeds to the best non-privileged baseline and to the privileged policies.

    Args:
        returns: As :func:`policy_returns` gives them.
        episodes: Which episodes to score (e.g. ``slice(244, None)``).

    Returns:
        ``{"best": name, "per_seed": {...}, "over_seeds": {...}, "pooled": {...}, "means": {...}}``;
        each ratio entry is ``[ratio, low, high]`` (95%).
    """
    from recgym.evaluation import mean_ci, paired_ratio_ci

    picked = {name: values[episodes] for name, values in returns.items()}
    agents = sorted((name for name in picked if name.startswith("a2c seed")), key=lambda n: int(n.split()[-1]))
    baselines = [name for name in NON_PRIVILEGED if name in picked]
    best = max(baselines, key=lambda name: picked[name].mean())
    against = [best, *(name for name in PRIVILEGED if name in picked)]
    pooled_agent = np.mean([picked[name] for name in agents], axis=0)
    summary: dict[str, Any] = {"best": best, "episodes": int(len(pooled_agent)),
                               "means": {name: list(mean_ci(values)) for name, values in picked.items()},
                               "per_seed": {}, "over_seeds": {}, "pooled": {}}
    for other in against:
        ratios = [paired_ratio_ci(picked[name], picked[other]) for name in agents]
        summary["per_seed"][other] = {name: list(r) for name, r in zip(agents, ratios)}
        mean, half = mean_ci([r[0] for r in ratios])  # Student-t over seeds (nan for one seed)
        summary["over_seeds"][other] = [mean, mean - half, mean + half]
        summary["pooled"][other] = list(paired_ratio_ci(pooled_agent, picked[other]))
    summary["all_baselines_pooled"] = {name: list(paired_ratio_ci(pooled_agent, picked[name])) for name in baselines}
    return summary


def _ratio(r: list[float]) -> str:
    if np.isnan(r[1]):  # one seed: no interval over seeds
        return f"{r[0]:.3f} (one seed)"
    return f"{r[0]:.3f} [{r[1]:.3f}, {r[2]:.3f}]"


def report(out_dir: Path, worlds: list[str]) -> str:
    """The Markdown tables of docs/agents.md ("Results") from the worlds' ``evaluation.json``."""
    lines = ["| world | episodes | best non-privileged baseline | a2c (mean over seeds) | a2c / best: mean of "
             "seeds [t 95% over seeds] | a2c / best: pooled [95% over episodes] | a2c / oracle-greedy | "
             "a2c / boredom-aware |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    per_seed = ["| world | episodes | seed | a2c | a2c / best [95% over episodes] |",
                "| --- | --- | --- | --- | --- |"]
    for world in worlds:
        path = world_folder(out_dir, world) / "evaluation.json"
        if not path.exists():
            continue
        result = json.loads(path.read_text())
        for part in [name for name in ("all", "held_out") if name in result]:
            summary = result[part]
            best = summary["best"]
            agents = list(summary["per_seed"][best])
            agent_mean = float(np.mean([summary["means"][name][0] for name in agents]))
            label = f"{summary['episodes']} ({'all' if part == 'all' else 'held out'})"
            lines.append(f"| {world} | {label} | {best} {summary['means'][best][0]:.1f} ± "
                         f"{summary['means'][best][1]:.1f} | {agent_mean:.1f} | "
                         f"**{_ratio(summary['over_seeds'][best])}** | {_ratio(summary['pooled'][best])} | "
                         f"{_ratio(summary['pooled']['oracle-greedy'])} | {_ratio(summary['pooled']['boredom-aware'])} |")
            for name in agents:
                per_seed.append(f"| {world} | {label} | {name.split()[-1]} | {summary['means'][name][0]:.1f} | "
                                f"{_ratio(summary['per_seed'][best][name])} |")
    return "\n".join(lines) + "\n\n" + "\n".join(per_seed)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``train`` or ``evaluate`` (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.a2c_seeds", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train several seeds of one world at once",
                           epilog="Any further flags are A2C config flags (python -m agents.a2c --help) over the "
                                  "main job's configuration, e.g. --rollout-steps 8: to train a variant.")
    train.add_argument("--world", required=True, choices=list(WORLDS))
    train.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    train.add_argument("--total-steps", type=int, default=None, help="env steps per seed (default: the main job's)")
    train.add_argument("--block", type=int, default=61, help="updates per compiled call (checkpoint after each)")
    train.add_argument("--resume", action="store_true")
    train.add_argument("--memory-decays", type=float, nargs="*", default=None,
                       help="consumption-memory decays instead of the main job's (none given: no memory); "
                            "to compare settings on the selection episodes")
    train.add_argument("--out", type=Path, required=True)
    evaluate = sub.add_parser("evaluate", help="score every trained seed and every baseline on paired episodes")
    evaluate.add_argument("--worlds", nargs="+", default=list(WORLDS), choices=list(WORLDS))
    evaluate.add_argument("--episodes", type=int, default=610)
    evaluate.add_argument("--holdout-from", type=int, default=SELECTION_EPISODES)
    evaluate.add_argument("--more-seeds-from", type=Path, nargs="*", default=[],
                          help="other run folders whose trained seeds of the same worlds join the evaluation")
    evaluate.add_argument("--out", type=Path, required=True)
    baselines = sub.add_parser("baselines", help="score the baselines only (cached for evaluate)")
    baselines.add_argument("--worlds", nargs="+", default=list(WORLDS), choices=list(WORLDS))
    baselines.add_argument("--episodes", type=int, default=610)
    baselines.add_argument("--out", type=Path, required=True)
    tables = sub.add_parser("report", help="print the Markdown tables of the evaluated worlds")
    tables.add_argument("--worlds", nargs="+", default=list(WORLDS), choices=list(WORLDS))
    tables.add_argument("--out", type=Path, required=True)
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "train":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "report":
        print(report(args.out, args.worlds))
        return 0
    if args.command == "train":
        try:
            overrides = config_overrides(extra)
        except ValueError as err:
            parser.error(str(err))
        try:
            record = train_world(args.world, args.seeds, args.out, args.total_steps, args.block, args.resume,
                                 args.memory_decays, overrides)
        except ResumeMismatch as err:
            parser.error(str(err))
        path = world_folder(args.out, args.world) / "training.json"
        path.write_text(json.dumps(record, indent=2, default=str) + "\n")
        return 0
    for world in args.worlds:
        returns = baseline_returns(world, args.out, args.episodes, [*NON_PRIVILEGED, *PRIVILEGED])
        if args.command == "baselines":
            continue
        returns |= agent_returns(world, args.out, args.episodes)
        for extra in args.more_seeds_from:  # seeds trained in other runs of the same world
            if (world_folder(extra, world) / "checkpoints").is_dir():
                returns |= agent_returns(world, extra, args.episodes)
        folder = world_folder(args.out, world)
        np.savez(folder / "returns.npz", **returns)
        result = {"all": summarise(returns, slice(None))}
        if args.episodes > args.holdout_from:  # (none held out when only the selection episodes are played)
            result["held_out"] = summarise(returns, slice(args.holdout_from, None))
        (folder / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n")
        print(world, *(json.dumps(part["over_seeds"]) for part in result.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
