"""sample_weight in fit, class_weight, and the stationarity check at fit."""

import inspect
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from reference import dense_influence
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_class_weight

import dataval
from dataval import ExactInfluence
from dataval.exceptions import ObjectiveWarning

TIGHT = dict(solver="newton-cholesky", tol=1e-12, max_iter=1000)


def _breast_cancer(n_train=200, n_test=20):
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    order = np.random.RandomState(0).permutation(len(y))
    test, train = order[:n_test], order[n_test : n_test + n_train]
    return X[train], y[train], X[test], y[test]


def _weights(n, seed=0):
    return np.random.RandomState(seed).uniform(0.2, 3.0, n)


def _sklearn_state(model):
    """Parameters and fitted arrays (the same objects, the same values)."""
    arrays = {k: v for k, v in vars(model).items() if isinstance(v, np.ndarray)}
    return (
        model.get_params(),
        {k: (id(v), v.copy()) for k, v in arrays.items()},
    )


def _assert_sklearn_unchanged(before, model):
    params, arrays = _sklearn_state(model)
    assert params == before[0]
    assert arrays.keys() == before[1].keys()
    for key, (identity, values) in before[1].items():
        assert arrays[key][0] == identity, key
        np.testing.assert_array_equal(arrays[key][1], values)


# --------------------------------------------------------- stationarity check
def test_weights_not_given_are_reported_with_the_figure():
    X, y, *_ = _breast_cancer()
    w = _weights(len(y))
    clf = LogisticRegression(C=0.5, **TIGHT).fit(X, y, sample_weight=w)
    before = _sklearn_state(clf)
    with pytest.warns(ObjectiveWarning, match=r"gradient is [0-9.e-]+ of") as record:
        ExactInfluence().fit(clf, X, y)
    message = str(record[0].message)
    assert "fit(model, X, y, sample_weight=w)" in message
    assert "max_iter" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error", ObjectiveWarning)
        ExactInfluence().fit(clf, X, y, sample_weight=w)
    _assert_sklearn_unchanged(before, clf)


def test_an_unconverged_model_is_reported():
    X, y, *_ = _breast_cancer()
    clf = LogisticRegression(max_iter=3).fit(X, y)
    before = _sklearn_state(clf)
    with pytest.warns(ObjectiveWarning, match="larger max_iter and a smaller tol"):
        ExactInfluence().fit(clf, X, y)
    _assert_sklearn_unchanged(before, clf)


def test_scikit_learn_defaults_do_not_warn():
    """Default tolerances converge far enough (benchmarks/stationarity.py)."""
    X, y, *_ = _breast_cancer()
    clf = LogisticRegression().fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ObjectiveWarning)
        ExactInfluence().fit(clf, X, y)


# ----------------------------------------------------------- sample_weight
@pytest.mark.parametrize(
    "sample_weight, match",
    [
        (np.ones(5), r"shape \(200,\)"),
        (-_weights(200), "non-negative"),
        (np.r_[np.nan, np.ones(199)], r"rows \(positions\) \[0\]"),
        (np.zeros(200), "zero for every row"),
        (np.array(["a"] * 200), "not numeric"),
    ],
)
def test_bad_sample_weight(sample_weight, match):
    X, y, *_ = _breast_cancer()
    clf = LogisticRegression(**TIGHT).fit(X, y)
    before = _sklearn_state(clf)
    with pytest.raises(ValueError, match=match):
        ExactInfluence().fit(clf, X, y, sample_weight=sample_weight)
    _assert_sklearn_unchanged(before, clf)


def _packed_bce(output, target):
    """Weighted BCE for the reference: target columns are (label, weight)."""
    losses = torch.nn.functional.binary_cross_entropy_with_logits(
        output[:, 0], target[:, 0], reduction="none"
    )
    return target[:, 1] * losses


