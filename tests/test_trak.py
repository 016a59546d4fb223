"""TRAKInfluence against a dense Gauss-Newton reference, and its projection."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference import dense_curvature, dense_influence, per_row_gradients
from sklearn.linear_model import LogisticRegression

from dataval import ExactInfluence, TRAKInfluence
from dataval._estimators.projection import random as _projection
from dataval._estimators.projection.random import RandomProjection


def _cross_entropy(out, y):
    return F.cross_entropy(out, y, reduction="none")


def _logistic(out, y):
    return F.binary_cross_entropy_with_logits(out[:, 0], y.double(), reduction="none")


def _squared_error(out, y):
    return ((out - y.reshape(out.shape)) ** 2).sum(1)


def _data(n_out, loss_fn, hidden=None, seed=0):
    torch.manual_seed(seed)
    X = torch.randn(30, 4, dtype=torch.float64)
    if loss_fn is _squared_error:
        y = torch.sin(X[:, 0]) + X[:, 1]
    else:
        y = (X[:, 0] + X[:, 1] > 0).long() + (n_out > 2) * (X[:, 2] > 1).long()
    layers = [torch.nn.Linear(4, n_out)]
    if hidden:
        layers = [
            torch.nn.Linear(4, hidden),
            torch.nn.Tanh(),
            torch.nn.Linear(hidden, n_out),
        ]
    module = torch.nn.Sequential(*layers).double()
    return module, loss_fn, X[:24], y[:24], X[24:], y[24:]


CASES = [
    dict(id="linear-softmax", data=lambda: _data(3, _cross_entropy)),
    dict(id="linear-logistic", data=lambda: _data(1, _logistic)),
    dict(id="linear-regression", data=lambda: _data(1, _squared_error)),
    dict(id="mlp-softmax", data=lambda: _data(3, _cross_entropy, hidden=5)),
    dict(id="mlp-regression", data=lambda: _data(1, _squared_error, hidden=4)),
]


def _relative_error(result, expected):
    return np.abs(result - expected).max() / np.abs(expected).max()


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_unprojected_equals_dense_gauss_newton_influence(case):
    module, loss_fn, X, y, X_test, y_test = case["data"]()
    expected = dense_influence(module, loss_fn, X, y, X_test, y_test, 1e-2, "ggn")
    trak = TRAKInfluence(
        projection_dim=None, damping=1e-2, loss=loss_fn, dtype="float64"
    )
    result = trak.fit(module, X, y).score(X_test, y_test).to_numpy()
    assert _relative_error(result, expected.numpy()) < 1e-6


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_projection_to_at_least_p_dimensions_keeps_the_influence(case):
    # (P g)^T (P A P^T)^+ (P g) = g^T A^{-1} g when P (d x p) has rank p
    module, loss_fn, X, y, X_test, y_test = case["data"]()
    expected = dense_influence(module, loss_fn, X, y, X_test, y_test, 1e-2, "ggn")
    p = sum(q.numel() for q in module.parameters())
    for dim in (p, 3 * p):
        trak = TRAKInfluence(
            projection_dim=dim, damping=1e-2, loss=loss_fn, dtype="float64"
        )
        result = trak.fit(module, X, y).score(X_test, y_test).to_numpy()
        assert _relative_error(result, expected.numpy()) < 1e-5


def test_sklearn_l2_term_is_projected_too(iris):
    X, y, X_test, y_test = iris
    clf = LogisticRegression(C=0.5, max_iter=1000).fit(X, y)
    expected = ExactInfluence(curvature="ggn", damping=0.0).fit(clf, X, y)
    trak = TRAKInfluence(
        projection_dim=45, damping=1e-9, dtype="float64", random_state=0
    )
    result = trak.fit(clf, X, y).score(X_test, y_test).to_numpy()
    assert _relative_error(result, expected.score(X_test, y_test).to_numpy()) < 1e-5


def test_curvature_is_the_gauss_newton_matrix_not_the_empirical_fisher():
    # linear softmax model: the GGN is the Hessian, and the Gram matrix of the
    # loss gradients (the empirical Fisher) is a different matrix
    module, loss_fn, X, y, X_test, y_test = _data(3, _cross_entropy)
    ggn = dense_curvature(module, loss_fn, X, y, "ggn")
    assert torch.allclose(ggn, dense_curvature(module, loss_fn, X, y), atol=1e-10)
    G = per_row_gradients(module, loss_fn, X, y)
    fisher = G.T @ G / len(X)
    assert torch.linalg.norm(fisher - ggn) > 0.1 * torch.linalg.norm(ggn)
    trak = TRAKInfluence(
        projection_dim=None, damping=1e-2, loss=loss_fn, dtype="float64"
    )
    trak.fit(module, X, y)
    damped = ggn + 1e-2 * torch.eye(len(ggn), dtype=ggn.dtype)
    assert torch.allclose(
        trak.eigenvalues_[0], torch.linalg.eigvalsh(damped), atol=1e-10
    )


def test_random_projection_is_seeded_blockwise_and_norm_preserving(monkeypatch):
    # blocks of 10 float64 columns of 64 rows, and no cache
    monkeypatch.setattr(_projection, "_BLOCK_SHARE", 1.0)
    monkeypatch.setattr(_projection, "_CACHE_SHARE", 0.0)
    monkeypatch.setattr(_projection, "working_bytes", lambda share: int(share * 5120))
    cpu, f64 = torch.device("cpu"), torch.float64
    P = RandomProjection(95, 64, 3, cpu, f64)
    blocks = list(P.blocks())
    assert len(blocks) == 10 and max(b.shape[1] for _, b in blocks) == 10
    full = torch.cat([b for _, b in blocks], 1)  # (64, 95), built only here
    assert torch.equal(full, torch.cat([b for _, b in P.blocks()], 1))
    X = torch.randn(5, 95, dtype=f64)
    assert torch.allclose(P(X), X @ full.T)
    weights = torch.rand(95, dtype=f64)
    assert torch.allclose(P.gram(weights), (full * weights) @ full.T)
    other = torch.cat([b for _, b in RandomProjection(95, 64, 4, cpu, f64).blocks()], 1)
    assert not torch.equal(full, other)
    # E[P^T P] = I: squared norms kept on average over many projections
    wide = RandomProjection(95, 4096, 0, cpu, f64)
    ratio = (wide(X) ** 2).sum(1) / (X**2).sum(1)
    assert torch.allclose(ratio, torch.ones(5, dtype=f64), atol=0.1)


def test_smaller_projection_still_ranks_like_the_exact_influence(trained_mlp):
    module, X, y, X_test, y_test = trained_mlp
    exact = ExactInfluence(curvature="ggn", damping=0.01).fit(module, X, y)
    expected = exact.score(X_test, y_test).to_numpy()
    trak = TRAKInfluence(projection_dim=40, damping=0.01, dtype="float64")
    result = trak.set_params(random_state=0).fit(module, X, y)
    assert trak.n_params_ == 51
    rows = [
        np.corrcoef(a, b)[0, 1]
        for a, b in zip(result.score(X_test, y_test).to_numpy(), expected)
    ]
    assert np.mean(rows) > 0.85


def test_ensemble_averages_the_checkpoints(trained_mlp):
    module, X, y, X_test, y_test = trained_mlp
    late = {k: v.clone() for k, v in module.state_dict().items()}
    early = {k: v * 0.5 for k, v in late.items()}
    params = dict(damping=1e-3, projection_dim=20, random_state=0, dtype="float64")
    both = TRAKInfluence(ensemble=[early, late], **params).fit(module, X, y)
    each = [
        TRAKInfluence(ensemble=[state], **params)
        .fit(module, X, y)
        .score(X_test, y_test)
        for state in (early, late)
    ]
    scores = both.score(X_test, y_test)
    np.testing.assert_allclose(scores, (each[0] + each[1]) / 2, rtol=1e-5, atol=1e-9)
    assert both.n_models_ == 2 and both.eigenvalues_.shape == (2, 20)
    layers = both.score(X_test, y_test, by_layer=True)
    assert list(layers.index.get_level_values("layer").unique()) == ["projected"]
    np.testing.assert_allclose(layers.droplevel("layer"), scores, rtol=1e-5, atol=1e-9)
