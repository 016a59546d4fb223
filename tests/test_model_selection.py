"""dataval.model_selection.compare_estimators."""

import numpy as np
import pytest
import torch
from joblib import parallel_config
from sklearn.datasets import load_breast_cancer, make_regression
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import FitFailedWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GroupKFold, ShuffleSplit
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from dataval import DataOOB, ExactInfluence, KNNShapley, TracIn
from dataval.model_selection import compare_estimators

ESTIMATORS = {"exact": ExactInfluence(), "tracin": TracIn()}
FAST = dict(n_test=10, n_subsets=6, n_loo=5)


def _classification():
    X, y = load_breast_cancer(return_X_y=True)
    X, y = X[:150], y[:150]
    model = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=0.1, solver="newton-cholesky", tol=1e-10),
    )
    return model, X, y


def _regression():
    X, y = make_regression(n_samples=80, n_features=5, noise=10.0, random_state=0)
    return Ridge(alpha=1.0), X, y


CASES = [
    dict(id="logistic", make=_classification, scoring=["lds", "loo", "mislabel_auc"]),
    dict(id="ridge", make=_regression, scoring=["lds", "loo"]),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["id"])
def test_results_are_tidy_and_exact_influence_scores_well(case):
    model, X, y = case["make"]()
    results = compare_estimators(
        ESTIMATORS, model, X, y, scoring=case["scoring"], cv=2, random_state=0, **FAST
    )
    assert results.columns.tolist() == [
        "estimator",
        "fold",
        "metric",
        "value",
        "fit_time",
        "score_time",
    ]
    assert len(results) == len(ESTIMATORS) * 2 * len(case["scoring"])
    assert set(results["metric"]) == set(case["scoring"])
    assert np.isfinite(results["value"]).all()
    assert (results[["fit_time", "score_time"]] >= 0).all().all()
    summary = results.groupby(["estimator", "metric"])["value"].mean()
    assert summary["exact", "loo"] > 0.95
    assert summary["exact", "lds"] > 0.5
    if "mislabel_auc" in case["scoring"]:
        assert summary["exact", "mislabel_auc"] > 0.7


def test_reproducible_whatever_the_splitter_and_n_jobs():
    model, X, y = _classification()
    splitters = [
        (ShuffleSplit(n_splits=2, test_size=0.3, random_state=0), None),
        (GroupKFold(2), np.arange(len(y)) % 5),
    ]
    for cv, groups in splitters:
        kwargs = dict(
            scoring=("lds", "mislabel_auc"),
            cv=cv,
            groups=groups,
            random_state=3,
            detection="value",
            **FAST,
        )
        sequential = compare_estimators(ESTIMATORS, model, X, y, **kwargs)
        with parallel_config(backend="threading"):
            parallel = compare_estimators(ESTIMATORS, model, X, y, n_jobs=2, **kwargs)
        np.testing.assert_array_equal(sequential["value"], parallel["value"])
        assert sequential["fold"].tolist() == parallel["fold"].tolist()


def test_verbose_prints_one_line_per_result(capsys):
    model, X, y = _regression()
    compare_estimators(
        {"exact": ExactInfluence()}, model, X, y, cv=2, verbose=1, **FAST
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if "lds" in line]
    assert len(lines) == 2
    assert lines[0].startswith("[fold 0]")


@pytest.mark.parametrize(
    "estimators, kwargs, error, message",
    [
        ({}, {}, ValueError, "non-empty dict"),
        ({"ridge": Ridge()}, {}, TypeError, r"estimators\['ridge'\] must be"),
        (ESTIMATORS, dict(scoring="r2"), ValueError, "scoring must name"),
        (ESTIMATORS, dict(scoring=[]), ValueError, "scoring must name"),
        (ESTIMATORS, dict(scoring="mislabel_auc"), ValueError, "needs a classifier"),
        (ESTIMATORS, dict(cv="folds"), ValueError, "'cv' parameter"),
        (ESTIMATORS, dict(n_subsets=1), ValueError, "'n_subsets' parameter"),
        (ESTIMATORS, dict(detection="loss"), ValueError, "'detection' parameter"),
    ],
)
def test_bad_input(estimators, kwargs, error, message):
    model, X, y = _regression()
    with pytest.raises(error, match=message):
        compare_estimators(estimators, model, X, y, **kwargs)


def _unfitted_state(model):
    """What a refitting helper must leave alone: parameters, no fitted state."""
    return model.get_params(deep=False), sorted(vars(model))


BROKEN = ExactInfluence(max_params=1)  # the dense-size error, at fit


