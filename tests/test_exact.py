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


class _LayerNormNet(torch.nn.Module):
    # a linear layer, a normalization with parameters of its own, a linear
    # layer without bias: the block among linear layers and products mixed
    def __init__(self):
        super().__init__()
        self.first = torch.nn.Linear(4, 6)
        self.norm = torch.nn.LayerNorm(6)
        self.last = torch.nn.Linear(6, 3, bias=False)

    def forward(self, x):
        return self.last(torch.tanh(self.norm(self.first(x))))


class _SharedLayerNet(torch.nn.Module):
    # one linear layer called twice: its parameters go to products
    def __init__(self):
        super().__init__()
        self.first = torch.nn.Linear(4, 4)
        self.twice = torch.nn.Linear(4, 4)
        self.last = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.last(torch.tanh(self.twice(torch.tanh(self.twice(self.first(x))))))


class _TiedNet(torch.nn.Module):
    # two linear layers sharing one weight: theirs go to products
    def __init__(self):
        super().__init__()
        self.first = torch.nn.Linear(4, 4)
        self.second = torch.nn.Linear(4, 4)
        self.second.weight = self.first.weight
        self.last = torch.nn.Linear(4, 3)

    def forward(self, x):
        hidden = torch.tanh(self.second(torch.tanh(self.first(x))))
        return self.last(hidden)


class _InplaceReluNet(torch.nn.Sequential):
    # an in-place operation on a perturbed layer output
    def __init__(self):
        super().__init__(
            torch.nn.Linear(4, 6), torch.nn.ReLU(inplace=True), torch.nn.Linear(6, 3)
        )


class _WeightUsedTwiceNet(torch.nn.Module):
    # the output layer's weight also enters outside its call: the block
    # cannot see that use, the check with a random product must
    def __init__(self):
        super().__init__()
        self.first = torch.nn.Linear(4, 5)
        self.last = torch.nn.Linear(5, 3)

    def forward(self, x):
        hidden = torch.tanh(self.first(x))
        return self.last(hidden) + 0.3 * (hidden @ self.last.weight.T) ** 2


class _ConvNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(1, 2, 3)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.conv(x[:, None])).flatten(1))


def _network(module_class, seed=0):
    torch.manual_seed(seed)
    X = torch.randn(24, 4, dtype=torch.float64)
    y = (X[:, 0] + X[:, 1] > 0).long() + (X[:, 2] > 1).long()
    return module_class().double(), _cross_entropy, X, y


HESSIAN_CASES = [
    dict(id="tanh-mlp", data=lambda: _classification()[:4], linear=True),
    dict(id="softplus-regressor", data=lambda: _regression()[:4], linear=True),
    dict(id="layer-norm", data=lambda: _network(_LayerNormNet), linear=True),
    dict(id="shared-layer", data=lambda: _network(_SharedLayerNet), linear=True),
    dict(id="conv", data=lambda: _network(_ConvNet), linear=True),
    dict(id="tied", data=lambda: _network(_TiedNet), linear=True),
    dict(id="inplace-relu", data=lambda: _network(_InplaceReluNet), linear=True),
    dict(
        id="weight-used-twice", data=lambda: _network(_WeightUsedTwiceNet), linear=False
    ),
]


@pytest.mark.parametrize("curvature", ["hessian", "ggn"])
@pytest.mark.parametrize("case", HESSIAN_CASES, ids=[c["id"] for c in HESSIAN_CASES])
def test_curvature_matches_dense_reference(case, curvature, monkeypatch):
    module, loss_fn, X, y = case["data"]()
    expected = dense_curvature(module, loss_fn, X, y, curvature)
    estimator = ExactInfluence(damping=10.0, curvature=curvature).fit(module, X, y)
    fallbacks = []
    for name in ("_by_products", "_gauss_newton_by_jacobians"):
        fallback = getattr(estimator, name)
        monkeypatch.setattr(
            estimator,
            name,
            lambda *args, f=fallback: fallbacks.append(1) or f(*args),
        )
    H = estimator._hessian() if curvature == "hessian" else estimator._gauss_newton()
    # formed from the block among linear layers unless the check refused it
    assert not fallbacks if case["linear"] else fallbacks
    assert (H - expected).abs().max() <= 1e-12 * expected.abs().max()


@pytest.mark.parametrize("curvature", ["hessian", "ggn"])
def test_linear_block_sees_the_sample_weights(curvature):
    module, _, X, y, *_ = _classification()
    weights = np.linspace(0.2, 2.0, len(X))
    estimator = ExactInfluence(damping=10.0, curvature=curvature).fit(
        module, X, y, sample_weight=weights
    )
    H = estimator._hessian() if curvature == "hessian" else estimator._gauss_newton()
    expected = estimator._by_products(curvature)
    assert (H - expected).abs().max() <= 1e-12 * expected.abs().max()


def test_hessian_block_of_an_mlp_classifier_with_l2():
    from sklearn.neural_network import MLPClassifier

    X, y = _classification()[2:4]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier(hidden_layer_sizes=(5,), alpha=0.1, max_iter=50)
        clf.fit(X.numpy(), y.numpy())
        estimator = ExactInfluence(damping=10.0, curvature="hessian").fit(
            clf, X.numpy(), y.numpy()
        )
    H = estimator._hessian()
    expected = estimator._by_products("hessian")
    assert (H - expected).abs().max() <= 1e-12 * expected.abs().max()
