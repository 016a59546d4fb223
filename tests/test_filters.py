"""MislabelFilter, FilteredEstimator and the notebook helpers."""

import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.naive_bayes import GaussianNB
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.validation import check_is_fitted

from dataval import (
    EKFACInfluence,
    ExactInfluence,
    FilteredEstimator,
    MislabelFilter,
    TracIn,
)
from dataval._filters import _mislabel
from dataval.datasets import flip_labels
from dataval.filters import find_label_issues, plot_suspects, suspects
from dataval.metrics import mislabel_detection_auc


def _noisy_blobs(n=150, as_frame=True):
    X, y = make_blobs(n, n_features=4, centers=3, cluster_std=1.5, random_state=0)
    y_noisy, flipped = flip_labels(y, frac=0.1, random_state=0)
    if as_frame:
        index = pd.Index([f"r{i}" for i in range(n)], name="row")
        X = pd.DataFrame(X, index=index, columns=[f"x{i}" for i in range(4)])
        y_noisy = pd.Series(y_noisy, index=index, name="label")
    return X, y_noisy, flipped


def _noisy_regression(n=120):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(n, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=n)
    corrupted = np.zeros(n, dtype=bool)
    corrupted[rng.choice(n, n // 10, replace=False)] = True
    y[corrupted] += rng.choice([-4.0, 4.0], corrupted.sum())
    return X, y, corrupted


CASES = [
    dict(id="logistic", data=_noisy_blobs, model=LogisticRegression(max_iter=500)),
    dict(
        id="mlp",
        data=_noisy_blobs,
        model=MLPClassifier((5,), alpha=1e-2, max_iter=600, random_state=0),
    ),
    dict(id="ridge", data=_noisy_regression, model=Ridge(alpha=1.0)),
]


@pytest.mark.parametrize("method", ["combined", "self", "cross-fit", "loss"])
@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_filter_finds_wrong_labels(case, method):
    X, y, wrong = case["data"]()
    filt = MislabelFilter(estimator=case["model"], method=method, frac=0.1)
    X_kept, y_kept = filt.fit_resample(X, y)
    assert mislabel_detection_auc(filt.scores_.to_numpy(), wrong) > 0.9
    n_removed = int(0.1 * len(y))
    assert len(X_kept) == len(y_kept) == len(y) - n_removed
    assert filt.mask_.dtype == bool and filt.mask_.sum() == len(X_kept)
    assert filt.method_ == method
    removed = filt.scores_[~filt.mask_]
    assert removed.min() >= filt.scores_[filt.mask_].max()
    if isinstance(X, pd.DataFrame):
        assert filt.scores_.index.equals(X.index)
        assert X_kept.index.equals(X.index[filt.mask_])
        assert y_kept.index.equals(X_kept.index)
    assert len(filt.predictions_) == len(y)


def test_threshold_replaces_frac():
    X, y, _ = _noisy_blobs()
    filt = MislabelFilter(
        estimator=LogisticRegression(max_iter=500), method="loss", frac=0.1
    ).fit(X, y)
    cut = float(filt.scores_.quantile(0.8))
    by_threshold = clone(filt).set_params(threshold=cut, frac=0.5).fit(X, y)
    np.testing.assert_array_equal(by_threshold.mask_, (filt.scores_ <= cut).to_numpy())


def test_prefitted_estimator_is_used_and_left_unchanged():
    X, y, _ = _noisy_blobs(as_frame=False)
    model = LogisticRegression(max_iter=500).fit(X, y)
    coef = model.coef_.copy()
    filt = MislabelFilter(estimator=model, method="self").fit(X, y)
    assert filt.estimator_ is model
    np.testing.assert_array_equal(model.coef_, coef)


@pytest.mark.parametrize("influence", [TracIn(), EKFACInfluence()], ids=repr)
def test_unfitted_estimator_and_influence_are_cloned(influence):
    X, y, wrong = _noisy_blobs(as_frame=False)
    model = MLPClassifier((5,), alpha=1e-2, max_iter=600, random_state=0)
    filt = MislabelFilter(estimator=model, influence=influence, method="self")
    filt.fit(X, y)
    assert type(filt.influence_) is type(influence)
    assert filt.influence_ is not influence
    assert filt.scores_.name == "self_influence"
    assert mislabel_detection_auc(filt.scores_.to_numpy(), wrong) > 0.9
    for original in (model, influence):
        with pytest.raises(NotFittedError):
            check_is_fitted(original)


def test_default_influence_depends_on_model_size(monkeypatch):
    X, y, _ = _noisy_blobs(as_frame=False)
    model = LogisticRegression(max_iter=500).fit(X, y)
    small = _mislabel.default_influence(model, X, y)
    assert isinstance(small, ExactInfluence) and small.curvature == "auto"
    monkeypatch.setattr(_mislabel, "DENSE_LIMIT", 10)
    large = _mislabel.default_influence(model, X, y)
    assert isinstance(large, EKFACInfluence)


def test_cross_fit_works_for_any_classifier():
    X, y, wrong = _noisy_blobs()
    filt = MislabelFilter(estimator=GaussianNB(), method="cross-fit").fit(X, y)
    assert filt.scores_.name == "heldout_loss"
    assert mislabel_detection_auc(filt.scores_.to_numpy(), wrong) > 0.9


def test_cross_fit_falls_back_to_self_when_a_class_has_one_row():
    X, y, _ = _noisy_blobs(as_frame=False)
    y = y.copy()
    y[0] = 7
    filt = MislabelFilter(
        estimator=LogisticRegression(max_iter=500), method="cross-fit"
    )
    with pytest.warns(UserWarning, match="falling back to in-sample scores"):
        filt.fit(X, y)
    assert filt.method_ == "loss"
    assert filt.mask_[0], "the only row of class 7 must be kept"


def test_no_class_loses_all_its_rows():
    X, y, _ = _noisy_blobs(as_frame=False)
    filt = MislabelFilter(estimator=LogisticRegression(max_iter=500), frac=0.9)
    kept = filt.fit(X, y).mask_
    assert set(np.unique(y[kept])) == set(np.unique(y))


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(estimator=None), "estimator=None"),
        (dict(method="loo"), "'method' parameter"),
        (dict(frac=1.0), "'frac' parameter"),
        (dict(cv="five"), "'cv' parameter"),
        (dict(influence="exact"), "'influence' parameter"),
    ],
)
def test_bad_parameters_are_named(params, match):
    X, y, _ = _noisy_blobs()
    filt = MislabelFilter(estimator=LogisticRegression()).set_params(**params)
    with pytest.raises((ValueError, InvalidParameterError), match=match):
        filt.fit(X, y)


