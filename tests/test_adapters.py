"""Model adapters: exact conversion of scikit-learn models, skorch and torch."""

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.datasets import load_iris
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dataval import ExactInfluence
from dataval._adapters import adapt_model
from dataval._functional import FunctionalModel
from dataval._objective import stationarity

TIGHT = dict(tol=1e-12, max_iter=10_000)
rng = np.random.RandomState(0)
X_CLS, Y3 = load_iris(return_X_y=True)
X_CLS = StandardScaler().fit_transform(X_CLS)
Y2 = (Y3 == 2).astype(int)
X_REG = rng.randn(50, 3)
Y_REG = X_REG @ [1.0, -2.0, 0.5] + 0.1 * rng.randn(50)
Y_REG2 = np.c_[Y_REG, X_REG[:, 0] - Y_REG]

# (name, unfitted model, X, y, how to compare predictions)
SKLEARN_CASES = [
    ("logistic-binary", LogisticRegression(C=0.5, **TIGHT), X_CLS, Y2, "proba"),
    ("logistic-multinomial", LogisticRegression(C=2.0, **TIGHT), X_CLS, Y3, "proba"),
    (
        "logistic-string-labels",
        LogisticRegression(**TIGHT),
        X_CLS,
        np.array(["setosa", "versicolor", "virginica"])[Y3],
        "proba",
    ),
    (
        "logistic-liblinear",
        LogisticRegression(solver="liblinear", C=1.0, intercept_scaling=2.0, **TIGHT),
        X_CLS,
        Y2,
        "proba",
    ),
    ("linear", LinearRegression(), X_REG, Y_REG, "predict"),
    # a direct solver: the iterative ones "auto" may pick stop at tol=1e-4
    ("ridge", Ridge(alpha=3.0, solver="cholesky"), X_REG, Y_REG, "predict"),
    (
        "ridge-multi",
        Ridge(alpha=np.array([1.0, 5.0]), solver="cholesky"),
        X_REG,
        Y_REG2,
        "predict",
    ),
    (
        "mlp-classifier",
        MLPClassifier(
            hidden_layer_sizes=(5,),
            activation="tanh",
            alpha=1.0,
            solver="lbfgs",
            random_state=0,
            **TIGHT,
        ),
        X_CLS,
        Y3,
        "proba",
    ),
    (
        "mlp-binary",
        MLPClassifier(
            hidden_layer_sizes=(4,),
            activation="logistic",
            alpha=1.0,
            solver="lbfgs",
            random_state=0,
            **TIGHT,
        ),
        X_CLS,
        Y2,
        "proba",
    ),
    (
        # L-BFGS stops on a relative decrease of the loss (scipy's ftol, not
        # settable through scikit-learn): a well-conditioned objective
        # (alpha=10) puts that stop close to the minimum
        "mlp-regressor",
        MLPRegressor(
            hidden_layer_sizes=(4,),
            activation="tanh",
            alpha=10.0,
            solver="lbfgs",
            random_state=0,
            **TIGHT,
        ),
        X_REG,
        Y_REG,
        "predict",
    ),
    (
        "pipeline",
        make_pipeline(StandardScaler(), LogisticRegression(C=0.3, **TIGHT)),
        3 * X_CLS + 1,
        Y3,
        "proba",
    ),
]


def _torch_predictions(adapted, X, kind):
    fm = FunctionalModel(adapted, torch.device("cpu"), torch.float64)
    out = fm.outputs(fm.prepare(adapted.prepare_X(X)))
    if kind == "predict":
        return out.numpy().reshape(len(X), -1)
    if out.shape[1] == 1:
        p = torch.sigmoid(out[:, 0])
        return torch.stack([1 - p, p], 1).numpy()
    return torch.softmax(out, 1).numpy()


@pytest.mark.parametrize("name, model, X, y, kind", SKLEARN_CASES)
def test_sklearn_conversion_predicts_the_same(name, model, X, y, kind):
    model.fit(X, y)
    adapted = adapt_model(model, "auto", X, y)
    expected = model.predict_proba(X) if kind == "proba" else model.predict(X)
    np.testing.assert_allclose(
        _torch_predictions(adapted, X, kind), expected.reshape(len(X), -1), atol=1e-7
    )


@pytest.mark.parametrize("name, model, X, y, kind", SKLEARN_CASES)
def test_sklearn_objective_is_stationary_at_the_fit(name, model, X, y, kind):
    """The converted objective (mean loss + L2) has zero gradient at the fit.

    Direct solvers reach it to rounding (below 1e-13 of the per-row
    gradients' size); scikit-learn's L-BFGS stops on a relative decrease of
    the loss, at most 1.3e-4 on these fixtures (benchmarks/stationarity.py):
    the bound leaves a margin of 7.
    """
    model.fit(X, y)
    adapted = adapt_model(model, "auto", X, y)
    X_t, y_t = adapted.prepare_X(X), adapted.prepare_y(y)
    assert stationarity(adapted, X_t, y_t, None, batch_size=64) < 1e-3


