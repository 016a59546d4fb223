"""Test cases shared by the CG, LiSSA and Arnoldi tests: tiny models as data.

Each case builds a trained model and its data; ``damping`` keeps
``H + damping I`` positive definite (the smallest Hessian eigenvalue of every
case is above ``-damping``).
"""

import numpy as np
import torch
from sklearn.datasets import load_iris
from sklearn.neural_network import MLPClassifier

from dataval import ExactInfluence


def _torch_mlp():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)
    )
    X, y = torch.randn(60, 4), torch.randint(0, 3, (60,))
    optimizer = torch.optim.LBFGS(net.parameters(), max_iter=15)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(X), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return net, X, y


def _sklearn_mlp():
    X, y = load_iris(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    clf = MLPClassifier(
        hidden_layer_sizes=(5,),
        alpha=0.1,
        solver="lbfgs",
        max_iter=2000,
        random_state=0,
    )
    return clf.fit(X, y), X, y


CASES = [
    {"id": "torch-mlp", "build": _torch_mlp, "damping": 0.1},
    {"id": "sklearn-mlp", "build": _sklearn_mlp, "damping": 0.01},
]
CASE_IDS = [case["id"] for case in CASES]
_BUILT = {}


def build(case):
    """``(model, X, y)`` of a case, built once per session."""
    if case["id"] not in _BUILT:
        _BUILT[case["id"]] = case["build"]()
    return _BUILT[case["id"]]


def exact_scores(case, damping=None, curvature="auto", n_test=5):
    """Dense float64 reference scores of the first ``n_test`` rows."""
    model, X, y = build(case)
    exact = ExactInfluence(
        damping=case["damping"] if damping is None else damping,
        curvature=curvature,
        dtype="float64",
    )
    return exact.fit(model, X, y).score(X[:n_test], y[:n_test]).to_numpy()


def fit_scores(estimator, case, n_test=5):
    model, X, y = build(case)
    return estimator.fit(model, X, y).score(X[:n_test], y[:n_test]).to_numpy()


def mean_row_pearson(scores, reference):
    return np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(scores, reference)])


def assert_close(scores, reference, rtol):
    """Close relative to the largest reference score."""
    scores, reference = np.asarray(scores), np.asarray(reference)
    np.testing.assert_allclose(scores, reference, atol=rtol * np.abs(reference).max())
