"""Exact torch versions of fitted scikit-learn models.

Each converter rebuilds the model's prediction function as a torch module and
its training objective as a per-sample loss plus an L2 term, in the mean form
``mean_j w_j loss_j + sum_k c_k / 2 ||theta_k||^2`` used everywhere in dataval
(``w_j``: ``sample_weight`` times the model's class weights, 1 by default).
Each model's ``C`` or ``alpha`` multiplies the same L2 coefficient with or
without weights: scikit-learn scales its penalty against the sum of the
losses (LogisticRegression, Ridge) or divides both by the sum of the weights
(MLP), and either way the minimizer is that of the form above.
"""

import inspect
from collections import OrderedDict

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.validation import check_is_fitted

from ._losses import BinaryCrossEntropyLoss, CrossEntropyLoss, SquaredErrorLoss
from ._model import AdaptedModel

SUPPORTED_SKLEARN = (
    LogisticRegression,
    LinearRegression,
    Ridge,
    MLPClassifier,
    MLPRegressor,
)


def _linear_module(coef, intercept, fit_intercept):
    coef = np.atleast_2d(np.asarray(coef, dtype=np.float64))  # (k, d)
    linear = torch.nn.Linear(coef.shape[1], coef.shape[0], bias=fit_intercept)
    linear = linear.double()
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(coef))
        if fit_intercept:
            bias = np.broadcast_to(
                np.asarray(intercept, dtype=np.float64), (coef.shape[0],)
            )
            linear.bias.copy_(torch.from_numpy(bias.copy()))
    return torch.nn.Sequential(OrderedDict(linear=linear))


class ClassWeights:
    """A classifier's ``class_weight`` as per-row weights, as scikit-learn applies it.

    scikit-learn multiplies each row's ``sample_weight`` by the weight of its
    class (``"balanced"``: computed from the training labels, and from the
    sample weights where ``compute_class_weight`` takes them).
    """

    def __init__(self, class_weight, classes):
        self.class_weight = class_weight
        self.classes = classes

    def __call__(self, codes, sample_weight):
        codes = np.asarray(codes, dtype=np.int64)
        positions = np.arange(len(self.classes))
        if isinstance(self.class_weight, dict):
            per_class = np.array(
                [float(self.class_weight.get(c, 1.0)) for c in self.classes.tolist()]
            )
        else:
            extra = {}
            if "sample_weight" in inspect.signature(compute_class_weight).parameters:
                extra["sample_weight"] = sample_weight
            per_class = compute_class_weight(
                self.class_weight, classes=positions, y=codes, **extra
            )
        weights = per_class[codes]
        return weights if sample_weight is None else weights * sample_weight


def _logistic_penalty(model):
    penalty = getattr(model, "penalty", "l2")
    l1_ratio = getattr(model, "l1_ratio", None) or 0.0
    if penalty is None or penalty == "none" or np.isinf(model.C):
        return None
    if penalty in ("l2", "deprecated") and l1_ratio == 0:
        return "l2"
    raise ValueError(
        f"LogisticRegression with penalty={penalty!r}, l1_ratio={l1_ratio!r} has a "
        "non-differentiable objective, so influence functions do not apply; refit "
        "it with an L2 penalty (l1_ratio=0)."
    )


def _convert_logistic(model, n_samples):
    classes = np.asarray(model.classes_)
    binary = len(classes) == 2
    if not binary and model.solver == "liblinear":
        raise ValueError(
            "LogisticRegression(solver='liblinear') fits one-vs-rest models for "
            "more than two classes, not one objective; use solver='lbfgs'."
        )
    module = _linear_module(model.coef_, model.intercept_, model.fit_intercept)
    l2 = {}
    if _logistic_penalty(model) == "l2":
        # C * sum_j loss_j + 1/2 ||w||^2  ==  n C (mean_j loss_j + ||w||^2 / (2 C n))
        l2["linear.weight"] = 1.0 / (model.C * n_samples)
        if model.solver == "liblinear" and model.fit_intercept:
            # liblinear penalizes the weight of a synthetic column intercept_scaling
            l2["linear.bias"] = 1.0 / (model.C * n_samples * model.intercept_scaling**2)
    loss = BinaryCrossEntropyLoss() if binary else CrossEntropyLoss()
    return AdaptedModel(
        module,
        loss,
        l2=l2,
        classes=classes,
        n_features=model.coef_.shape[1],
        binary_target=binary,
        description="LogisticRegression",
        class_weights=(
            None
            if model.class_weight is None
            else ClassWeights(model.class_weight, classes)
        ),
        at_minimum=True,
    )


