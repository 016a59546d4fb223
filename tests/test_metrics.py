"""dataval.metrics: detection curves, leave-one-out ground truth, LDS."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, make_regression
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import roc_auc_score
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skorch import NeuralNetClassifier

from dataval import ExactInfluence
from dataval.metrics import (
    detection_curve,
    linear_datamodeling_score,
    loo_influence,
    mislabel_detection_auc,
)

# ----------------------------------------------------------------- detection

DETECTION_CASES = [
    dict(
        id="perfect",
        scores=[4.0, 3.0, 2.0, 1.0],
        flags=[True, True, False, False],
        inspected=[0, 0.25, 0.5, 0.75, 1],
        found=[0, 0.5, 1, 1, 1],
        auc=1.0,
    ),
    dict(
        id="worst",
        scores=[1.0, 2.0, 3.0, 4.0],
        flags=[True, False, False, False],
        inspected=[0, 0.25, 0.5, 0.75, 1],
        found=[0, 0, 0, 0, 1],
        auc=0.0,
    ),
    dict(
        id="ties-inspected-together",
        scores=[1.0, 1.0, 1.0, 0.0],
        flags=[True, False, False, True],
        inspected=[0, 0.75, 1],
        found=[0, 0.5, 1],
        auc=0.25,
    ),
]


@pytest.mark.parametrize("case", DETECTION_CASES, ids=lambda c: c["id"])
def test_detection_curve_on_known_rankings(case):
    curve = detection_curve(case["scores"], case["flags"])
    assert curve.columns.tolist() == [
        "fraction_inspected",
        "fraction_found",
        "threshold",
    ]
    np.testing.assert_allclose(curve["fraction_inspected"], case["inspected"])
    np.testing.assert_allclose(curve["fraction_found"], case["found"])
    assert curve["threshold"].iloc[0] == np.inf
    assert mislabel_detection_auc(case["scores"], case["flags"]) == case["auc"]


def test_detection_matches_sklearn_auc_and_random_ranking_follows_diagonal():
    rng = np.random.RandomState(0)
    flags = rng.rand(2000) < 0.1
    scores = rng.rand(2000) + flags * rng.rand(2000)
    assert mislabel_detection_auc(scores, flags) == pytest.approx(
        roc_auc_score(flags, scores)
    )
    curve = detection_curve(rng.rand(2000), flags)
    gap = (curve["fraction_found"] - curve["fraction_inspected"]).abs().max()
    assert gap < 0.15


def test_detection_aligns_series_on_their_index():
    scores = pd.Series([0.9, 0.1, 0.8], index=["a", "b", "c"])
    flags = pd.Series([False, True, True], index=["c", "a", "b"])
    assert mislabel_detection_auc(scores, flags) == 0.5
    curve = detection_curve(scores, flags)
    assert curve["fraction_found"].tolist() == [0, 0.5, 0.5, 1]


@pytest.mark.parametrize(
    "scores, flags, message",
    [
        ([0.1, 0.2], [True], "scores has 2 rows but is_mislabeled has 1"),
        ([0.1, np.nan], [True, False], "NaN or infinity"),
        ([0.1, 0.2], [False, False], "marks no row as mislabeled"),
        ([0.1, 0.2], [0, 2], "must be boolean"),
        ([[0.1, 0.2]], [True], "must be 1-D"),
        ([], [], "empty"),
        (
            pd.DataFrame({"a": [0.1], "b": [0.2]}),
            [True],
            "got a DataFrame with 2 columns",
        ),
        (
            pd.Series([0.1, 0.2], index=[0, 1]),
            pd.Series([True, False], index=[0, 5]),
            "no entry for 1 rows",
        ),
    ],
)
def test_detection_bad_input(scores, flags, message):
    with pytest.raises(ValueError, match=message):
        detection_curve(scores, flags)
    with pytest.raises(ValueError, match=message):
        mislabel_detection_auc(scores, flags)


def test_auc_needs_correct_rows_too():
    with pytest.raises(ValueError, match="every row as mislabeled"):
        mislabel_detection_auc([0.1, 0.2], [True, True])


# ------------------------------------------------------- retraining ground truth


def _breast_cancer(n_train=509, n_test=60):
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    order = np.random.RandomState(0).permutation(len(y))
    test, train = order[:n_test], order[n_test : n_test + n_train]
    return X[train], y[train], X[test], y[test]


def _logistic(C=0.1):
    return LogisticRegression(C=C, solver="newton-cholesky", tol=1e-12, max_iter=1000)


def _logistic_case():
    X, y, X_test, y_test = _breast_cancer(n_train=80, n_test=7)

    def losses(keep):
        proba = _logistic().fit(X[keep], y[keep]).predict_proba(X_test)
        return -np.log(proba[np.arange(len(y_test)), y_test])

    return dict(model=_logistic(), data=(X, y, X_test, y_test), losses=losses)


def _pipeline_case():
    X, y = make_regression(n_samples=50, n_features=4, noise=5.0, random_state=0)
    X = pd.DataFrame(X, index=[f"r{i}" for i in range(50)])
    y = pd.Series(y, index=X.index)
    X, y, X_test, y_test = X.iloc[8:], y.iloc[8:], X.iloc[:8], y.iloc[:8]
    # the scaler is fitted once on all rows and held fixed, as the estimators do
    scaler = StandardScaler().fit(X)

    def losses(keep):
        ridge = Ridge(alpha=3.0).fit(scaler.transform(X.iloc[keep]), y.iloc[keep])
        return (ridge.predict(scaler.transform(X_test)) - y_test.to_numpy()) ** 2

    model = make_pipeline(StandardScaler(), Ridge(alpha=3.0))
    return dict(model=model, data=(X, y, X_test, y_test), losses=losses)


class _TinyNet(torch.nn.Module):
    def __init__(self, hidden=6):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(5, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 3)
        )

    def forward(self, X):
        return self.layers(X)


def _skorch_net(module=_TinyNet):
    return NeuralNetClassifier(
        module,
        criterion=torch.nn.CrossEntropyLoss,
        max_epochs=4,
        batch_size=16,
        lr=0.1,
        train_split=None,
        verbose=0,
    )


def _skorch_case():
    rng = np.random.RandomState(0)
    X = rng.randn(60, 5).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 1)
    X, y, X_test, y_test = X[6:], y[6:], X[:6], y[:6]

    def losses(keep):
        torch.manual_seed(7)
        net = clone(_skorch_net()).fit(X[keep], y[keep])
        module = copy.deepcopy(net.module_).double()
        with torch.no_grad():
            logits = module(torch.as_tensor(X_test, dtype=torch.float64))
        return F.cross_entropy(
            logits, torch.as_tensor(y_test), reduction="none"
        ).numpy()

    return dict(model=_skorch_net(), data=(X, y, X_test, y_test), losses=losses)


RETRAIN_CASES = [
    dict(id="logistic", make=_logistic_case, indices=[0, 5, 79]),
    dict(id="pipeline-ridge-frames", make=_pipeline_case, indices=[3, 0, 41]),
    dict(id="skorch-seeded", make=_skorch_case, indices=[1, 30]),
]


@pytest.mark.parametrize("case", RETRAIN_CASES, ids=lambda c: c["id"])
def test_loo_influence_matches_a_handwritten_retraining_loop(case):
    spec = case["make"]()
    X, y, X_test, y_test = spec["data"]
    loo = loo_influence(
        spec["model"], X, y, X_test, y_test, indices=case["indices"], random_state=7
    )
    everything = np.arange(len(y))
    full = spec["losses"](everything)
    expected = np.stack(
        [spec["losses"](np.delete(everything, j)) - full for j in case["indices"]], 1
    )
    np.testing.assert_allclose(loo.to_numpy(), expected, rtol=1e-9, atol=1e-12)
    train_labels = X.index if hasattr(X, "index") else pd.RangeIndex(len(y))
    test_labels = (
        X_test.index if hasattr(X_test, "index") else pd.RangeIndex(len(y_test))
    )
    assert loo.columns.tolist() == train_labels[case["indices"]].tolist()
    assert loo.index.tolist() == test_labels.tolist()
    assert (loo.index.name, loo.columns.name) == ("test", "train")


def test_exact_influence_agrees_with_leave_one_out_on_logistic_regression():
    """Issue 3's acceptance check: 40 rows left out, retrained to tol=1e-12."""
    X, y, X_test, y_test = _breast_cancer()
    clf = _logistic().fit(X, y)
    rows = np.random.RandomState(1).choice(len(y), size=40, replace=False)
    predicted = ExactInfluence(damping=0).fit(clf, X, y).score(X_test, y_test)
    predicted = predicted.iloc[:, rows].to_numpy().ravel()
    measured = loo_influence(clf, X, y, X_test, y_test, indices=rows).to_numpy().ravel()
    pearson = np.corrcoef(predicted, measured)[0, 1]
    slope = (predicted @ measured) / (measured @ measured)
    sign = np.mean(np.sign(predicted) == np.sign(measured))
    print(f"pearson={pearson:.5f} slope={slope:.4f} sign agreement={sign:.4f}")
    assert pearson >= 0.99
    assert abs(slope - 1) <= 0.1
    assert sign >= 0.99


