"""The main job: run the registered experiments and write their results.

Usage::

    python -m benchmarks.run                # the main job: the headline experiments, full size
    python -m benchmarks.run --all          # every registered experiment (the research record)
    python -m benchmarks.run --quick --all  # every experiment, small configuration (CI)
    python -m benchmarks.run --only data_summary --out results/

The main job runs :data:`~benchmarks.experiments.MAIN_JOB`, the experiments behind the README's
headline tables, and fits 30 minutes on 2 cores; ``--all`` adds the research-record experiments
of :data:`~benchmarks.experiments.EXTENDED` (the planner's horizon study, the offline recommender
searches, the live pipeline).

For each experiment it writes ``<out>/<name>.md``, ``<out>/<name>.json`` and any plots, then an
index ``<out>/results.md`` with every table, and prints the tables. The dataset defaults to
ml-latest-small, resolved like every recgym dataset (explicit path, ``$RECGYM_DATA_HOME``, the user
cache, then a download); when it can be neither found nor downloaded the job says so and runs on
the synthetic world, marking every result as synthetic.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from benchmarks.common import ExperimentResult, RunContext, write_json
from benchmarks.experiments import EXPERIMENTS, EXTENDED, MAIN_JOB


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


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small configuration (CI)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="results folder")
    parser.add_argument("--dataset", default="ml-latest-small", help="dataset name or path")
    parser.add_argument("--seed", type=int, default=0, help="base seed")
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
    names = selected_experiments(only=args.only, run_all=args.all)

    dataset, synthetic = resolve_dataset(args.dataset)
    out_dir = args.out / ("quick" if args.quick else "full")
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(quick=args.quick, out_dir=out_dir, dataset=dataset, synthetic=synthetic, seed=args.seed)

    sections = []
    for name in names:
        start = time.perf_counter()
        module = importlib.import_module(EXPERIMENTS[name])
        produced = module.run(ctx)
        results = produced if isinstance(produced, list) else [produced]
        elapsed = time.perf_counter() - start
        for result in results:
            _write(result, ctx, elapsed)
            sections.append(_markdown(result, ctx))
            print(_markdown(result, ctx), flush=True)
        print(f"[{name}: {elapsed:.1f} s]\n", flush=True)

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


def _write(result: ExperimentResult, ctx: RunContext, elapsed: float) -> None:
    payload = result.to_json() | {
        "dataset": ctx.dataset,
        "synthetic": ctx.synthetic and result.uses_dataset,
        "quick": ctx.quick,
        "seed": ctx.seed,
        "seconds": elapsed,
    }
    write_json(ctx.out_dir / f"{result.name}.json", payload)
    (ctx.out_dir / f"{result.name}.md").write_text(_markdown(result, ctx))


if __name__ == "__main__":
    raise SystemExit(main())
