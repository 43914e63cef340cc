"""Offline evaluation of the classical recommenders: rating prediction, top-N, NCF ML-1M.

Three tables:

1. Rating prediction, k-fold (``KFold(5, shuffle=True, random_state=0)`` folds) on ml-100k and
   ml-latest-small: RMSE, MAE, total fit and predict seconds, with Surprise's SVD measured in
   the same run on the same folds when ``scikit-surprise`` is installed.
2. Top-N, leave-last-out per user with full ranking: HR@10, NDCG@10, Recall@10, MRR, coverage.
3. The NCF ML-1M protocol (He et al. 2017): HR@10 and NDCG@10 against 99 fixed negatives, with
   the published anchors beside them. In full mode EASE^R's ``l2``, EDLAE's ``l2`` and dropout
   (Steck 2020; :class:`~recgym.recommenders.EASE` with ``dropout > 0``), item-kNN's feature
   weighting, similarity, neighbourhood size and shrinkage, and SLIM's two penalties are first
   tuned on a validation
   split carved from the training pairs
   (:func:`~recgym.recommenders.model_selection.holdout_validation`: one random training
   interaction per user against 99 sampled negatives, NCF's own tuning split); the test
   interactions are used once, for the selected configurations. A fourth table lists every
   validation trial.

``ctx.quick`` runs 2 folds, ml-100k only, and fewer models, and replaces the validation searches
by the configurations they selected in the last full run (:data:`TUNED_EASE`,
:data:`TUNED_EDLAE`, :data:`TUNED_KNN`; SLIM, the slowest fit, only runs in full mode);
``ctx.synthetic`` runs tables 1 and 2 on the synthetic world (marked) and skips the NCF tables,
whose protocol files are real data.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np

from benchmarks.common import ExperimentResult, RunContext
from recgym.recommenders import (
    EASE,
    SLIM,
    ContentBased,
    Ensemble,
    ItemKNN,
    MatrixFactorization,
    Popularity,
    Recommender,
    attach_tags,
)
from recgym.recommenders.model_selection import GridSearchResult, grid_search, holdout_validation
from recgym.recommenders.offline_evaluation import (
    NCFData,
    TopNResult,
    evaluate_ncf,
    evaluate_ratings,
    evaluate_top_n,
    kfold_indices,
    leave_last_out,
    load_ncf_ml1m,
)

# Published / issue anchors quoted beside our numbers.
RATING_ANCHORS = {
    ("ml-100k", "Surprise SVD"): "0.934 (issue; 2.5 s)",
    ("ml-100k", "Surprise SVD++"): "0.919 (issue; 58 s)",
    ("ml-latest-small", "Surprise SVD"): "0.873 (issue)",
}
NCF_ANCHORS = {
    "Popularity (count)": "TopPop 0.453",
    "ItemKNN (cosine, binary)": "ItemKNN 0.660",
    "MatrixFactorization (4 negatives)": "NeuMF 0.712",
    "Ensemble (ranking blend)": "SLIM 0.716",
    "EASE^R (tuned)": "SLIM 0.716",
    "EDLAE (tuned)": "SLIM 0.716",
    "ItemKNN (tuned)": "ItemKNN 0.660",
    "SLIM (tuned)": "SLIM 0.716",
}

# Configurations used for the implicit-feedback (NCF) setting: binary cosine without shrinkage,
# and biased MF regressing 1 vs 4 sampled negatives per interaction (NCF's own sampling ratio).
NCF_KNN = dict(implicit=True, n_neighbours=30, shrinkage=0.0)
NCF_MF = dict(negatives=4, n_factors=16, reg=0.01, bias_reg=1.0, reg_exponent=1.0, n_iters=10)

# The validation searches of the full run (NCF ML-1M training pairs only). EASE^R's one
# parameter on a log grid of ratio 2^(1/4) (it holds the former sqrt(2) grid); item-kNN over the
# feature weighting of the user-item matrix (Dacrema et al. 2019 tune none / TF-IDF / BM25), the
# asymmetry of the cosine (0.5 is the plain cosine), the neighbourhood size and the shrinkage, on
# binary input (the NCF pairs carry no ratings).
EASE_GRID = {"l2": [round(100.0 * 2 ** (j / 4), 1) for j in range(21)]}  # 100 .. 3200
# EDLAE (EASE with Steck's dropout penalty, Lambda_jj = l2 + p / (1 - p) G_jj): the dropout rate
# p and the uniform l2; G_jj is item j's interaction count, 270 on average on ML-1M, so p = 0.5
# adds about as much as l2 = 270 on average, more on popular items and less on rare ones.
EDLAE_GRID = {"dropout": [0.25, 0.33, 0.5, 0.75], "l2": [400.0, 800.0, 1200.0]}
KNN_GRID = {
    "feature_weighting": ["none", "tfidf", "bm25"],
    "asymmetry": [0.2, 0.35, 0.5],
    "n_neighbours": [25, 50, 100, 200],
    "shrinkage": [0.0, 10.0, 50.0],
}
# SLIM (fsSLIM, 100 candidate items per regression) over its two penalties.
SLIM_GRID = {"l1": [0.5, 2.0, 8.0], "l2": [250.0, 1000.0]}
# What those searches selected in the last full run; quick runs and the other tables use them,
# and a full run notes any disagreement with its own selection.
TUNED_EASE = dict(l2=1131.4)
TUNED_EDLAE = dict(dropout=0.33, l2=800.0)
TUNED_KNN = dict(feature_weighting="tfidf", asymmetry=0.35, n_neighbours=100, shrinkage=10.0)
TUNED_SLIM = dict(l1=0.5, l2=1000.0)


def tuned_knn(
    asymmetry: float,
    n_neighbours: int,
    shrinkage: float,
    feature_weighting: Literal["none", "tfidf", "bm25"] = "none",
) -> ItemKNN:
    """Binary item-kNN with the asymmetric cosine (``asymmetry = 0.5``: the plain cosine).

    Args:
        asymmetry: :attr:`~recgym.recommenders.ItemKNNConfig.asymmetry`.
        n_neighbours: Neighbours kept per item.
        shrinkage: Shrinkage constant.
        feature_weighting: Weighting of the user-item matrix before the similarity.

    Returns:
        The unfitted :class:`~recgym.recommenders.ItemKNN`.
    """
    similarity = "cosine" if asymmetry == 0.5 else "asymmetric_cosine"
    return ItemKNN(
        similarity=similarity,
        asymmetry=asymmetry,
        n_neighbours=n_neighbours,
        shrinkage=shrinkage,
        implicit=True,
        feature_weighting=feature_weighting,
    )


def _knn_label(params: dict) -> str:
    return (
        f"{params.get('feature_weighting', 'none')}, alpha={params['asymmetry']}, "
        f"k={params['n_neighbours']}, shrinkage={params['shrinkage']}"
    )


def ncf_searches() -> dict[str, tuple[Callable[..., Recommender], dict[str, list]]]:
    """The full run's validation searches: name -> (model factory, parameter grid)."""
    return {
        "EASE^R": (EASE, EASE_GRID),
        "EDLAE": (EASE, EDLAE_GRID),
        "ItemKNN": (tuned_knn, KNN_GRID),
        "SLIM": (SLIM, SLIM_GRID),
    }