def test_warm_start_changes_time_not_result():
    X, y, X_test, y_test = _breast_cancer(n_train=120, n_test=5)
    cold = loo_influence(_logistic(), X, y, X_test, y_test, indices=range(4))
    warm = loo_influence(
        _logistic(), X, y, X_test, y_test, indices=range(4), warm_start=True
    )
    np.testing.assert_allclose(warm, cold, rtol=1e-6, atol=1e-10)


def test_lds_of_exact_influence_on_logistic_regression():
    X, y, X_test, y_test = _breast_cancer(n_train=300, n_test=40)
    clf = _logistic().fit(X, y)
    scores = ExactInfluence().fit(clf, X, y).score(X_test, y_test)
    lds, per_test = linear_datamodeling_score(
        scores,
        clf,
        X,
        y,
        X_test,
        y_test,
        n_subsets=30,
        random_state=0,
        return_per_test=True,
    )
    noise = np.random.RandomState(0).randn(*scores.shape)
    chance = linear_datamodeling_score(
        noise, clf, X, y, X_test, y_test, n_subsets=30, random_state=0
    )
    print(f"LDS ExactInfluence={lds:.4f} random scores={chance:.4f}")
    assert lds > 0.8
    assert abs(chance) < 0.2
    assert per_test.index.equals(pd.RangeIndex(40, name="test"))
    assert lds == pytest.approx(per_test.mean())