@pytest.mark.parametrize("curvature", ["hessian", "ggn"])
def test_weighted_torch_model_matches_the_dense_reference(curvature):
    """Weights enter the curvature and the training gradients, not the test side."""
    torch.manual_seed(0)
    X, y, X_test, y_test = (torch.tensor(a) for a in _breast_cancer(60, 8))
    X, X_test = X[:, :5], X_test[:, :5]  # y: integer labels, binary cross-entropy
    module = torch.nn.Sequential(
        torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)
    ).double()
    w = torch.tensor(_weights(len(y)))
    state = {k: v.clone() for k, v in module.state_dict().items()}
    estimator = ExactInfluence(damping=0.1, curvature=curvature)
    scores = estimator.fit(module, X, y, sample_weight=w.numpy())
    scores = scores.score(X_test, y_test)
    expected = dense_influence(
        module,
        _packed_bce,
        X,
        torch.stack([y.double(), w], 1),
        X_test,
        torch.stack([y_test.double(), torch.ones(len(y_test), dtype=w.dtype)], 1),
        damping=0.1,
        curvature=curvature,
    )
    np.testing.assert_allclose(
        scores.to_numpy(), expected.numpy(), rtol=1e-5, atol=1e-9
    )
    # self-influence: removing row j changes its own (unweighted) loss
    diagonal = dense_influence(
        module,
        _packed_bce,
        X,
        torch.stack([y.double(), w], 1),
        X,
        torch.stack([y.double(), torch.ones(len(y), dtype=w.dtype)], 1),
        damping=0.1,
        curvature=curvature,
    ).diagonal()
    np.testing.assert_allclose(
        estimator.self_influence().to_numpy(), diagonal.numpy(), rtol=1e-5, atol=1e-9
    )
    for key, value in module.state_dict().items():
        assert torch.equal(value, state[key])


def test_weighted_logistic_regression_agrees_with_leave_one_out():
    """Removing row j of a weighted fit removes w_j loss_j: refit without it.

    Measured: Pearson 0.999 with the weights, 0.935 without (the fixture of
    test_metrics' unweighted check, 509 rows).
    """
    X, y, X_test, y_test = _breast_cancer(n_train=509, n_test=60)
    w = _weights(len(y))
    clf = LogisticRegression(C=0.1, **TIGHT).fit(X, y, sample_weight=w)
    before = _sklearn_state(clf)
    rows = np.random.RandomState(1).choice(len(y), size=25, replace=False)

    def test_losses(keep):
        refit = clone(clf).fit(X[keep], y[keep], sample_weight=w[keep])
        return -np.log(refit.predict_proba(X_test)[np.arange(len(y_test)), y_test])

    everything = np.arange(len(y))
    full = test_losses(everything)
    measured = np.stack(
        [test_losses(np.delete(everything, j)) - full for j in rows], 1
    ).ravel()
    weighted = ExactInfluence(damping=0).fit(clf, X, y, sample_weight=w)
    unweighted = ExactInfluence(damping=0)
    with pytest.warns(ObjectiveWarning):
        unweighted.fit(clf, X, y)
    pearson = {}
    for name, estimator in [("weighted", weighted), ("unweighted", unweighted)]:
        predicted = estimator.score(X_test, y_test).iloc[:, rows].to_numpy().ravel()
        pearson[name] = np.corrcoef(predicted, measured)[0, 1]
    assert pearson["weighted"] >= 0.99
    assert pearson["weighted"] > pearson["unweighted"] + 0.02
    _assert_sklearn_unchanged(before, clf)