def validation_searches(
    data: NCFData,
    searches: dict[str, tuple[Callable[..., Recommender], dict[str, list]]],
    *,
    seed: int,
) -> dict[str, GridSearchResult]:
    """Select hyper-parameters on a validation split of the training pairs only.

    The split is :func:`~recgym.recommenders.model_selection.holdout_validation` of
    ``data.train`` (one random training interaction per user against 99 negatives sampled from
    the items the user has no training interaction with); ``data.test_items`` and
    ``data.negatives`` are never read, so the test can only score the selected configurations.

    Args:
        data: The NCF protocol data.
        searches: Name -> (model factory, grid), e.g. :func:`ncf_searches`.
        seed: Seed of the validation split.

    Returns:
        Name -> the :class:`~recgym.recommenders.model_selection.GridSearchResult` (HR@10).
    """
    validation = holdout_validation(data.train, data.items, seed=seed)
    return {
        name: grid_search(make, grid, lambda model: evaluate_ncf(model, validation))
        for name, (make, grid) in searches.items()
    }


def run(ctx: RunContext) -> list[ExperimentResult]:
    """Run the three offline tables (see the module docstring)."""
    return [_rating_table(ctx), _top_n_table(ctx), *_ncf_table(ctx)]


def _load(ctx: RunContext, name: str):
    from recgym.datasets import load_movielens

    if ctx.synthetic:
        return load_movielens("synthetic", seed=ctx.seed)
    return load_movielens(name)


