"""ExactInfluence against an independent dense float64 computation."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference import dense_curvature, dense_influence

from dataval import ExactInfluence
from dataval.exceptions import NotPositiveDefiniteWarning


def _cross_entropy(out, y):
    return F.cross_entropy(out, y, reduction="none")


def _squared_error(out, y):
    return ((out - y.reshape(out.shape)) ** 2).sum(1)


def _classification(seed=0):
    torch.manual_seed(seed)
    X = torch.randn(30, 4, dtype=torch.float64)
    y = (X[:, 0] + X[:, 1] > 0).long() + (X[:, 2] > 1).long()
    module = torch.nn.Sequential(
        torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)
    ).double()
    return module, _cross_entropy, X[:24], y[:24], X[24:], y[24:]


def _regression(seed=0):
    torch.manual_seed(seed)
    X = torch.randn(25, 3, dtype=torch.float64)
    y = torch.sin(X[:, 0]) + X[:, 1] ** 2
    module = torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.Softplus(), torch.nn.Linear(4, 1)
    ).double()
    return module, _squared_error, X[:20], y[:20], X[20:], y[20:]


CASES = [
    dict(
        id="mlp-classifier-hessian",
        data=_classification,
        curvature="hessian",
        damping=0.5,
    ),
    dict(id="mlp-classifier-ggn", data=_classification, curvature="ggn", damping=1e-2),
    dict(
        id="mlp-regressor-hessian", data=_regression, curvature="hessian", damping=2.0
    ),
    dict(id="mlp-regressor-ggn", data=_regression, curvature="ggn", damping=1e-2),
]


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_exact_matches_dense_reference(case):
    module, loss_fn, X, y, X_test, y_test = case["data"]()
    expected = dense_influence(
        module, loss_fn, X, y, X_test, y_test, case["damping"], case["curvature"]
    ).numpy()
    estimator = ExactInfluence(damping=case["damping"], curvature=case["curvature"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotPositiveDefiniteWarning)
        estimator.fit(module, X, y)
    scores = estimator.score(X_test, y_test).to_numpy()
    # float32 frame: relative to the largest score, 1e-6 is float32 resolution
    assert np.abs(scores - expected).max() / np.abs(expected).max() < 1e-6


def test_eigenvalues_are_those_of_the_curvature():
    module, loss_fn, X, y, *_ = _classification()
    estimator = ExactInfluence(curvature="ggn").fit(module, X, y)
    expected = torch.linalg.eigvalsh(dense_curvature(module, loss_fn, X, y, "ggn"))
    assert torch.allclose(estimator.eigenvalues_, expected, atol=1e-10)


def test_negative_curvature_warns_and_names_the_cures():
    module, _, X, y, *_ = _classification()
    with pytest.warns(NotPositiveDefiniteWarning, match="damping.*curvature='ggn'"):
        ExactInfluence(damping=1e-6, curvature="hessian").fit(module, X, y)


def test_indefinite_curvature_is_solved_exactly():
    # H + damping I with negative eigenvalues: an L D L^T factor, not Cholesky
    module, loss_fn, X, y, X_test, y_test = _classification()
    H = dense_curvature(module, loss_fn, X, y, "hessian")
    smallest = float(torch.linalg.eigvalsh(H)[0])
    assert smallest < 0
    damping = -smallest / 2
    with pytest.warns(NotPositiveDefiniteWarning):
        estimator = ExactInfluence(damping=damping, curvature="hessian").fit(
            module, X, y
        )
    assert estimator._pivots is not None
    expected = dense_influence(
        module, loss_fn, X, y, X_test, y_test, damping, "hessian"
    ).numpy()
    scores = estimator.score(X_test, y_test).to_numpy()
    assert np.abs(scores - expected).max() / np.abs(expected).max() < 1e-6


def test_too_many_parameters_names_the_alternatives():
    module = torch.nn.Linear(100, 10)
    X, y = torch.randn(5, 100), torch.randint(0, 10, (5,))
    with pytest.raises(ValueError, match="CGInfluence.*EKFACInfluence"):
        ExactInfluence(max_params=500).fit(module, X, y)


def test_self_influence_is_the_diagonal():
    module, _, X, y, *_ = _classification()
    estimator = ExactInfluence(damping=0.5).fit(module, X, y)
    diagonal = np.diag(estimator.score(X, y).to_numpy())
    np.testing.assert_allclose(
        estimator.self_influence().to_numpy(), diagonal, rtol=1e-5
    )


def test_auto_curvature_is_the_hessian_only_for_a_linear_model():
    module, _, X, y, *_ = _classification()
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotPositiveDefiniteWarning)
        network = ExactInfluence(damping=1e-6).fit(module, X, y)
    assert network.curvature_ == "ggn"
    linear = ExactInfluence().fit(module[0], X, y % 2 + 3)
    assert linear.curvature_ == "hessian"
    ggn = ExactInfluence(curvature="ggn").fit(module[0], X, y % 2 + 3)
    # a linear model's Hessian is its Gauss-Newton matrix
    torch.testing.assert_close(linear.eigenvalues_, ggn.eigenvalues_)
