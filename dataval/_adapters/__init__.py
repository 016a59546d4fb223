"""Turn any accepted model into an :class:`AdaptedModel`."""

import numpy as np
import torch
from sklearn.base import BaseEstimator

from .._validation import feature_names_of
from ._model import AdaptedModel, layer_of
from ._sklearn import SUPPORTED_SKLEARN, adapt_sklearn
from ._torch import adapt_skorch, adapt_torch

__all__ = ["AdaptedModel", "adapt_model", "layer_of"]

SUPPORTED = (
    "torch.nn.Module, skorch NeuralNet / NeuralNetClassifier / NeuralNetRegressor, "
    "fitted scikit-learn "
    + ", ".join(c.__name__ for c in SUPPORTED_SKLEARN)
    + ", or a Pipeline ending in one of them"
)


def _is_skorch_net(model):
    try:
        from skorch import NeuralNet
    except ImportError:  # pragma: no cover - skorch is a dependency
        return False
    return isinstance(model, NeuralNet)


def adapt_model(model, loss, X, y):
    """Read ``model`` (with its training data) into an :class:`AdaptedModel`."""
    adapted = _adapt(model, loss, X, y)
    # names the model was fitted with, else the columns seen now
    names = getattr(model, "feature_names_in_", None)
    adapted.feature_names = feature_names_of(X) if names is None else np.asarray(names)
    return adapted


def _adapt(model, loss, X, y):
    if _is_skorch_net(model):
        return adapt_skorch(model, loss, X, y)
    if isinstance(model, torch.nn.Module):
        return adapt_torch(model, loss, X, y)
    if isinstance(model, BaseEstimator):
        from sklearn.pipeline import Pipeline

        if isinstance(model, (Pipeline, *SUPPORTED_SKLEARN)):
            if loss != "auto":
                raise ValueError(
                    f"loss={loss!r} cannot be combined with a scikit-learn model: its "
                    "loss is read from the model; leave loss='auto'."
                )
            return adapt_sklearn(model, len(y))
    raise TypeError(
        f"Cannot compute influence for a {type(model).__name__}. Supported models: "
        f"{SUPPORTED}."
    )
