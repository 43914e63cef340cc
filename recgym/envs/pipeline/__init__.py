"""RecGym-Pipeline-v0: tune a DLRM data-ingestion pipeline's cores, batch size and prefetch.

See ``docs/environments/pipeline.md`` for the spec card and the model. Modules:
:mod:`~recgym.envs.pipeline.params` (profile, params, scenarios),
:mod:`~recgym.envs.pipeline.model` (throughput and memory formulas),
:mod:`~recgym.envs.pipeline.dynamics` (the ``xp``-generic transition),
:mod:`~recgym.envs.pipeline.core` (the functional core, :class:`PipelineCore`),
:mod:`~recgym.envs.pipeline.env` (the gymnasium and vector envs),
:mod:`~recgym.envs.pipeline.optimum` (the exact optimum),
:mod:`~recgym.envs.pipeline.wrappers` (the optimum in ``info``, for evaluation),
:mod:`~recgym.envs.pipeline.baselines` (baseline tuners).
"""

# Convenience imports (documented in their own modules, hence no ``__all__`` here).
from recgym.envs.pipeline.core import PipelineCore  # noqa: F401
from recgym.envs.pipeline.env import PipelineEnv, PipelineVectorEnv
from recgym.envs.pipeline.evaluation import PipelineMetrics
from recgym.envs.pipeline.params import (  # noqa: F401
    ACTION_MODES,
    HELD_OUT_SEED_START,
    SCENARIOS,
    STAGES,
    PipelineParams,
    PipelineProfile,
    RandomRanges,
    held_out_seeds,
    make_params,
)
from recgym.envs.pipeline.wrappers import PipelineOptimum, PipelineVectorOptimum  # noqa: F401
from recgym.evaluation import register_episode_metrics

register_episode_metrics((PipelineEnv, PipelineVectorEnv), PipelineMetrics)
