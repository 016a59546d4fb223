"""SourceInfluence: the closed form, its limit at convergence, and true unrolling."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from kfac_cases import CASES, build, kronecker_curvature, to_layer_order

from dataval import EKFACInfluence, ExactInfluence, SourceInfluence

SELECTED = [case for case in CASES if case["id"] in ("mlp", "conv", "sequence")]


def _sgd_states(module, X, y, n_states, lr=0.2, every=5):
    """States of ``module`` every ``every`` full-batch steps (it ends trained)."""
    loss_fn = F.mse_loss if y.is_floating_point() else F.cross_entropy
    optimizer = torch.optim.SGD(module.parameters(), lr=lr)
    states = []
    for _ in range(n_states):
        for _ in range(every):
            optimizer.zero_grad()
            loss_fn(module(X), y).backward()
            optimizer.step()
        states.append({k: v.clone() for k, v in module.state_dict().items()})
    return states


@pytest.mark.parametrize("case", SELECTED, ids=[c["id"] for c in SELECTED])
def test_one_segment_at_convergence_is_the_influence_function(case):
    module, X, y = build(case, n=10)
    params = dict(damping=0.1, fisher="ggn", dtype="float64", batch_size=4)
    expected = EKFACInfluence(**params).fit(module, X, y).score(X[:3], y[:3])
    source = SourceInfluence(learning_rates=1.0, steps=1e9, **params)
    result = source.fit(module, X, y).score(X[:3], y[:3])
    np.testing.assert_allclose(result, expected, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("case", SELECTED, ids=[c["id"] for c in SELECTED])
def test_scores_are_the_closed_form_with_dense_matrices(case):
    module, X, y = build(case, n=10)
    states = _sgd_states(module, X, y, n_states=3)
    rates, steps = np.array([0.3, 0.2, 0.1]), np.array([5, 20, 10])
    source = SourceInfluence(
        segments=states,
        learning_rates=list(rates),
        steps=list(steps),
        damping=0.05,
        fisher="ggn",
        dtype="float64",
        batch_size=4,
    ).fit(module, X, y)
    # dense per-segment S = exp(-eta K C) and R = C^{-1} (I - S), C damped;
    # full per-sample gradients at each checkpoint
    terms = []
    for segment, rate, n_steps in zip(source.segments_, rates, steps):
        C = kronecker_curvature(segment)
        S = torch.linalg.matrix_exp(-rate * n_steps * C)
        R = torch.linalg.solve(C, torch.eye(len(C), dtype=C.dtype) - S)
        fm = segment.model_
        G = to_layer_order(fm, segment._layer_list, fm.per_sample_grads(X, y))
        terms.append((S, R, G))
    u = terms[-1][2][:3]  # test gradients at the final checkpoint
    expected = 0
    for S, R, G in reversed(terms):
        expected = expected + u @ R @ G.T / len(X)
        u = u @ S
    np.testing.assert_allclose(
        source.score(X[:3], y[:3]).to_numpy(), expected.numpy(), rtol=1e-6, atol=1e-10
    )
    by_layer = source.score(X[:3], y[:3], by_layer=True)
    assert by_layer.index.get_level_values("layer").unique().tolist() == source.layers_
    np.testing.assert_allclose(
        by_layer.groupby(level="test").sum().to_numpy(), expected.numpy(), atol=1e-9
    )


def _squared_error(out, y):
    return (out[:, 0] - y) ** 2


def test_segments_follow_true_unrolled_gradient_descent():
    # linear regression: K-FAC with fisher="ggn" is the exact (constant) Hessian,
    # so only the stationary-gradient assumption separates Source from the truth
    torch.manual_seed(0)
    n, d, lr, n_steps, n_states = 20, 3, 0.004, 200, 10
    X = torch.randn(n, d, dtype=torch.float64)
    beta = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    y = X @ beta + 0.3 * torch.randn(n, dtype=torch.float64)
    X_test = torch.randn(4, d, dtype=torch.float64)
    y_test = X_test @ beta
    # gradient descent on the weighted objective, differentiated in the weights
    weights = torch.ones(n, dtype=torch.float64, requires_grad=True)
    W = torch.zeros(1, d + 1, dtype=torch.float64, requires_grad=True)
    states = []
    for step in range(n_steps):
        loss = (weights * _squared_error(X @ W[:, :d].T + W[:, d], y)).sum() / n
        W = W - lr * torch.autograd.grad(loss, W, create_graph=True)[0]
        if (step + 1) % (n_steps // n_states) == 0:
            states.append({"weight": W[:, :d].detach(), "bias": W[0, d:].detach()})
    test_loss = _squared_error(X_test @ W[:, :d].T + W[:, d], y_test)
    # removing row j lowers its weight from 1 to 0: minus the derivative
    truth = -torch.stack(
        [torch.autograd.grad(t, weights, retain_graph=True)[0] for t in test_loss]
    ).numpy()

    module = torch.nn.Linear(d, 1).double()
    module.load_state_dict(states[-1])
    params = dict(loss=_squared_error, dtype="float64")
    source = SourceInfluence(
        segments=states,
        learning_rates=lr,
        steps=n_steps / n_states,
        damping=1e-8,
        fisher="ggn",
        **params,
    ).fit(module, X, y)
    function = ExactInfluence(damping=1e-8, **params).fit(module, X, y)

    def error(estimator):
        result = estimator.score(X_test, y_test).to_numpy()
        return np.abs(result - truth).max() / np.abs(truth).max()

    # the model is far from converged: the influence function is off by a third
    assert error(source) < 0.1 < 0.3 < error(function)


@pytest.mark.parametrize(
    "params, match",
    [
        (
            dict(learning_rates=[0.1, 0.2]),
            "learning_rates must be one number or one per segment \\(3\\)",
        ),
        (dict(steps=[1, 2, np.inf]), "steps must be positive"),
    ],
)
def test_bad_segments(params, match):
    module, X, y = build(CASES[0], n=10)
    states = _sgd_states(module, X, y, n_states=3, every=1)
    with pytest.raises(ValueError, match=match):
        SourceInfluence(segments=states, **params).fit(module, X, y)