def _rating_datasets(ctx: RunContext) -> list[str]:
    if ctx.synthetic:
        return ["synthetic"]
    return ["ml-100k"] if ctx.quick else ["ml-100k", "ml-latest-small"]


def _rating_models(quick: bool) -> dict[str, Callable[[], Recommender]]:
    models: dict[str, Callable[[], Recommender]] = {
        "MatrixFactorization (ALS, k=16)": MatrixFactorization,
        "Popularity (mean)": lambda: Popularity(kind="mean"),
    }
    if not quick:
        models |= {
            "MatrixFactorization (ALS, k=8)": lambda: MatrixFactorization(n_factors=8),
            "Popularity (IMDB weighted)": lambda: Popularity(kind="weighted"),
            "ItemKNN (adjusted cosine)": lambda: ItemKNN(
                similarity="adjusted_cosine", n_neighbours=40, shrinkage=100.0
            ),
            "ItemKNN (NCF-tuned, binary similarity)": lambda: tuned_knn(**TUNED_KNN),
            "Ensemble (MF + ItemKNN + weighted pop.)": lambda: Ensemble(
                [
                    MatrixFactorization(),
                    ItemKNN(similarity="adjusted_cosine", n_neighbours=40, shrinkage=100.0),
                    Popularity(kind="weighted"),
                ],
                target="rating",
            ),
        }
    return models


def _rating_table(ctx: RunContext) -> ExperimentResult:
    n_folds = 2 if ctx.quick else 5
    rows, notes = [], []
    for name in _rating_datasets(ctx):
        data = _load(ctx, name)
        for label, make in _rating_models(ctx.quick).items():
            folds = evaluate_ratings(
                make, data.ratings, data.items, n_splits=5, random_state=0, max_folds=n_folds
            )
            rows.append(_rating_row(data.name, label, folds, n_folds))
        surprise_rows = _surprise_rows(data, n_folds, quick=ctx.quick)
        if surprise_rows is None:
            notes.append("scikit-surprise is not installed: no same-run Surprise figures.")
        else:
            rows.extend(surprise_rows)
    notes += [
        f"Folds: KFold(n_splits=5, shuffle=True, random_state=0) semantics, first {n_folds} "
        "folds evaluated; Surprise gets the identical folds (its KFold draws the same ones).",
        "fit s / predict s: total wall-clock seconds over the evaluated folds, same process, same "
        "machine. Predictions are clipped to the rating scale, as Surprise does.",
        "Reproduce: python -m benchmarks.run --only recommenders_offline",
    ]
    return ExperimentResult(
        name="recommenders_ratings",
        title="Rating prediction (k-fold): RMSE, MAE, fit time",
        columns=["dataset", "model", "RMSE", "MAE", "fit s", "predict s", "folds", "anchor"],
        rows=rows,
        notes=notes,
    )


def _rating_row(dataset: str, label: str, folds, n_folds: int) -> dict:
    return {
        "dataset": dataset,
        "model": label,
        "RMSE": round(float(np.mean([f.rmse for f in folds])), 4),
        "MAE": round(float(np.mean([f.mae for f in folds])), 4),
        "fit s": round(float(np.sum([f.fit_seconds for f in folds])), 2),
        "predict s": round(float(np.sum([f.predict_seconds for f in folds])), 3),
        "folds": n_folds,
        "anchor": RATING_ANCHORS.get((dataset, label), ""),
    }