def test_regularizer_matters_for_stationarity():
    """Without the L2 term the gradient is far from zero: the test can fail."""
    model = LogisticRegression(C=0.05, **TIGHT).fit(X_CLS, Y3)
    adapted = adapt_model(model, "auto", X_CLS, Y3)
    fm = FunctionalModel(adapted, torch.device("cpu"), torch.float64)
    X_t, y_t = fm.prepare(adapted.prepare_X(X_CLS), adapted.prepare_y(Y3))
    per_row = fm.per_sample_grads(X_t, y_t)
    assert float(per_row.mean(0).abs().max() / per_row.abs().mean()) > 1e-2


def test_torch_auto_losses():
    torch.manual_seed(0)
    X = torch.randn(10, 3)
    cls = adapt_model(torch.nn.Linear(3, 4), "auto", X, torch.randint(0, 4, (10,)))
    assert type(cls.loss).__name__ == "CrossEntropyLoss"
    assert cls.n_classes == 4
    binary = adapt_model(torch.nn.Linear(3, 1), "auto", X, torch.randint(0, 2, (10,)))
    assert type(binary.loss).__name__ == "BinaryCrossEntropyLoss"
    reg = adapt_model(torch.nn.Linear(3, 1), "auto", X, torch.randn(10))
    assert type(reg.loss).__name__ == "SquaredErrorLoss"


def test_compiled_module_is_unwrapped():
    module = torch.nn.Linear(3, 2)
    compiled = torch.compile(module)
    adapted = adapt_model(
        compiled, "auto", torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    )
    # a private, uncompiled copy of the module
    assert type(adapted.module) is torch.nn.Linear
    assert adapted.module is not module
    assert torch.equal(adapted.module.weight, module.weight)


def _skorch_classifier(**kwargs):
    skorch = pytest.importorskip("skorch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden = torch.nn.Linear(4, 5)
            self.out = torch.nn.Linear(5, 3)

        def forward(self, X):
            return torch.softmax(self.out(torch.tanh(self.hidden(X))), dim=-1)

    return skorch.NeuralNetClassifier(
        Net, max_epochs=30, lr=0.2, train_split=None, verbose=0, **kwargs
    )


def test_skorch_classifier_loss_matches_its_criterion():
    net = _skorch_classifier()
    X, y = X_CLS.astype(np.float32), Y3.astype(np.int64)
    torch.manual_seed(0)
    net.fit(X, y)
    adapted = adapt_model(net, "auto", X, y)
    fm = FunctionalModel(adapted, torch.device("cpu"), torch.float32)
    X_t, y_t = fm.prepare(adapted.prepare_X(X), adapted.prepare_y(y))
    ours = fm.losses(X_t, y_t).mean()
    theirs = net.get_loss(net.infer(X_t), y_t)
    assert torch.allclose(ours, theirs, rtol=1e-5)


def test_skorch_weight_decay_is_the_regularizer():
    net = _skorch_classifier(optimizer__weight_decay=0.01)
    torch.manual_seed(0)
    net.fit(X_CLS.astype(np.float32), Y3)
    adapted = adapt_model(net, "auto", X_CLS.astype(np.float32), Y3)
    assert set(adapted.l2.values()) == {0.01}


def test_skorch_regressor():
    skorch = pytest.importorskip("skorch")
    net = skorch.NeuralNetRegressor(
        torch.nn.Linear, module__in_features=3, module__out_features=1,
        max_epochs=20, lr=0.05, train_split=None, verbose=0,
    )  # fmt: skip
    X, y = X_REG.astype(np.float32), Y_REG.astype(np.float32)[:, None]
    net.fit(X, y)
    scores = ExactInfluence().fit(net, X, y).score(X[:3], y[:3])
    assert scores.shape == (3, 50)


@pytest.mark.parametrize(
    "model, error, match",
    [
        (KMeans(n_clusters=2), TypeError, "Supported models"),
        ("a string", TypeError, "Supported models"),
        (make_pipeline(StandardScaler(), KMeans()), TypeError, "last step"),
        (LogisticRegression(), NotFittedError, "not fitted"),
        (
            LogisticRegression(l1_ratio=1.0, solver="saga", C=1.0),
            ValueError,
            "non-differentiable",
        ),
        (LinearRegression(positive=True), ValueError, r"positive=True\) minimizes"),
        (Ridge(positive=True), ValueError, "refit it with positive=False"),
    ],
)
def test_unsupported_models_raise(model, error, match):
    fittable = (LogisticRegression, LinearRegression, Ridge)
    if isinstance(model, fittable) and match != "not fitted":
        model.fit(X_CLS, Y2)
    with pytest.raises(error, match=match):
        ExactInfluence().fit(model, X_CLS, Y2)


def test_unfitted_skorch_net_raises():
    with pytest.raises(NotFittedError, match="not initialized"):
        ExactInfluence().fit(_skorch_classifier(), X_CLS, Y3)


def test_sklearn_model_rejects_custom_loss():
    model = LogisticRegression().fit(X_CLS, Y2)
    with pytest.raises(ValueError, match="loss"):
        ExactInfluence(loss=torch.nn.functional.cross_entropy).fit(model, X_CLS, Y2)


def test_feature_count_mismatch():
    model = LogisticRegression().fit(X_CLS, Y2)
    inf = ExactInfluence().fit(model, X_CLS, Y2)
    with pytest.raises(ValueError, match="features"):
        inf.score(X_CLS[:2, :3], Y2[:2])