def test_imblearn_pipeline():
    imblearn_pipeline = pytest.importorskip("imblearn.pipeline")
    X, y, _ = _noisy_blobs()
    pipe = imblearn_pipeline.make_pipeline(
        MislabelFilter(estimator=LogisticRegression(max_iter=500)),
        LogisticRegression(max_iter=500),
    )
    pipe.fit(X, y)
    assert pipe.predict(X).shape == (len(X),)
    assert pipe[-1].n_features_in_ == 4


@parametrize_with_checks(
    [
        FilteredEstimator(LogisticRegression(max_iter=200)),
        FilteredEstimator(
            LogisticRegression(max_iter=200),
            filter=MislabelFilter(method="cross-fit", cv=2),
        ),
        # the resampler on its own (imbalanced-learn's protocol adds only
        # fit_resample, which these checks leave alone)
        MislabelFilter(estimator=LogisticRegression(max_iter=200), cv=2),
    ]
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_filtered_estimator_fits_on_kept_rows():
    X, y, _ = _noisy_blobs()
    model = FilteredEstimator(LogisticRegression(max_iter=500)).fit(X, y)
    assert model.filter_.estimator is model.estimator
    assert model.removed_.equals(X.index[~model.filter_.mask_])
    assert len(model.removed_) == model.filter_.n_issues_ > 0
    expected = LogisticRegression(max_iter=500).fit(
        X.drop(model.removed_), y.drop(model.removed_)
    )
    np.testing.assert_allclose(model.estimator_.coef_, expected.coef_)
    np.testing.assert_array_equal(model.classes_, [0, 1, 2])
    assert model.predict_proba(X).shape == (len(X), 3)


def test_filtered_estimator_keeps_the_filters_own_estimator():
    X, y, _ = _noisy_blobs()
    judge = GaussianNB()
    model = FilteredEstimator(
        LogisticRegression(max_iter=500),
        filter=MislabelFilter(estimator=judge, method="cross-fit"),
    ).fit(X, y)
    assert model.filter_.estimator is not judge
    assert isinstance(model.filter_.estimator, GaussianNB)


def test_pipeline_cross_validation_and_grid_search():
    X, y, _ = _noisy_blobs(as_frame=False)
    pipe = make_pipeline(
        StandardScaler(),
        FilteredEstimator(
            LogisticRegression(max_iter=500),
            filter=MislabelFilter(method="loss", frac=0.1),
        ),
    )
    assert cross_val_score(pipe, X, y, cv=3).mean() > 0.7
    search = GridSearchCV(
        pipe, {"filteredestimator__filter__frac": [0.0, 0.1]}, cv=3
    ).fit(X, y)
    assert search.best_params_["filteredestimator__filter__frac"] in (0.0, 0.1)
    assert search.predict(X).shape == (len(X),)


def test_suspects_table():
    X, y, _ = _noisy_blobs()
    filt = MislabelFilter(estimator=LogisticRegression(max_iter=500)).fit(X, y)
    table = suspects(FilteredEstimator(LogisticRegression()).fit(X, y), n=5)
    assert table.columns.tolist() == [
        "label",
        "predicted",
        "score",
        "rank",
        "is_issue",
    ]
    assert table.index.equals(filt.scores_.nlargest(5).index)
    assert table["rank"].tolist() == [1, 2, 3, 4, 5]
    assert table["is_issue"].all()
    pd.testing.assert_series_equal(table["label"], y[table.index])
    with pytest.raises(ValueError, match="y has 3 rows"):
        suspects(filt, y[:3])
    with pytest.raises(NotFittedError):
        suspects(MislabelFilter(), y)


@pytest.mark.parametrize("is_mislabeled", [None, "known"])
def test_plot_suspects(is_mislabeled):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    rng = np.random.RandomState(0)
    X = rng.uniform(size=(60, 16))
    y, wrong = flip_labels((X[:, :8].sum(1) > 4).astype(int), 0.1, random_state=0)
    filt = MislabelFilter(estimator=LogisticRegression(), method="loss").fit(X, y)
    known = wrong if is_mislabeled else None
    # 4x4 images: the filter's own X, thumbnails in rank order
    figure = plot_suspects(filt, is_mislabeled=known, n=4)
    assert len(figure.axes) == 1 + 4
    table = suspects(filt, n=4)
    titles = [ax.get_title() for ax in figure.axes[1:]]
    for title, (row_id, row) in zip(titles, table.iterrows()):
        assert title.startswith(f"id {row_id} · #{row['rank']}\n")
        assert f"{row['label']} → {row['predicted']}" in title
    # not images: one bar per suspect, most suspicious on top
    figure = plot_suspects(filt, X[:, :5], n=4)
    assert len(figure.axes) == 2
    bars = figure.axes[1]
    labels = [tick.get_text() for tick in bars.get_yticklabels()]
    assert labels[0].startswith(f"{table.index[0]}: ")
    assert [p.get_width() for p in bars.patches] == pytest.approx(table["score"])
    # the table of find_label_issues works too
    issues = find_label_issues(LogisticRegression(), X, y, method="loss")
    assert len(plot_suspects(issues, X, n=3).axes) == 1 + 3
    matplotlib.pyplot.close("all")


def test_filter_pickles_without_its_training_rows():
    import pickle

    X, y, _ = _noisy_blobs()
    filt = MislabelFilter(estimator=LogisticRegression(), method="loss").fit(X, y)
    restored = pickle.loads(pickle.dumps(filt))
    assert not hasattr(restored, "_X_seen")
    pd.testing.assert_series_equal(restored.scores_, filt.scores_)


def test_plot_suspects_without_matplotlib(monkeypatch):
    X, y, _ = _noisy_blobs()
    filt = MislabelFilter(estimator=LogisticRegression(max_iter=500)).fit(X, y)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match="dataval\\[plot\\]"):
        plot_suspects(filt, X)