def _surprise_rows(data, n_folds: int, *, quick: bool) -> list[dict] | None:
    try:
        import surprise
    except ImportError:
        return None
    frame = data.ratings[["user_id", "item_id", "rating"]]
    dataset = surprise.Dataset.load_from_df(frame, surprise.Reader(rating_scale=data.rating_scale))
    splitter = surprise.model_selection.KFold(n_splits=5, random_state=0, shuffle=True)
    ours = [t for _, t in kfold_indices(len(frame), 5, random_state=0)]
    algos = {"Surprise SVD": lambda: surprise.SVD(random_state=0)}
    if not quick:
        algos["Surprise BaselineOnly"] = lambda: surprise.BaselineOnly(verbose=False)
    rows = []
    for label, make in algos.items():
        rmses, maes, fit_s, pred_s = [], [], 0.0, 0.0
        for fold, (train, test) in enumerate(splitter.split(dataset)):
            if fold >= n_folds:
                break
            assert len(test) == len(ours[fold]), "Surprise drew different folds"
            algo = make()
            start = time.perf_counter()
            algo.fit(train)
            mid = time.perf_counter()
            predictions = algo.test(test)
            pred_s += time.perf_counter() - mid
            fit_s += mid - start
            rmses.append(surprise.accuracy.rmse(predictions, verbose=False))
            maes.append(surprise.accuracy.mae(predictions, verbose=False))
        rows.append(
            {
                "dataset": data.name,
                "model": label,
                "RMSE": round(float(np.mean(rmses)), 4),
                "MAE": round(float(np.mean(maes)), 4),
                "fit s": round(fit_s, 2),
                "predict s": round(pred_s, 3),
                "folds": n_folds,
                "anchor": RATING_ANCHORS.get((data.name, label), ""),
            }
        )
    return rows


def _top_n_models(quick: bool, has_tags_or_titles: bool) -> dict[str, Callable[[], Recommender]]:
    models: dict[str, Callable[[], Recommender]] = {
        "Popularity (count)": Popularity,
        "ItemKNN (cosine, binary)": lambda: ItemKNN(**NCF_KNN),
        "MatrixFactorization (4 negatives)": lambda: MatrixFactorization(**NCF_MF),
        "EASE^R (l2=500, default)": EASE,
        "ItemKNN (NCF-tuned, binary)": lambda: tuned_knn(**TUNED_KNN),
    }
    if not quick:
        models |= {
            "Popularity (IMDB weighted)": lambda: Popularity(kind="weighted"),
            "MatrixFactorization (ratings)": MatrixFactorization,
            "ContentBased (TF-IDF)": ContentBased,
            "SLIM (default)": SLIM,
            "Ensemble (ranking blend)": lambda: Ensemble(
                [ItemKNN(**NCF_KNN), MatrixFactorization(**NCF_MF), Popularity(), ContentBased()],
                target="implicit",
            ),
        }
    return models


def _top_n_table(ctx: RunContext) -> ExperimentResult:
    names = (
        ["synthetic"]
        if ctx.synthetic
        else (["ml-100k"] if ctx.quick else ["ml-latest-small", "ml-100k"])
    )
    rows = []
    for name in names:
        data = _load(ctx, name)
        items = attach_tags(data.items, data.tags)
        train, test = leave_last_out(data.ratings)
        for label, make in _top_n_models(ctx.quick, True).items():
            res = evaluate_top_n(make(), train, test, items, k=10)
            rows.append(
                {
                    "dataset": data.name,
                    "model": label,
                    "HR@10": round(res.hr, 4),
                    "NDCG@10": round(res.ndcg, 4),
                    "Recall@10": round(res.recall, 4),
                    "MRR": round(res.mrr, 4),
                    "coverage@10": round(res.coverage, 4),
                    "users": res.n_users,
                    "fit s": round(res.fit_seconds, 2),
                }
            )
    return ExperimentResult(
        name="recommenders_topn",
        title="Top-N, leave-last-out with full ranking (k = 10)",
        columns=[
            "dataset",
            "model",
            "HR@10",
            "NDCG@10",
            "Recall@10",
            "MRR",
            "coverage@10",
            "users",
            "fit s",
        ],
        rows=rows,
        notes=[
            "Each user's latest rating is held out and ranked against every catalogue item the "
            "user did not rate in training (ties by item id); users with one rating are skipped.",
            "One held-out item per user, so Recall@10 = HR@10. Coverage: share of the catalogue "
            "in at least one top-10 list.",
            "Reproduce: python -m benchmarks.run --only recommenders_offline",
        ],
    )


