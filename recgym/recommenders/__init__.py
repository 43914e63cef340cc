"""Classical recommenders and their offline evaluation.

Every model follows one API (users x items, contiguous integer ids from 0, rankings as
``(item_ids, scores)``), see :class:`~recgym.recommenders.base.Recommender`:

* ``fit(ratings, items=None)`` on the data layer's ratings frame and items table;
* ``predict(user_ids, item_ids)`` ratings (where the model predicts ratings);
* ``score(user_ids, item_ids)`` ranking scores, ``score_all(user_ids)`` for every item;
* ``recommend(user_id, k, exclude_seen=True) -> (item_ids, scores)``.

The collaborative-filtering models: biased MF, item-kNN (cosine, adjusted or asymmetric
cosine), EASE^R (:class:`EASE`, closed-form item-item regression; with ``dropout > 0``, Steck's
EDLAE) and SLIM (:class:`SLIM`, sparse non-negative item-item elastic net).
:mod:`recgym.recommenders.model_selection` tunes hyper-parameters on a validation split carved
from the training data.

Each model has a small frozen config dataclass beside it (``PopularityConfig``, ...), with seeds,
not generators. :mod:`recgym.biased_mf` holds the functional biased matrix factorisation
(:func:`fit_biased_mf`, :class:`BiasedMFModel`) shared with the MovieLens simulator, and
:mod:`recgym.recommenders.offline_evaluation` the offline protocols.
"""

from recgym.biased_mf import BiasedMFModel, fit_biased_mf
from recgym.recommenders.base import Recommender
from recgym.recommenders.content import ContentBased, ContentBasedConfig, attach_tags
from recgym.recommenders.ease import EASE, EASEConfig
from recgym.recommenders.ensemble import Ensemble, EnsembleConfig
from recgym.recommenders.knn import ItemKNN, ItemKNNConfig
from recgym.recommenders.matrix_factorization import MatrixFactorization, MatrixFactorizationConfig
from recgym.recommenders.popularity import Popularity, PopularityConfig
from recgym.recommenders.slim import SLIM, SLIMConfig

__all__ = [
    "BiasedMFModel",
    "ContentBased",
    "ContentBasedConfig",
    "EASE",
    "EASEConfig",
    "Ensemble",
    "EnsembleConfig",
    "ItemKNN",
    "ItemKNNConfig",
    "MatrixFactorization",
    "MatrixFactorizationConfig",
    "Popularity",
    "PopularityConfig",
    "Recommender",
    "SLIM",
    "SLIMConfig",
    "attach_tags",
    "fit_biased_mf",
]
