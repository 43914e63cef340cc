"""pytest-benchmark suites: recommender fit time and top-k recommend latency on MovieLens.

Run with ``python -m pytest benchmarks/test_recommenders.py --benchmark-only`` on a quiet
machine (quote medians); CI runs each body once with ``--benchmark-disable``. EASE^R's fit is a
dense solve over the catalogue (``~n_items^3`` operations) and SLIM's needs the same dense Gram
matrix: on ml-latest-small's 9,742 items they are the slowest fits here by far.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.experiments.recommenders_offline import TUNED_KNN, tuned_knn
from recgym.recommenders import (
    EASE,
    SLIM,
    ContentBased,
    ItemKNN,
    MatrixFactorization,
    Popularity,
    attach_tags,
)

DATASETS = ["ml-latest-small", "ml-100k"]
MODELS = {
    "popularity": Popularity,
    "mf-als-k16": MatrixFactorization,
    "item-knn": lambda: ItemKNN(n_neighbours=30),
    "content-tfidf": ContentBased,
    "ease-r": EASE,
    "item-knn-tuned": lambda: tuned_knn(**TUNED_KNN),
    "slim": SLIM,
}


@pytest.fixture(scope="module", params=DATASETS)
def dataset(request, movielens_home):
    from recgym.datasets import load_movielens

    data = load_movielens(request.param)
    return data, attach_tags(data.items, data.tags)


@pytest.mark.parametrize("model_name", list(MODELS))
def test_fit(benchmark, dataset, model_name):
    data, items = dataset
    make = MODELS[model_name]
    benchmark.group = f"recommender fit ({data.name})"
    model = benchmark.pedantic(
        lambda: make().fit(data.ratings, items), rounds=3, iterations=1, warmup_rounds=0
    )
    assert model.is_fitted


@pytest.mark.parametrize("model_name", list(MODELS))
def test_recommend_top10(benchmark, dataset, model_name):
    data, items = dataset
    model = MODELS[model_name]().fit(data.ratings, items)
    users = np.arange(0, data.n_users, max(1, data.n_users // 50))  # 50 users per round
    model.recommend(int(users[0]), 10)  # warm-up outside the timed region

    def recommend_all():
        return [model.recommend(int(u), 10) for u in users]

    benchmark.group = f"recommend top-10 x {len(users)} users ({data.name})"
    lists = benchmark(recommend_all)
    assert all(len(ids) == 10 for ids, _ in lists)
