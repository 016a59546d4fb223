"""KFACInfluence against dense matrices (float64, tiny models) and the contract."""

import numpy as np
import pandas as pd
import pytest
import torch
from kfac_cases import (
    CASES,
    Normed,
    build,
    case,
    ids,
    kronecker_curvature,
    to_layer_order,
)
from sklearn.neural_network import MLPClassifier
from torch import nn

from dataval import EKFACInfluence, ExactInfluence, KFACInfluence

ESTIMATORS = [KFACInfluence, EKFACInfluence]

# one example, one Linear layer: A ⊗ S is the Gauss-Newton block exactly
SINGLE_LINEAR = [
    dict(id="cross_entropy", module=lambda: nn.Linear(3, 4), y=torch.tensor([2])),
    dict(
        id="no_bias",
        module=lambda: nn.Linear(3, 4, bias=False),
        y=torch.tensor([1]),
    ),
    dict(
        id="squared_error",
        module=lambda: nn.Linear(3, 2),
        y=torch.tensor([[0.5, -1.0]], dtype=torch.float64),
    ),
    dict(id="sigmoid", module=lambda: nn.Linear(3, 1), y=torch.tensor([1])),
]


def _exact_curvature(module, X, y):
    exact = ExactInfluence(damping=1.0, curvature="ggn").fit(module, X, y)
    return exact, _undamped(exact)


def _undamped(exact):
    """The curvature ``L L^T - damping I`` from the exact estimator's Cholesky factor."""
    assert exact._pivots is None  # damping=1 on a PSD Gauss-Newton matrix
    L = exact._factor
    return L @ L.T - exact.damping_ * torch.eye(len(L), dtype=L.dtype)


def _mean_row_pearson(a, b):
    return np.mean(
        [np.corrcoef(x, z)[0, 1] for x, z in zip(a.to_numpy(), b.to_numpy())]
    )


@pytest.mark.parametrize("case", SINGLE_LINEAR, ids=ids(SINGLE_LINEAR))
def test_kfac_single_example_equals_ggn_block(case):
    torch.manual_seed(0)
    module = case["module"]().double()
    X = torch.randn(1, 3, dtype=torch.float64)
    kfac = KFACInfluence(damping=1.0, fisher="ggn", dtype="float64")
    kfac.fit(module, X, case["y"])
    exact, H = _exact_curvature(module, X, case["y"])
    identity = torch.eye(exact.n_params_, dtype=torch.float64)
    P = to_layer_order(exact.model_, kfac._layer_list, identity)
    torch.testing.assert_close(kronecker_curvature(kfac, damped=False), P.T @ H @ P)


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_scores_are_the_equation_with_the_kronecker_curvature(case, estimator):
    module, X, y = build(case, n=10)
    est = estimator(damping=0.1, fisher="ggn", dtype="float64", batch_size=4)
    est.fit(module, X, y)
    fm = est.model_
    G = to_layer_order(fm, est._layer_list, fm.per_sample_grads(X, y))
    C = kronecker_curvature(est)
    expected = (G[:3] @ torch.linalg.solve(C, G.T) / len(X)).numpy()
    scores = est.score(X[:3], y[:3])
    np.testing.assert_allclose(scores.to_numpy(), expected, rtol=1e-4, atol=1e-7)
    by_layer = est.score(X[:3], y[:3], by_layer=True)
    assert by_layer.index.get_level_values("layer").unique().tolist() == est.layers_
    np.testing.assert_allclose(
        by_layer.groupby(level="test").sum().to_numpy(), expected, rtol=1e-4, atol=1e-6
    )
    self_expected = (G * torch.linalg.solve(C, G.T).T).sum(1) / len(X)
    np.testing.assert_allclose(
        est.self_influence().to_numpy(), self_expected.numpy(), rtol=1e-4
    )
    np.testing.assert_allclose(
        est.value(X[:3], y[:3]).to_numpy(), expected.mean(0), rtol=1e-4, atol=1e-7
    )
    top = est.top_k(X[:2], y[:2], k=3)
    np.testing.assert_allclose(
        top["influence"].to_numpy(),
        -np.sort(-expected[:2], 1)[:, :3].ravel(),
        rtol=1e-4,
    )
    full_rank = max(layer.d_in for layer in est._layer_list)
    ranked = est.set_params(query_rank=full_rank).score(X[:3], y[:3])
    np.testing.assert_allclose(ranked.to_numpy(), expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_correlates_with_exact_ggn_on_a_small_mlp(estimator):
    module, X, y = build(case("mlp"), n=80)
    exact = ExactInfluence(damping=0.05, curvature="ggn").fit(module, X, y)
    est = estimator(damping=0.05, dtype="float64", random_state=0).fit(module, X, y)
    corr = _mean_row_pearson(est.score(X[:5], y[:5]), exact.score(X[:5], y[:5]))
    assert corr > 0.9


def test_low_rank_queries_approximate():
    module, X, y = build(case("mlp"), n=40)
    est = EKFACInfluence(dtype="float64", random_state=0).fit(module, X, y)
    full = est.score(X[:4], y[:4])
    rank1 = est.set_params(query_rank=1).score(X[:4], y[:4])
    assert _mean_row_pearson(full, rank1) > 0.9


def test_damping_auto_and_l2():
    X = np.random.RandomState(0).randn(60, 4)
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    mlp = MLPClassifier((5,), alpha=0.3, max_iter=500, random_state=0).fit(X, y)
    est = KFACInfluence(random_state=0, dtype="float64").fit(mlp, X, y)
    trace = 0.0
    for name, eigenvalues in est.eigenvalues_.items():
        d_in = eigenvalues.shape[1]
        l2 = 0.3 / 60 * (d_in - 1) / d_in  # weights only, not the bias column
        assert est._l2[name] == pytest.approx(l2)
        trace += float(eigenvalues.sum()) + eigenvalues.numel() * l2
    # one lambda: a tenth of the mean eigenvalue over all the parameters
    assert isinstance(est.damping_, float)
    assert est.damping_ == pytest.approx(0.1 * trace / est.n_params_)
    fixed = KFACInfluence(damping=0.2, random_state=0).fit(mlp, X, y)
    assert fixed.damping_ == 0.2
    assert fixed._l2["layer1"] == pytest.approx(0.3 / 60 * 5 / 6)


def test_sklearn_mlp_correlates_with_exact():
    X = np.random.RandomState(0).randn(80, 4)
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    mlp = MLPClassifier((6,), alpha=1e-2, max_iter=2000, random_state=0).fit(X, y)
    frame = pd.DataFrame(X, index=[f"r{i}" for i in range(80)])
    exact = ExactInfluence(damping=0.05, curvature="ggn").fit(mlp, frame, y)
    est = EKFACInfluence(damping=0.05, fisher="ggn").fit(mlp, frame, y)
    scores = est.score(frame[:5], y[:5])
    assert scores.dtypes.unique().tolist() == [np.float32]
    assert scores.columns.tolist() == frame.index.tolist()
    assert _mean_row_pearson(scores, exact.score(frame[:5], y[:5])) > 0.8


def test_skorch_net():
    skorch = pytest.importorskip("skorch")
    X = np.random.RandomState(0).randn(50, 4).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    net = skorch.NeuralNetClassifier(
        nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2), nn.Softmax(-1)),
        max_epochs=3,
        train_split=None,
        verbose=0,
    ).fit(X, y)
    est = EKFACInfluence(random_state=0).fit(net, X, y)
    assert est.layers_ == ["0", "2"]
    assert est.score(X[:2], y[:2]).shape == (2, 50)


