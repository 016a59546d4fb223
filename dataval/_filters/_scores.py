"""Per-row losses, predictions and class probabilities of fitted models.

What :class:`MislabelFilter` reads from the model it judges the labels with:
in sample (the model fitted on all rows) or cross-fitted (each fold scored by
a model fitted on the other folds, so a row cannot vouch for itself).
"""

import warnings
from numbers import Integral

import numpy as np
import torch
from sklearn.base import clone, is_classifier
from sklearn.model_selection import KFold, StratifiedKFold, check_cv
from sklearn.utils import _safe_indexing
from sklearn.utils.multiclass import type_of_target

from .._adapters import adapt_model
from .._functional import FunctionalModel
from .._validation import to_numpy
from .._valuation._knn import KNNShapley, fit_valuation
from .._valuation._oob import DataOOB

# probabilities are clipped here before the log: a row the model calls
# impossible gets a large finite loss rather than infinity
_MIN_PROBABILITY = 1e-12
#: the valuation estimators ``MislabelFilter(method=...)`` names
VALUATIONS = {"data-oob": DataOOB, "knn-shapley": KNNShapley}
# integer ``cv`` folds are shuffled (data often come sorted by class, source
# or time) with this fixed seed, so the filter stays deterministic
_FOLD_SEED = 0


def is_classification(y):
    """Whether ``y`` holds class labels (binary or multiclass)."""
    return type_of_target(to_numpy(y)) in ("binary", "multiclass")


def given_label_loss(proba, classes, labels):
    """``-log p(given label)`` (n,) from probabilities (n, K) over sorted ``classes``.

    A label outside ``classes`` has probability 0.
    """
    codes = np.searchsorted(classes, labels).clip(0, len(classes) - 1)
    given = np.where(
        classes[codes] == labels, proba[np.arange(len(labels)), codes], 0.0
    )
    return -np.log(np.maximum(given, _MIN_PROBABILITY))


def heldout_loss(model, X, y):
    """Loss of each row of ``(X, y)`` under ``model``, shape (n,).

    Classifiers: ``-log p(given label)`` from ``predict_proba`` (a label the
    model never saw has probability 0); other models: the squared error of
    ``predict``, summed over outputs.
    """
    labels = to_numpy(y)
    if hasattr(model, "predict_proba"):
        proba = np.asarray(model.predict_proba(X))  # (n, n_classes)
        return given_label_loss(proba, np.asarray(model.classes_), labels)
    return (residuals(model.predict(X), labels) ** 2).sum(1)


def residuals(predicted, labels):
    """``predicted - labels`` as float64 (n, n_outputs)."""
    n = len(labels)
    return np.asarray(predicted, dtype=np.float64).reshape(n, -1) - np.asarray(
        labels, dtype=np.float64
    ).reshape(n, -1)


def aligned_proba(model, X, classes):
    """``model``'s class probabilities with one column per entry of ``classes``.

    A class the model never saw gets probability 0. Models without
    ``predict_proba`` give their prediction probability 1.
    """
    if hasattr(model, "predict_proba"):
        proba, known = np.asarray(model.predict_proba(X)), np.asarray(model.classes_)
    else:
        predicted = to_numpy(model.predict(X))
        known = np.unique(predicted)
        proba = (predicted[:, None] == known).astype(np.float64)
    aligned = np.zeros((len(proba), len(classes)))
    aligned[:, np.searchsorted(classes, known)] = proba
    return aligned


def torch_predictions(module, X, y):
    """In-sample class probabilities (n, K) and classes of a plain torch module."""
    adapted = adapt_model(module, "auto", X, y)
    model = FunctionalModel(adapted, torch.device("cpu"), torch.float64)
    outputs = model.outputs(model.prepare(adapted.prepare_X(X)))  # (n, K) or (n, 1)
    if outputs.shape[-1] == 1:
        positive = torch.sigmoid(outputs.reshape(-1))
        proba = torch.stack([1 - positive, positive], 1)
    else:
        proba = torch.softmax(outputs.reshape(len(outputs), -1), 1)
    return proba.numpy(), np.arange(proba.shape[1])


