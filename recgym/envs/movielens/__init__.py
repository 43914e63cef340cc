"""RecGym-MovieLens: a MovieLens user simulator with addiction (habit) and boredom (satiation).

* :mod:`~recgym.envs.movielens.world` builds (and caches) the world of a dataset;
* :mod:`~recgym.envs.movielens.params` holds the parameters, the state, the presets and
  :func:`~recgym.envs.movielens.make_params`;
* :mod:`~recgym.envs.movielens.dynamics` is the pure user model (:class:`MovieLensCore`), run on
  NumPy by the single env and on ``jax.numpy`` by the vector env and agents;
* :mod:`~recgym.envs.movielens.env` has the gymnasium adapters;
* :mod:`~recgym.envs.movielens.evaluation` plugs its episode metrics and privileged access into
  the evaluation harness (:func:`recgym.evaluation.evaluate`);
* :mod:`~recgym.envs.movielens.planner` is the privileged model-predictive planner, the ceiling
  of the baselines (``BASELINES["planner"]``).

See docs/environments/movielens.md for the spec card.
"""

from recgym._api import document_at
from recgym.envs.movielens.dynamics import (
    MovieLensCore,
    ObservationField,
    boredom_cost,
    observation_layout,
    observation_table,
    true_utilities,
)
from recgym.envs.movielens.env import MovieLensEnv, MovieLensVectorEnv
from recgym.envs.movielens.evaluation import MOVIELENS_COLUMNS, MovieLensAccess, MovieLensMetrics
from recgym.envs.movielens.params import (
    PRESETS,
    MovieLensParams,
    MovieLensState,
    WorldArrays,
    make_params,
)
from recgym.envs.movielens.planner import PlannerConfig, PlannerPolicy
from recgym.envs.movielens.world import MovieLensWorld, WorldSettings, build_world
from recgym.evaluation import register_episode_metrics

__all__ = [
    "MOVIELENS_COLUMNS",
    "PRESETS",
    "MovieLensAccess",
    "MovieLensCore",
    "MovieLensEnv",
    "MovieLensMetrics",
    "MovieLensParams",
    "MovieLensState",
    "MovieLensVectorEnv",
    "MovieLensWorld",
    "ObservationField",
    "PlannerConfig",
    "PlannerPolicy",
    "WorldArrays",
    "WorldSettings",
    "boredom_cost",
    "build_world",
    "make_params",
    "observation_layout",
    "observation_table",
    "true_utilities",
]

register_episode_metrics((MovieLensEnv, MovieLensVectorEnv), MovieLensMetrics)
document_at(__name__, globals(), __all__)  # documented here, not at private modules