@pytest.mark.parametrize("class_weight", [{0: 1.0, 1: 3.0}, "balanced"])
def test_class_weight_is_rebuilt_as_row_weights(class_weight):
    X, y, X_test, y_test = _breast_cancer(n_train=120)
    w = _weights(len(y))
    clf = LogisticRegression(class_weight=class_weight, **TIGHT)
    clf.fit(X, y, sample_weight=w)
    before = _sklearn_state(clf)
    per_class = (
        np.array([class_weight[0], class_weight[1]])
        if isinstance(class_weight, dict)
        else None
    )
    if per_class is None:
        # scikit-learn's "balanced": n / (2 n_class), counting the sample weights
        # since compute_class_weight takes them (not in scikit-learn 1.6)
        takes = "sample_weight" in inspect.signature(compute_class_weight).parameters
        counts = w if takes else np.ones_like(w)
        per_class = np.array(
            [counts.sum() / (2 * counts[y == c].sum()) for c in (0, 1)]
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error", ObjectiveWarning)
        got = ExactInfluence().fit(clf, X, y, sample_weight=w)
    # scikit-learn's documented equivalence: the same model without class_weight
    weighted = w * per_class[y]
    same = LogisticRegression(**TIGHT).fit(X, y, sample_weight=weighted)
    np.testing.assert_allclose(same.coef_, clf.coef_, rtol=1e-6)
    expected = ExactInfluence().fit(same, X, y, sample_weight=weighted)
    pd.testing.assert_frame_equal(
        got.score(X_test, y_test), expected.score(X_test, y_test), rtol=1e-6
    )
    _assert_sklearn_unchanged(before, clf)


# ------------------------------------------- every estimator takes weights
def _linear_data():
    rng = np.random.RandomState(0)
    X = rng.randn(40, 3)
    y = X @ [1.0, -2.0, 0.5] + 0.3 * rng.randn(40)
    return X, y, X[:6] + 0.1, y[:6]


@pytest.mark.filterwarnings("ignore:depth=5 is short")
def test_every_estimator_weights_the_training_rows(entry):
    """A weight-0 row has no influence; weights change the scores.

    Least squares on one output has the same Kronecker, projected and
    low-rank curvature as the exact one, so the estimators with an exact
    solve must match the weighted ExactInfluence closely (LiSSA runs only 5
    steps here, Source unrolls training).
    """
    X, y, X_test, y_test = _linear_data()
    w = _weights(len(y))
    w[[3, 17]] = 0.0
    model = LinearRegression().fit(X, y, sample_weight=w)
    before = _sklearn_state(model)
    wanted = dict(
        projection_dim=None,
        factor_dim=None,
        fisher="ggn",
        damping=0.05,
        max_iter=200,
        rank=4,
    )
    cls = entry.cls
    valid = cls().get_params()
    params = {k: v for k, v in wanted.items() if k in valid}

    def make():
        return entry.make().set_params(**params)

    estimator = make().fit(model, X, y, sample_weight=w)
    scores = estimator.score(X_test, y_test)
    assert (scores.iloc[:, [3, 17]] == 0).all().all()
    assert (estimator.self_influence().iloc[[3, 17]] == 0).all()
    unweighted = make()
    with pytest.warns(ObjectiveWarning):
        unweighted.fit(model, X, y)
    reference = ExactInfluence(damping=0.05, curvature="ggn")
    reference = reference.fit(model, X, y, sample_weight=w).score(X_test, y_test)
    if cls is dataval.TracIn:
        # no curvature: each training gradient scaled by its weight
        expected = unweighted.score(X_test, y_test) * w
        np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-7)
    elif cls not in (dataval.SourceInfluence, dataval.LiSSAInfluence):
        np.testing.assert_allclose(scores, reference, rtol=1e-3, atol=1e-5)
    assert not np.allclose(scores, unweighted.score(X_test, y_test), rtol=1e-2)
    _assert_sklearn_unchanged(before, model)


def test_save_load_checks_the_weights(tmp_path):
    X, y, X_test, y_test = _linear_data()
    w = _weights(len(y))
    model = LinearRegression().fit(X, y, sample_weight=w)
    estimator = dataval.KFACInfluence().fit(model, X, y, sample_weight=w)
    dataval.save(estimator, tmp_path / "e.pt")
    restored = dataval.load(tmp_path / "e.pt", model, X, y, sample_weight=w)
    pd.testing.assert_frame_equal(
        restored.score(X_test, y_test), estimator.score(X_test, y_test)
    )
    with pytest.raises(ValueError, match="differ from the training data"):
        with pytest.warns(ObjectiveWarning):
            dataval.load(tmp_path / "e.pt", model, X, y)