def test_retraining_leaves_the_model_and_torch_seed_alone():
    X, y, X_test, y_test = _skorch_case()["data"]
    # a module instance: skorch trains it in place, so the fitted net's
    # ``module`` holds trained weights that the refits must not start from
    net = _skorch_net(_TinyNet())
    torch.manual_seed(123)
    net.fit(X, y)
    before = {k: v.clone() for k, v in net.module_.state_dict().items()}
    state = torch.get_rng_state()
    loo = loo_influence(net, X, y, X_test, y_test, indices=[0], random_state=0)
    assert torch.equal(torch.get_rng_state(), state)
    for name, value in net.module_.state_dict().items():
        assert torch.equal(value, before[name])
    fresh = _skorch_net(_TinyNet())
    expected = loo_influence(fresh, X, y, X_test, y_test, indices=[0], random_state=0)
    np.testing.assert_allclose(loo, expected)


def _small_logistic_data():
    return _breast_cancer(n_train=40, n_test=3)


@pytest.mark.parametrize(
    "model, kwargs, error, message",
    [
        (_logistic(), dict(indices=[0, 40]), ValueError, "between 0 and 39"),
        (_logistic(), dict(indices=[1, 1]), ValueError, "repeated"),
        (_logistic(), dict(indices=[0.5]), ValueError, "integer row positions"),
        (_logistic(), dict(n_jobs="all"), ValueError, "'n_jobs' parameter"),
        (torch.nn.Linear(30, 2), {}, TypeError, "Wrap it in a skorch"),
        (RandomForestClassifier(), {}, TypeError, "Cannot retrain a Random"),
        (MLPClassifier(), dict(warm_start=True), ValueError, "only allowed for Log"),
    ],
)
def test_loo_influence_bad_input(model, kwargs, error, message):
    X, y, X_test, y_test = _small_logistic_data()
    with pytest.raises(error, match=message):
        loo_influence(model, X, y, X_test, y_test, **kwargs)


@pytest.mark.parametrize(
    "scores_shape, kwargs, message",
    [
        ((3, 39), {}, r"scores has shape \(3, 39\), expected"),
        ((3, 40), dict(n_subsets=2), "'n_subsets' parameter"),
        ((3, 40), dict(frac=1.0), "'frac' parameter"),
        ((3, 40), dict(frac=0.001), "keeps 0 of 40"),
    ],
)
def test_lds_bad_input(scores_shape, kwargs, message):
    X, y, X_test, y_test = _small_logistic_data()
    with pytest.raises(ValueError, match=message):
        linear_datamodeling_score(
            np.zeros(scores_shape), _logistic(), X, y, X_test, y_test, **kwargs
        )


def test_refit_missing_a_class_is_an_error():
    X, y, X_test, y_test = _small_logistic_data()
    y = y.copy()
    y[0] = 2
    with pytest.raises(ValueError, match="saw no example of class"):
        loo_influence(_logistic(), X, y, X_test, y_test, indices=[0])