def in_sample_loss(model, X, y, *, compute=True):
    """Loss (n,) (None unless ``compute``) and predictions (n,) of a fitted model.

    A plain torch module's loss is ``-log p(given label)`` of its softmax (or
    sigmoid) outputs and its prediction their argmax.
    """
    if isinstance(model, torch.nn.Module):
        proba, classes = torch_predictions(model, X, y)
        loss = given_label_loss(proba, classes, to_numpy(y)) if compute else None
        return loss, proba.argmax(1)
    predictions = to_numpy(model.predict(X))
    return (heldout_loss(model, X, y) if compute else None), predictions


def in_sample_proba(model, X, y):
    """Class probabilities (n, K) of a fitted model on its own rows, and the classes."""
    if isinstance(model, torch.nn.Module):
        return torch_predictions(model, X, y)
    classes = np.unique(to_numpy(y))
    return aligned_proba(model, X, classes), classes


def cross_fit_splits(estimator, cv, X, y):
    """The folds for cross-fitting ``estimator``, or None when it cannot run."""
    if isinstance(estimator, torch.nn.Module):
        return None
    classifier = is_classifier(estimator)
    labels = to_numpy(y)
    n_splits = cv
    if classifier and isinstance(cv, Integral):
        _, counts = np.unique(labels, return_counts=True)
        n_splits = min(int(cv), int(counts.min()))
        splitter = (
            StratifiedKFold(n_splits, shuffle=True, random_state=_FOLD_SEED)
            if n_splits >= 2
            else None
        )
    else:
        if isinstance(n_splits, Integral) and not classifier:
            n_splits = KFold(n_splits, shuffle=True, random_state=_FOLD_SEED)
        splitter = check_cv(n_splits, labels, classifier=classifier)
        if splitter.get_n_splits(X, labels) > len(labels):
            splitter = None
    if splitter is None:
        warnings.warn(
            f"cross-fitting needs at least 2 rows of every class (cv={cv!r}); "
            "falling back to in-sample scores for this data.",
            UserWarning,
            stacklevel=4,
        )
        return None
    return list(splitter.split(X, labels))


def cross_fit(estimator, X, y, splits, progress):
    """Held-out loss, prediction and class probabilities of every row."""
    labels = to_numpy(y)
    classes = np.unique(labels) if is_classification(labels) else None
    loss = np.empty(len(labels))
    predicted = np.empty(len(labels), dtype=object)
    proba = None if classes is None else np.zeros((len(labels), len(classes)))
    for fold, (train, held_out) in enumerate(splits, 1):
        progress.set_postfix_str(f"fold {fold}/{len(splits)}")
        X_train, y_train = _safe_indexing(X, train), _safe_indexing(y, train)
        X_out, y_out = _safe_indexing(X, held_out), _safe_indexing(y, held_out)
        model = clone(estimator).fit(X_train, y_train)
        loss[held_out] = heldout_loss(model, X_out, y_out)
        predicted[held_out] = list(to_numpy(model.predict(X_out)))
        if proba is not None:
            proba[held_out] = aligned_proba(model, X_out, classes)
        progress.update()
    # object array -> the plainest dtype that holds the predictions
    predicted = np.array(predicted.tolist())
    return {"loss": loss, "predicted": predicted, "proba": proba}


def fitted_influence(influence, model, X, y, *, random_state, verbose):
    """A clone of ``influence`` fitted to ``model``, seeded and verbose where it can be.

    ``verbose`` is the filter's: its level 2 shows the estimator's own bars.
    """
    influence = clone(influence)
    params = influence.get_params()
    if random_state is not None and "random_state" in params:
        influence.set_params(random_state=random_state)
    if verbose > 1 and "verbose" in params:
        influence.set_params(verbose=verbose - 1)
    return influence.fit(model, X, y)


def fitted_valuation(method, estimator, X, y, *, random_state):
    """The valuation estimator ``method`` names (or a clone of it) fitted for ``estimator``."""
    valuation = VALUATIONS[method]() if isinstance(method, str) else clone(method)
    if random_state is not None and isinstance(valuation, DataOOB):
        valuation.set_params(random_state=random_state)
    return fit_valuation(valuation, estimator, X, y)