def _ncf_table(ctx: RunContext) -> list[ExperimentResult]:
    if ctx.synthetic:
        return []
    home = os.environ.get("RECGYM_DATA_HOME")
    folder = Path(home) / "ml-1m" if home else None
    try:
        data = load_ncf_ml1m(folder)
    except FileNotFoundError as err:
        return [
            ExperimentResult(
                name="recommenders_ncf",
                title="NCF ML-1M protocol: skipped",
                columns=["reason"],
                rows=[{"reason": str(err)}],
            )
        ]
    models = _top_n_models(ctx.quick, True)
    if ctx.quick:
        models = {k: v for k, v in models.items() if not k.startswith("MatrixFactorization")}
        models.pop("ItemKNN (NCF-tuned, binary)", None)  # the tuned row follows
        models.pop("EASE^R (l2=500, default)", None)
    else:
        models.pop("MatrixFactorization (ratings)")  # implicit pairs carry no ratings
        models.pop("Popularity (IMDB weighted)")
        models.pop("ItemKNN (NCF-tuned, binary)")
        models.pop("EASE^R (l2=500, default)")
        models.pop("SLIM (default)")
    configurations = {
        "ItemKNN (cosine, binary)": "k=30, shrinkage=0 (untuned)",
        "MatrixFactorization (4 negatives)": "16 factors, 4 negatives",
    }
    rows, results, notes = [], [], []
    for label, make in models.items():
        rows.append(_ncf_row(label, configurations.get(label, ""), evaluate_ncf(make(), data)))

    recorded = {"EASE^R": TUNED_EASE, "EDLAE": TUNED_EDLAE, "ItemKNN": TUNED_KNN,
                "SLIM": TUNED_SLIM}  # fmt: skip
    selected = {name: dict(params) for name, params in recorded.items()}
    how = "selected by the last full run's validation search"
    if not ctx.quick:
        searches = validation_searches(data, ncf_searches(), seed=ctx.seed)
        for name, search in searches.items():
            if search.best_params != recorded[name]:
                notes.append(
                    f"{name}: this run's validation search selected {search.best_params}, not "
                    f"the recorded {recorded[name]}; update TUNED_* in {__name__}."
                )
            selected[name] = search.best_params
        how = "selected on the validation split in this run"
        results.append(_tuning_table(searches, ctx.seed))
    ease_params, edlae_params = selected["EASE^R"], selected["EDLAE"]
    knn_params, slim_params = selected["ItemKNN"], selected["SLIM"]
    rows.append(
        _ncf_row("EASE^R (tuned)", f"l2={ease_params['l2']}; {how}",
                 evaluate_ncf(EASE(**ease_params), data))
    )  # fmt: skip
    rows.append(
        _ncf_row("EDLAE (tuned)", f"{_edlae_label(edlae_params)}, zero diagonal; {how}",
                 evaluate_ncf(EASE(**edlae_params), data))
    )  # fmt: skip
    rows.append(
        _ncf_row("ItemKNN (tuned)", f"binary, {_knn_label(knn_params)}; {how}",
                 evaluate_ncf(tuned_knn(**knn_params), data))
    )  # fmt: skip
    if not ctx.quick:
        rows.append(
            _ncf_row("SLIM (tuned)", f"{_slim_label(slim_params)}, 100 candidates; {how}",
                     evaluate_ncf(SLIM(**slim_params), data))
        )  # fmt: skip
    half_width = 1.96 * np.sqrt(0.7 * 0.3 / data.n_users)
    results.insert(
        0,
        ExperimentResult(
            name="recommenders_ncf",
            title="NCF ML-1M protocol: HR@10 / NDCG@10 against 99 sampled negatives",
            columns=["model", "configuration", "HR@10", "NDCG@10", "published anchor (HR@10)",
                     "fit s"],
            rows=rows,
            notes=notes + [
                "Train = all 1,000,209 ml-1m (user, movie) pairs minus each user's test "
                "interaction (ml-1m.test.rating); each test item is ranked against its 99 listed "
                "negatives (ml-1m.test.negative); ties count against the test item.",
                f"Sampling error: with {data.n_users:,} users an HR@10 near 0.7 has a 95% "
                f"binomial half-width of {half_width:.3f}.",
                "Tuned rows: hyper-parameters chosen by HR@10 on a validation split of the "
                "training pairs only (one random interaction per user held out, ranked against "
                "99 negatives sampled from the items the user has no training interaction with; "
                "seed = the run's seed), then refitted on all training pairs and tested once.",
                "Published anchors (HR@10): TopPop 0.453, ItemKNN 0.660, SLIM 0.716, NeuMF 0.712 "
                "(He et al. 2017; Dacrema et al. 2019); the anchor column pairs each row with its "
                "closest published model.",
                "fit s: wall-clock seconds of one fit on the shared 2-core machine (other jobs "
                "running), so only their ratios are meaningful.",
                "Reproduce: python -m benchmarks.run --only recommenders_offline",
            ],
        ),
    )  # fmt: skip
    return results


