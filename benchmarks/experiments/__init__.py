"""Registry of the experiments run by ``python -m benchmarks.run``.

Each entry maps an experiment id to the module that implements it; the module exposes
``run(ctx: benchmarks.common.RunContext) -> benchmarks.common.ExperimentResult`` (or a list of
them). Later issues add their experiments here, one line each, in the order they run.

The main job (``python -m benchmarks.run``) runs the experiments behind the README's headline
results, sized to fit 30 minutes on 2 cores. The research-record experiments listed in
:data:`EXTENDED` — studies and measurements that the docs quote but no headline depends on — run
with ``--all`` or by name with ``--only``.

The run starts up to ``--jobs`` experiments at a time (two by default), each in its own process;
:data:`DEPENDS_ON`, :data:`EXCLUSIVE` and :data:`EXPECTED_SECONDS` tell it what may run beside
what and which to start first.
"""

EXPERIMENTS: dict[str, str] = {
    # dataset sizes, sparsity, genre and popularity structure of the resolved dataset
    "data_summary": "benchmarks.experiments.data_summary",
    # A2C agent trained on RecGym-MovieLens train users (before movielens_policies, which scores it)
    "movielens_agent": "benchmarks.experiments.movielens_agent",
    # RecGym-MovieLens baselines x worlds on held-out users: the myopic-vs-far-sighted phenomenon
    "movielens_policies": "benchmarks.experiments.movielens_policies",
    # RecGym-MovieLens's privileged planner: return vs horizon, sensitivity to its settings, its cost
    "planner_horizon": "benchmarks.experiments.planner_horizon",
    # classical recommenders offline: k-fold RMSE (vs Surprise), leave-last-out top-N, NCF ML-1M
    "recommenders_offline": "benchmarks.experiments.recommenders_offline",
    # RecGym-Pipeline-v0: every baseline tuner x scenario, efficiency vs the exact optimum
    "pipeline_baselines": "benchmarks.experiments.pipeline_baselines",
    # RecGym-PipelineLive-v0: calibration, simulator-vs-live validity, sim-to-real, baselines live
    "pipeline_live": "benchmarks.experiments.pipeline_live",
    # RecGym-Pipeline-v0: the PPO tuner (agents.tuner) trained on random pipelines, beside the baselines
    "pipeline_tuner": "benchmarks.experiments.pipeline_tuner",
}

EXTENDED: frozenset[str] = frozenset(
    {
        # the planner's horizon and settings study (its headline row is in movielens_policies)
        "planner_horizon",
        # the offline recommender tables and the NCF validation searches (about 13 min full size)
        "recommenders_offline",
        # real worker processes for about 9 min; its figures depend on the machine being quiet
        "pipeline_live",
    }
)
"""Experiments that only ``--all`` (or ``--only``) runs: the full research record."""

MAIN_JOB: tuple[str, ...] = tuple(name for name in EXPERIMENTS if name not in EXTENDED)
"""What ``python -m benchmarks.run`` runs by default, in order."""

DEPENDS_ON: dict[str, tuple[str, ...]] = {
    # scores the agents movielens_agent trains (their checkpoints under the results folder)
    "movielens_policies": ("movielens_agent",),
}
"""Experiments that read another's output: when both run, the second starts after the first ends."""

EXCLUSIVE: frozenset[str] = frozenset(
    {
        # times real worker processes against the simulator: another experiment beside it would
        # change what it measures
        "pipeline_live",
    }
)
"""Experiments that need the machine to themselves: they run alone, after the others."""

EXPECTED_SECONDS: dict[str, float] = {
    "data_summary": 0.1,
    "movielens_agent": 309.0,
    "movielens_policies": 644.0,
    "planner_horizon": 567.0,
    "recommenders_offline": 779.0,
    "pipeline_baselines": 28.0,
    "pipeline_live": 538.0,
    "pipeline_tuner": 736.0,
}
"""Wall seconds of each experiment at full size, one at a time, in the timed runs of
docs/benchmarks.md. Only an ordering hint: the run starts the longest chain of dependent
experiments first, so that two at a time finish close together."""