def test_layers_subset_and_other_parameters_left_out():
    _, X, y = build(case("mlp"))
    torch.manual_seed(0)
    module = Normed().double()
    est = KFACInfluence(layers=["out"], random_state=0).fit(module, X, y)
    assert est.layers_ == ["out"]
    assert est.n_params_ == 3 * 6
    assert KFACInfluence(random_state=0).fit(module, X, y).layers_ == ["inp", "out"]


def test_fisher_true_is_seeded():
    module, X, y = build(case("mlp"), n=30)
    first = KFACInfluence(random_state=3).fit(module, X, y).eigenvalues_["0"]
    again = KFACInfluence(random_state=3).fit(module, X, y).eigenvalues_["0"]
    other = KFACInfluence(random_state=4).fit(module, X, y).eigenvalues_["0"]
    assert torch.equal(first, again) and not torch.equal(first, other)


def _per_row_loss(output, target):
    return ((output - target) ** 2).sum(1)


# one bad value per parameter is a contract test (test_contract.py); these are
# values valid elsewhere or in combination with others
BAD_PARAMS = [
    (dict(damping=0.0), "damping"),
    (dict(layers=["9"]), "'9', which is not a submodule"),
    (dict(fisher="true", loss=_per_row_loss), "fisher='true' samples targets"),
]


@pytest.mark.parametrize(("params", "message"), BAD_PARAMS)
def test_bad_input(params, message):
    module, X, y = build(case("sequence"))
    with pytest.raises(ValueError, match=message):
        KFACInfluence(**params).fit(module, X, y)


def test_callable_loss_with_ggn_fisher():
    module, X, y = build(case("sequence"))
    est = KFACInfluence(fisher="ggn", loss=_per_row_loss, dtype="float64")
    auto = KFACInfluence(fisher="ggn", dtype="float64")
    torch.testing.assert_close(
        est.fit(module, X, y).eigenvalues_["0"],
        auto.fit(module, X, y).eigenvalues_["0"],
    )


def test_bfloat16_keeps_the_gradients_of_confident_rows(confident_net):
    # softmax(z) - y of a row predicted with probability 1 - 1e-4 rounds to 0
    # in bfloat16: the loss's output gradients are taken in float32
    net, X, y = confident_net
    kwargs = {"damping": 0.1, "random_state": 0}
    reference = EKFACInfluence(**kwargs).fit(net, X, y).score(X[:8], y[:8])
    mixed = EKFACInfluence(**kwargs, dtype="bfloat16").fit(net, X, y)
    assert _mean_row_pearson(mixed.score(X[:8], y[:8]), reference) > 0.99


def test_eigendecompositions_side_by_side_match_one_by_one():
    # the factors' eigendecompositions run two at a time from the main thread:
    # each pair is the float64 eigh of its own matrix, in the input order
    from dataval._numerics.spectral import psd_eighs

    generator = torch.Generator().manual_seed(0)
    matrices = []
    for d in (3, 7, 5, 1):
        root = torch.randn(d, d + 2, generator=generator)
        matrices.append(root @ root.T)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        pairs = psd_eighs(matrices, torch.float64)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    for matrix, (values, vectors) in zip(matrices, pairs):
        expected, _ = torch.linalg.eigh(matrix.double())
        torch.testing.assert_close(values, expected.clamp(min=0))
        torch.testing.assert_close(vectors * values @ vectors.T, matrix.double())
    assert psd_eighs([], torch.float32) == []