# n_jobs=2 starts worker processes
@pytest.mark.parametrize("n_jobs", [None, pytest.param(2, marks=pytest.mark.slow)])
def test_a_failing_estimator_is_recorded_and_the_others_kept(n_jobs):
    model, X, y = _regression()
    before = _unfitted_state(model)
    estimators = {"exact": ExactInfluence(), "broken": BROKEN}
    kwargs = dict(scoring=["lds", "loo"], cv=2, random_state=0, **FAST)
    with pytest.warns(FitFailedWarning) as record:
        results = compare_estimators(estimators, model, X, y, n_jobs=n_jobs, **kwargs)
    messages = [str(w.message) for w in record if w.category is FitFailedWarning]
    assert len(messages) == 2  # one per fold
    assert all("estimators['broken']" in m and "max_params" in m for m in messages)
    broken = results[results["estimator"] == "broken"]
    assert len(broken) == 4
    assert broken[["value", "fit_time", "score_time"]].isna().all().all()
    good = results[results["estimator"] == "exact"]
    alone = compare_estimators({"exact": ExactInfluence()}, model, X, y, **kwargs)
    np.testing.assert_array_equal(good["value"], alone["value"])
    assert _unfitted_state(model) == before


def test_error_score_value_and_raise():
    model, X, y = _classification()
    estimators = {"broken": BROKEN}
    kwargs = dict(scoring=["mislabel_auc"], cv=2, random_state=0, **FAST)
    with pytest.warns(FitFailedWarning, match=r"error_score=-1"):
        results = compare_estimators(estimators, model, X, y, error_score=-1, **kwargs)
    assert (results["value"] == -1).all()
    with pytest.raises(ValueError, match=r"estimators\['broken'\] failed on fold 0"):
        compare_estimators(estimators, model, X, y, error_score="raise", **kwargs)
    with pytest.raises(ValueError, match="'error_score' parameter"):
        compare_estimators(estimators, model, X, y, error_score="skip", **kwargs)
    assert not hasattr(model, "classes_")


VALUATION_ONLY = dict(scoring=["mislabel_auc", "removal"], cv=2, random_state=0)


def test_valuation_only_comparison_on_a_model_without_gradients():
    model, X, y = _classification()
    forest = RandomForestClassifier(n_estimators=5)
    valuations = {"oob": DataOOB(n_estimators=30), "knn": KNNShapley()}
    kwargs = dict(removal_fractions=[0.2], error_score="raise", **VALUATION_ONLY)
    results = compare_estimators(valuations, forest, X, y, **kwargs)
    assert results.columns.tolist() == [
        "estimator",
        "fold",
        "metric",
        "value",
        "fit_time",
        "score_time",
    ]
    assert len(results) == 2 * 2 * 3  # estimators x folds x metrics
    metrics = {"mislabel_auc", "removal_highest", "removal_lowest"}
    assert set(results["metric"]) == metrics
    assert np.isfinite(results["value"]).all()
    removal = results[results["metric"] != "mislabel_auc"]["value"]
    assert ((removal >= 0) & (removal <= 1)).all()  # held-out accuracies
    summary = results.groupby(["estimator", "metric"])["value"].mean()
    assert summary["oob", "mislabel_auc"] > 0.8
    assert not hasattr(forest, "estimators_")  # refits used clones
    # KNN-Shapley values rows for KNeighborsClassifier() whatever the model, on
    # the same folds and flips: the same AUC as with a model with gradients
    knn = {"knn": KNNShapley()}
    with_gradients = compare_estimators(knn, model, X, y, **kwargs)
    without = results[results["estimator"] == "knn"]
    np.testing.assert_array_equal(
        with_gradients.query("metric == 'mislabel_auc'")["value"],
        without.query("metric == 'mislabel_auc'")["value"],
    )


@pytest.mark.parametrize(
    "estimators, model, scoring, error, message",
    [
        (
            {"exact": ExactInfluence(), "oob": DataOOB()},
            RandomForestClassifier(),
            "removal",
            TypeError,
            r"estimators\['exact'\] is an influence estimator, which needs the "
            "gradients of model, but dataval reads none from a RandomForest",
        ),
        (
            {"tracin": TracIn()},
            make_pipeline(StandardScaler(), SVC()),
            "mislabel_auc",
            TypeError,
            "reads none from a SVC. Compare valuation estimators only",
        ),
        (
            {"oob": DataOOB()},
            RandomForestClassifier(),
            ["lds", "removal"],
            ValueError,
            r"scoring \['lds'\] compares influence scores",
        ),
        (
            {"oob": DataOOB()},
            torch.nn.Linear(30, 2),
            "removal",
            TypeError,
            "Wrap a torch module in a skorch",
        ),
    ],
)
def test_what_needs_gradients_is_refused_up_front(
    estimators, model, scoring, error, message
):
    _, X, y = _classification()
    with pytest.raises(error, match=message):
        compare_estimators(estimators, model, X, y, scoring=scoring, cv=2)