def _ncf_row(label: str, configuration: str, result: TopNResult) -> dict:
    return {
        "model": label,
        "configuration": configuration,
        "HR@10": round(result.hr, 4),
        "NDCG@10": round(result.ndcg, 4),
        "published anchor (HR@10)": NCF_ANCHORS.get(label, ""),
        "fit s": round(result.fit_seconds, 1),
    }


def _slim_label(params: dict) -> str:
    return f"l1={params['l1']}, l2={params['l2']}"


def _edlae_label(params: dict) -> str:
    return f"dropout={params['dropout']}, l2={params['l2']}"


def _tuning_table(searches: dict[str, GridSearchResult], seed: int) -> ExperimentResult:
    describe = {
        "EASE^R": lambda p: f"l2={p['l2']}",
        "EDLAE": _edlae_label,
        "ItemKNN": _knn_label,
        "SLIM": _slim_label,
    }
    rows = []
    for name, search in searches.items():
        for trial in search.trials:
            rows.append(
                {
                    "model": "ItemKNN (binary)" if name == "ItemKNN" else name,
                    "configuration": describe[name](trial.params),
                    "validation HR@10": round(trial.result.hr, 4),
                    "validation NDCG@10": round(trial.result.ndcg, 4),
                    "fit s": round(trial.result.fit_seconds, 1),
                    "selected": "yes" if trial.params == search.best_params else "",
                }
            )
    return ExperimentResult(
        name="recommenders_ncf_tuning",
        title="NCF ML-1M: validation searches of the tuned rows (training pairs only)",
        columns=["model", "configuration", "validation HR@10", "validation NDCG@10", "fit s",
                 "selected"],
        rows=rows,
        notes=[
            "Validation: recgym.recommenders.model_selection.holdout_validation(train, "
            f"seed={seed}): "
            "one random training interaction per user held out against 99 sampled negatives "
            "(NCF's own tuning split). Random hold-outs are easier to rank than the test's "
            "latest interactions, hence the higher figures.",
            "Selection: highest validation HR@10, the first on ties. Search time: "
            + ", ".join(f"{name} {search.seconds:.0f} s" for name, search in searches.items())
            + " (shared 2-core machine).",
            "EDLAE: EASE^R's zero-diagonal closed form with the penalty of item j's row "
            "l2 + p / (1 - p) G_jj (Steck 2020, full emphasis, full rank); dropout p = 0 is "
            "EASE^R.",
            "ItemKNN: feature weighting of the binary user-item matrix (none, tfidf, bm25), "
            "then alpha, the asymmetric cosine's exponent (0.5 = the plain cosine). On binary "
            "input at alpha = 0.5, tfidf and bm25 give the same neighbours (BM25 only rescales "
            "each item vector, which the cosine divides out).",
        ],
    )  # fmt: skip