def _convert_least_squares(model, n_samples):
    if getattr(model, "positive", False):
        raise ValueError(
            f"{type(model).__name__}(positive=True) minimizes its objective under "
            "the constraint coef_ >= 0, so the fitted coefficients are not a "
            "stationary point of it and influence functions (which assume one) "
            "do not apply; refit it with positive=False."
        )
    module = _linear_module(model.coef_, model.intercept_, model.fit_intercept)
    l2 = {}
    if isinstance(model, Ridge):
        alpha = np.asarray(model.alpha, dtype=np.float64)
        # sum_j ||y_j - W x_j||^2 + alpha ||W||^2: c = 2 alpha / n, one per target
        coefficient = 2.0 * alpha / n_samples
        l2["linear.weight"] = (
            float(coefficient) if coefficient.ndim == 0 else coefficient[:, None]
        )
    coef = np.atleast_2d(model.coef_)
    return AdaptedModel(
        module,
        SquaredErrorLoss(),
        l2=l2,
        n_features=coef.shape[1],
        description=type(model).__name__,
        target_size=coef.shape[0],
        at_minimum=True,
    )


_ACTIVATIONS = {
    "relu": torch.nn.ReLU,
    "tanh": torch.nn.Tanh,
    "logistic": torch.nn.Sigmoid,
    "identity": torch.nn.Identity,
}


def _convert_mlp(model, n_samples):
    layers = OrderedDict()
    n_layers = len(model.coefs_)
    for i, (weight, bias) in enumerate(zip(model.coefs_, model.intercepts_)):
        linear = torch.nn.Linear(*weight.shape).double()
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(weight.T.copy()))
            linear.bias.copy_(torch.from_numpy(np.asarray(bias, dtype=np.float64)))
        layers[f"layer{i}"] = linear
        if i < n_layers - 1:
            layers[f"activation{i}"] = _ACTIVATIONS[model.activation]()
    module = torch.nn.Sequential(layers)
    n_outputs = model.coefs_[-1].shape[1]
    if isinstance(model, MLPClassifier):
        if model.out_activation_ == "logistic" and n_outputs > 1:
            raise ValueError(
                "MLPClassifier fitted on multilabel targets is not supported; "
                "fit one classifier per label."
            )
        binary = model.out_activation_ == "logistic"
        loss = BinaryCrossEntropyLoss() if binary else CrossEntropyLoss()
        # mean_j loss_j + alpha / (2 n) sum ||W||^2
        coefficient = model.alpha / n_samples
        extra = dict(classes=np.asarray(model.classes_), binary_target=binary)
    else:
        if getattr(model, "loss", "squared_error") != "squared_error":
            raise ValueError(
                f"MLPRegressor(loss={model.loss!r}) is not supported; only "
                "loss='squared_error' is converted exactly."
            )
        loss = SquaredErrorLoss()
        # sklearn's gradient is that of sum_j sum_o (y - f)^2 / (2n) + alpha/(2n) ||W||^2
        # (its reported loss_ also divides by the number of outputs, its gradient
        # does not); times 2: mean_j sum_o (y - f)^2 + (alpha / n) ||W||^2
        coefficient = 2.0 * model.alpha / n_samples
        extra = {"target_size": n_outputs}
    l2 = {f"layer{i}.weight": coefficient for i in range(n_layers)}
    return AdaptedModel(
        module,
        loss,
        l2=l2,
        n_features=model.coefs_[0].shape[0],
        description=type(model).__name__,
        at_minimum=True,
        **extra,
    )


def adapt_sklearn(model, n_samples):
    """Convert a fitted supported scikit-learn model or Pipeline."""
    final, transform = model, None
    if isinstance(model, Pipeline):
        final = model.steps[-1][1]
        if not isinstance(final, SUPPORTED_SKLEARN):
            raise TypeError(
                "A Pipeline is supported when its last step is one of "
                f"{', '.join(c.__name__ for c in SUPPORTED_SKLEARN)}; got "
                f"{type(final).__name__}."
            )
        transform = model[:-1] if len(model.steps) > 1 else None
    try:
        check_is_fitted(final)
    except NotFittedError:
        raise NotFittedError(
            f"The {type(final).__name__} passed to fit is not fitted; fit it on the "
            "training data first (influence describes a trained model)."
        ) from None
    if isinstance(final, LogisticRegression):
        adapted = _convert_logistic(final, n_samples)
    elif isinstance(final, (LinearRegression, Ridge)):
        adapted = _convert_least_squares(final, n_samples)
    else:
        adapted = _convert_mlp(final, n_samples)
    if transform is not None:
        adapted.transform = transform
        adapted.description = f"Pipeline ending in {adapted.description}"
    return adapted
