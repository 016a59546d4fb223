"""measurement=: the query side's f against dense float64 references.

For every measurement f, ``influence[i, j] = (1/n) grad f_i^T (H + damping I)^{-1}
g_j`` with ``g_j`` the training loss gradient; the references below compute it
with torch.autograd on tiny float64 models, and f independently of dataval.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from kfac_cases import build, case, kronecker_curvature, to_layer_order
from reference import dense_curvature, per_row_gradients
from sklearn.utils._param_validation import InvalidParameterError

from dataval import (
    ArnoldiInfluence,
    CGInfluence,
    EKFACInfluence,
    ExactInfluence,
    KFACInfluence,
    LiSSAInfluence,
    LoGraInfluence,
    SourceInfluence,
    TracIn,
    TRAKInfluence,
)
from dataval.text import score_candidates

DAMPING = 0.1


def _loss(out, y):
    return F.cross_entropy(out, y, reduction="none")


def _margin(out, y):
    # the target logit minus the best other one, via the two largest logits
    top = out.topk(2, dim=1)
    best_other = torch.where(top.indices[:, 0] == y, top.values[:, 1], top.values[:, 0])
    return out[torch.arange(len(y)), y] - best_other


def _log_prob(out, y):
    log_p = out - out.logsumexp(1, keepdim=True)
    return log_p[torch.arange(len(y)), y]


def product_of_logits(out, y):
    """A user's measurement: any differentiable f(output, target) -> (batch,)."""
    return out[:, 0] * out[:, 1] + y


MEASUREMENTS = [
    ("loss", _loss),
    ("margin", _margin),
    ("log_prob", _log_prob),
    (product_of_logits, product_of_logits),
]
MEASUREMENT_IDS = ["loss", "margin", "log_prob", "callable"]

# estimators whose (H + damping I) is the dense Gauss-Newton matrix
DENSE_GGN = [
    lambda m: ExactInfluence(damping=DAMPING, measurement=m, curvature="ggn"),
    lambda m: CGInfluence(
        damping=DAMPING, measurement=m, curvature="ggn", tol=1e-12, max_iter=500
    ),
    lambda m: TRAKInfluence(projection_dim=None, damping=DAMPING, measurement=m),
]


def _problem():
    module, X, y = build(case("mlp"), n=12)
    return module, X, y, X[:3], y[:3]


def _check_outputs(est, X_test, y_test, expected):
    """score, value and top_k of a fitted estimator against expected (n_test, n)."""
    np.testing.assert_allclose(
        est.score(X_test, y_test).to_numpy(), expected, rtol=1e-4, atol=1e-7
    )
    np.testing.assert_allclose(
        est.value(X_test, y_test).to_numpy(), expected.mean(0), rtol=1e-4, atol=1e-7
    )
    top = est.top_k(X_test, y_test, k=3, kind="harmful")
    np.testing.assert_allclose(
        top["influence"].to_numpy(),
        np.sort(expected, 1)[:, :3].ravel(),
        rtol=1e-4,
        atol=1e-7,
    )


@pytest.mark.parametrize("make", DENSE_GGN, ids=["exact", "cg", "trak"])
@pytest.mark.parametrize("measurement, f", MEASUREMENTS, ids=MEASUREMENT_IDS)
def test_dense_estimators_match_the_dense_reference(make, measurement, f):
    module, X, y, X_test, y_test = _problem()
    H = dense_curvature(module, _loss, X, y, "ggn")
    G_train = per_row_gradients(module, _loss, X, y)
    G_test = per_row_gradients(module, f, X_test, y_test)
    damped = H + DAMPING * torch.eye(len(H), dtype=H.dtype)
    expected = (G_test @ torch.linalg.solve(damped, G_train.T) / len(X)).numpy()
    est = make(measurement).set_params(dtype="float64").fit(module, X, y)
    _check_outputs(est, X_test, y_test, expected)


@pytest.mark.parametrize("estimator", [KFACInfluence, EKFACInfluence])
@pytest.mark.parametrize("measurement, f", MEASUREMENTS, ids=MEASUREMENT_IDS)
def test_kronecker_estimators_match_their_dense_blocks(estimator, measurement, f):
    module, X, y, X_test, y_test = _problem()
    est = estimator(
        damping=DAMPING, measurement=measurement, fisher="ggn", dtype="float64"
    ).fit(module, X, y)
    fm, layers = est.model_, est._layer_list
    G_train = to_layer_order(fm, layers, per_row_gradients(module, _loss, X, y))
    G_test = to_layer_order(fm, layers, per_row_gradients(module, f, X_test, y_test))
    C = kronecker_curvature(est)
    expected = (G_test @ torch.linalg.solve(C, G_train.T) / len(X)).numpy()
    _check_outputs(est, X_test, y_test, expected)
    # a query_rank reaching the gradients' rank changes nothing
    est.set_params(query_rank=max(layer.d_in for layer in layers))
    np.testing.assert_allclose(
        est.score(X_test, y_test).to_numpy(), expected, rtol=1e-4, atol=1e-7
    )


