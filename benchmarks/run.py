"""The main job: run the registered experiments and write their results.

Usage::

    python -m benchmarks.run                # the main job: the headline experiments, full size
    python -m benchmarks.run --all          # every registered experiment (the research record)
    python -m benchmarks.run --quick --all  # every experiment, small configuration (CI)
    python -m benchmarks.run --only data_summary --out results/
    python -m benchmarks.run --jobs 1       # one experiment at a time, in this process

The main job runs :data:`~benchmarks.experiments.MAIN_JOB`, the experiments behind the README's
headline tables, and fits 30 minutes on 2 cores; ``--all`` adds the research-record experiments
of :data:`~benchmarks.experiments.EXTENDED` (the planner's horizon study, the offline recommender
searches, the live pipeline).

For each experiment it writes ``<out>/<name>.md``, ``<out>/<name>.json`` and any plots, then an
index ``<out>/results.md`` with every table, and prints the tables. The dataset defaults to
ml-latest-small, resolved like every recgym dataset (explicit path, ``$RECGYM_DATA_HOME``, the user
cache, then a download); when it can be neither found nor downloaded the job says so and runs on
the synthetic world, marking every result as synthetic.

Experiments run ``--jobs`` at a time (default: two, or one on a one-core machine), in as many
worker processes: one at a time the main job keeps 1.44 of 2 cores busy on average (evaluation
loops and small jitted calls use one), and two side by side finish in 0.81 of the time
(docs/benchmarks.md). What may run
beside what comes from the registry: an experiment that reads another's output starts after it
(:data:`~benchmarks.experiments.DEPENDS_ON`), one that times real processes runs alone
(:data:`~benchmarks.experiments.EXCLUSIVE`), and the longest chain starts first
(:data:`~benchmarks.experiments.EXPECTED_SECONDS`). Every experiment is seeded, so its tables do
not depend on what ran beside it; its wall-clock seconds do, and its JSON says how many ran at a
time (``"jobs"``).
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

from benchmarks.common import ExperimentResult, RunContext, write_json
from benchmarks.experiments import (
    DEPENDS_ON,
    EXCLUSIVE,
    EXPECTED_SECONDS,
    EXPERIMENTS,
    EXTENDED,
    MAIN_JOB,
)


def resolve_dataset(name: str) -> tuple[str, bool]:
    """Return ``(dataset, synthetic)``: ``name`` if it loads, else the synthetic stand-in."""
    if name == "synthetic":
        return name, True
    from recgym.datasets import DatasetError, load_movielens

    try:
        load_movielens(name)
    except (DatasetError, OSError) as err:
        print(
            f"[recgym] {name} is neither present nor downloadable ({err}).\n"
            "[recgym] Running on the synthetic MovieLens-shaped world instead; every result "
            "below is marked SYNTHETIC.",
            file=sys.stderr,
        )
        return "synthetic", True
    return name, False


def selected_experiments(*, only: list[str] | None = None, run_all: bool = False) -> list[str]:
    """The experiment ids a run executes, in registry order.

    Args:
        only: Explicit ids (``--only``); they run in registry order, each once.
        run_all: Run every registered experiment (``--all``).

    Returns:
        ``only`` in registry order if given, else every experiment if ``run_all``, else the
        main job (:data:`~benchmarks.experiments.MAIN_JOB`).

    Raises:
        ValueError: If ``only`` names an unregistered experiment, or both arguments are given.
    """
    if only and run_all:
        raise ValueError("give either only or run_all, not both")
    if only:
        unknown = sorted(set(only) - set(EXPERIMENTS))
        if unknown:
            raise ValueError(f"unknown experiments {unknown}; registered: {sorted(EXPERIMENTS)}")
        return [name for name in EXPERIMENTS if name in set(only)]
    return list(EXPERIMENTS) if run_all else list(MAIN_JOB)


def start_order(names: Sequence[str]) -> list[str]:
    """``names`` in the order the run starts them.

    The exclusive experiments last; before them, the longest chain first: an experiment's
    expected seconds (:data:`~benchmarks.experiments.EXPECTED_SECONDS`) plus those of the longest
    chain of selected experiments that wait for it (:data:`~benchmarks.experiments.DEPENDS_ON`).
    Equal chains keep registry order.
    """
    def chain(name: str) -> float:
        waiting = [other for other in names if name in DEPENDS_ON.get(other, ())]
        return EXPECTED_SECONDS.get(name, 0.0) + max((chain(other) for other in waiting), default=0.0)

    return sorted(names, key=lambda name: (name in EXCLUSIVE, -chain(name)))


def next_to_start(waiting: Sequence[str], done: set[str], running: set[str], selected: set[str]) -> str | None:
    """The first experiment of ``waiting`` (in start order) that may start now, or ``None``.

    It may start when every selected experiment it depends on is done; an exclusive one only when
    nothing runs and nothing else waits, and nothing starts beside an exclusive one.

    Args:
        waiting: Experiments not started yet, in start order (:func:`start_order`).
        done: Experiments that have finished.
        running: Experiments running now.
        selected: Every experiment of this run (a dependency outside it is not waited for).
    """
    if running & EXCLUSIVE:
        return None
    for name in waiting:
        if any(dep in selected and dep not in done for dep in DEPENDS_ON.get(name, ())):
            continue
        if name in EXCLUSIVE and (running or any(other not in EXCLUSIVE for other in waiting)):
            continue
        return name
    return None


def run_experiment(module_name: str, ctx: RunContext, jobs: int = 1) -> tuple[list[str], float]:
    """Run one experiment and write its files; return its Markdown sections and wall seconds.

    What each worker process of :func:`run_experiments` runs (and the run itself with one job).

    Args:
        module_name: The experiment's module (a value of :data:`~benchmarks.experiments.EXPERIMENTS`).
        ctx: What the experiment receives.
        jobs: Experiments at a time in this run (written into its JSON).
    """
    start = time.perf_counter()
    module = importlib.import_module(module_name)
    produced = module.run(ctx)
    results = produced if isinstance(produced, list) else [produced]
    elapsed = time.perf_counter() - start
    sections = []
    for result in results:
        _write(result, ctx, elapsed, jobs)
        sections.append(_markdown(result, ctx))
    return sections, elapsed


def run_experiments(names: Sequence[str], ctx: RunContext, jobs: int,
                    report: Callable[[str, list[str], float], None]) -> dict[str, list[str]]:
    """Run ``names``, up to ``jobs`` at a time; ``report`` each as it ends.

    With one job (or one experiment) they run one after the other in this process, in registry
    order. Otherwise in :func:`start_order`, as :func:`next_to_start` allows, in a pool of
    ``jobs`` worker processes started with ``spawn`` (fresh interpreters: nothing of this
    process's JAX state is forked into them); a worker runs the experiments it is given one after
    the other, as a one-job run does. If an experiment fails, none starts after it, the running
    ones finish, and its exception is raised.

    Args:
        names: The experiments, in registry order.
        ctx: What every experiment receives.
        jobs: Experiments at a time (``>= 1``).
        report: Called with ``(name, markdown sections, wall seconds)`` when an experiment ends.

    Returns:
        ``{name: markdown sections}``.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    sections: dict[str, list[str]] = {}
    if jobs == 1 or len(names) == 1:
        for name in names:
            sections[name], elapsed = run_experiment(EXPERIMENTS[name], ctx, 1)
            report(name, sections[name], elapsed)
        return sections
    selected, waiting = set(names), start_order(names)
    running: dict[Future, str] = {}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        while waiting or running:
            while len(running) < jobs and (name := next_to_start(waiting, set(sections), set(running.values()),
                                                                  selected)) is not None:
                waiting.remove(name)
                running[pool.submit(run_experiment, EXPERIMENTS[name], ctx, jobs)] = name
            if not running:  # pragma: no cover - the registry's dependencies are acyclic (a test checks)
                raise RuntimeError(f"nothing can start: {waiting} wait for experiments that never run")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                name = running.pop(future)
                if future.exception() is not None:
                    waiting.clear()
                    raise future.exception()
                sections[name], elapsed = future.result()
                report(name, sections[name], elapsed)
    return sections


def default_jobs() -> int:
    """Experiments at a time when ``--jobs`` is not given: two, or one on a one-core machine."""
    return min(2, os.cpu_count() or 1)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small configuration (CI)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="results folder")
    parser.add_argument("--dataset", default="ml-latest-small", help="dataset name or path")
    parser.add_argument("--seed", type=int, default=0, help="base seed")
    parser.add_argument("--jobs", type=int, default=None,
                        help="experiments at a time, each in its own process (default: 2, or 1 on a "
                             "one-core machine; 1 runs them one after the other in this process)")
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument(
        "--all",
        action="store_true",
        help="run every registered experiment, the research record too: "
        + ", ".join(name for name in EXPERIMENTS if name in EXTENDED),
    )
    chosen.add_argument(
        "--only", nargs="+", choices=sorted(EXPERIMENTS), help="run only these experiments"
    )
    args = parser.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    jobs = default_jobs() if args.jobs is None else args.jobs
    names = selected_experiments(only=args.only, run_all=args.all)

    dataset, synthetic = resolve_dataset(args.dataset)
    out_dir = args.out / ("quick" if args.quick else "full")
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(quick=args.quick, out_dir=out_dir, dataset=dataset, synthetic=synthetic, seed=args.seed)

    def report(name: str, markdown: list[str], elapsed: float) -> None:
        for text in markdown:
            print(text, flush=True)
        print(f"[{name}: {elapsed:.1f} s]\n", flush=True)

    start = time.perf_counter()
    done = run_experiments(names, ctx, jobs, report)
    sections = [text for name in names for text in done[name]]  # registry order, whatever the finishing order
    if len(names) > 1:
        print(f"[{len(names)} experiments, {min(jobs, len(names))} at a time: "
              f"{time.perf_counter() - start:.1f} s]\n", flush=True)

    header = "# recgym results\n\n" + (
        "**SYNTHETIC DATA** — MovieLens was not available; these are not MovieLens results.\n\n"
        if synthetic
        else ""
    )
    (out_dir / "results.md").write_text(header + "\n".join(sections))
    print(f"results written to {out_dir}/")
    left_out = [name for name in EXPERIMENTS if name not in names]
    if not args.only and left_out:
        print(
            f"not run (research record; --all runs them, --only NAME one): {', '.join(left_out)}"
        )
    return 0


def _markdown(result: ExperimentResult, ctx: RunContext) -> str:
    text = result.to_markdown()
    if ctx.synthetic and result.uses_dataset:
        text = text.replace("### ", "### [SYNTHETIC] ", 1)
    return text


def _write(result: ExperimentResult, ctx: RunContext, elapsed: float, jobs: int) -> None:
    payload = result.to_json() | {
        "dataset": ctx.dataset,
        "synthetic": ctx.synthetic and result.uses_dataset,
        "quick": ctx.quick,
        "seed": ctx.seed,
        "seconds": elapsed,
        "jobs": jobs,
    }
    write_json(ctx.out_dir / f"{result.name}.json", payload)
    (ctx.out_dir / f"{result.name}.md").write_text(_markdown(result, ctx))


if __name__ == "__main__":
    raise SystemExit(main())