@pytest.mark.parametrize("measurement, f", MEASUREMENTS, ids=MEASUREMENT_IDS)
def test_tracin_sums_measurement_and_loss_gradient_products(measurement, f):
    module, X, y, X_test, y_test = _problem()
    states, rates = [], [0.5, 0.2]
    optimizer = torch.optim.SGD(module.parameters(), lr=0.3)
    for _ in rates:
        states.append({k: v.clone() for k, v in module.state_dict().items()})
        optimizer.zero_grad()
        F.cross_entropy(module(X), y).backward()
        optimizer.step()
    expected = 0
    for state, rate in zip(states, rates):
        module.load_state_dict(state)
        G_train = per_row_gradients(module, _loss, X, y)
        expected = expected + rate * per_row_gradients(module, f, X_test, y_test) @ (
            G_train.T
        )
    est = TracIn(
        checkpoints=states, learning_rates=rates, measurement=measurement
    ).set_params(dtype="float64")
    _check_outputs(est.fit(module, X, y), X_test, y_test, expected.numpy())


def test_binary_sigmoid_margin_is_the_signed_logit():
    torch.manual_seed(0)
    module = torch.nn.Linear(3, 1).double()
    X = torch.randn(12, 3, dtype=torch.float64)
    y = (X[:, 0] > 0).long()

    def loss(out, target):
        return F.binary_cross_entropy_with_logits(
            out[:, 0], target.double(), reduction="none"
        )

    def margin(out, target):
        return (2 * target - 1) * out[:, 0]

    H = dense_curvature(module, loss, X, y, "ggn")
    G_train = per_row_gradients(module, loss, X, y)
    damped = H + DAMPING * torch.eye(len(H), dtype=H.dtype)
    for measurement, f in [("margin", margin), ("log_prob", lambda o, t: -loss(o, t))]:
        G_test = per_row_gradients(module, f, X[:3], y[:3])
        expected = (G_test @ torch.linalg.solve(damped, G_train.T) / len(X)).numpy()
        est = ExactInfluence(
            damping=DAMPING, measurement=measurement, curvature="ggn", dtype="float64"
        ).fit(module, X, y)
        _check_outputs(est, X[:3], y[:3], expected)


ALL_ESTIMATORS = [
    ExactInfluence(curvature="ggn"),
    CGInfluence(curvature="ggn"),
    LiSSAInfluence(damping=0.1, curvature="ggn", depth=60, random_state=0),
    ArnoldiInfluence(rank=10, curvature="ggn", random_state=0),
    KFACInfluence(random_state=0),
    EKFACInfluence(random_state=0),
    TracIn(),
    TRAKInfluence(projection_dim=16, random_state=0),
    LoGraInfluence(factor_dim=3, random_state=0),
    SourceInfluence(random_state=0),
]


@pytest.mark.parametrize(
    "est", ALL_ESTIMATORS, ids=[type(e).__name__ for e in ALL_ESTIMATORS]
)
def test_log_prob_is_minus_the_cross_entropy_on_every_path(est):
    # f = log p(y) = -loss: every query path must flip the sign exactly, and
    # switching the measurement needs no refit; self-influence keeps the loss
    module, X, y, X_test, y_test = _problem()
    est = est.set_params(dtype="float64").fit(module, X, y)
    self_influence = est.self_influence()
    on_loss = est.score(X_test, y_test)
    value = est.value(X_test, y_test)
    candidates = [[0, 4, 5], [1, 2], [7]]
    by_pair = score_candidates(est, X_test, y_test, candidates)
    est.set_params(measurement="log_prob")
    np.testing.assert_allclose(est.score(X_test, y_test), -on_loss, rtol=1e-9)
    np.testing.assert_allclose(est.value(X_test, y_test), -value, rtol=1e-9)
    flipped = score_candidates(est, X_test, y_test, candidates)
    np.testing.assert_allclose(
        np.sort(flipped["influence"]), np.sort(-by_pair["influence"]), rtol=1e-9
    )
    top = est.top_k(X_test, y_test, k=2, kind="harmful")
    np.testing.assert_allclose(
        top["influence"], np.sort(-on_loss.to_numpy(), 1)[:, :2].ravel(), rtol=1e-9
    )
    np.testing.assert_allclose(est.self_influence(), self_influence, rtol=1e-12)


def test_bad_measurements_are_refused_at_fit():
    module, X, y, _, _ = _problem()
    with pytest.raises(InvalidParameterError, match="measurement"):
        ExactInfluence(measurement="accuracy").fit(module, X, y)
    with pytest.raises(ValueError, match="one value per row"):
        ExactInfluence(measurement=lambda out, t: out.sum()).fit(module, X, y)
    regressor = torch.nn.Linear(4, 2).double()
    with pytest.raises(ValueError, match="measurement='margin' needs a classification"):
        ExactInfluence(measurement="margin").fit(regressor, X, torch.randn(12, 2))
