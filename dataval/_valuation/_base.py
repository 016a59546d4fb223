"""The contract shared by the valuation estimators, and the models they refit.

Seeded clones (a subset always gives the same model), and the constant
models that stand in for a fit on a degenerate subset (empty, one class).
"""

import numpy as np
import pandas as pd
from joblib import effective_n_jobs
from sklearn.base import (
    BaseEstimator,
    ClassifierMixin,
    RegressorMixin,
    clone,
    is_classifier,
)
from sklearn.utils import _safe_indexing
from tqdm.auto import tqdm

from .._validation import N_JOBS_CONSTRAINT, check_X_y, to_numpy


class BaseValuation(BaseEstimator):
    """Base class of the valuation estimators; not used directly.

    Subclasses define ``__init__`` (storing arguments only) and extend
    ``_parameter_constraints``.
    """

    _parameter_constraints: dict = {
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "n_jobs": N_JOBS_CONSTRAINT,
    }

    def _fit_data(self, model, X, y):
        """Validate parameters, model and data; store the training set.

        Returns the model's unfitted clone: the user's object is never
        fitted, changed or kept.
        """
        self._validate_params()
        check_model(model, type(self).__name__)
        index = check_X_y(X, y)
        self.train_index_ = pd.Index(index).rename("train")
        self.n_train_ = len(self.train_index_)
        self._X, self._y = X, y
        return clone(model)

    def _series(self, values, name):
        check_finite_values(values, name, self.train_index_)
        return pd.Series(values, index=self.train_index_, name=name)


def check_model(model, caller):
    """TypeError unless ``model`` is a scikit-learn style estimator."""
    if not (hasattr(model, "fit") and hasattr(model, "get_params")):
        raise TypeError(
            f"{caller}.fit needs a scikit-learn estimator (an object with fit, "
            f"predict and get_params, e.g. RandomForestClassifier()), got "
            f"{type(model).__name__}. For a torch module use an influence "
            "estimator, or wrap it in a skorch NeuralNetClassifier."
        )


def check_finite_values(values, name, index):
    """FloatingPointError naming the rows where ``values`` is NaN or infinite."""
    bad = ~np.isfinite(values)
    if bad.any():
        rows = index[bad][:10].tolist()
        raise FloatingPointError(
            f"{name} is NaN or infinite for {int(bad.sum())} rows (e.g. {rows}): "
            "the scorer returned a non-finite number for some subset; use a "
            "bounded scoring such as 'accuracy' or 'r2'."
        )


def seeded_clone(model, seed):
    """An unfitted clone whose ``random_state`` parameters left at None get ``seed``.

    Refits of one subset then give one model, so the utility is a function.
    """
    model = clone(model)
    unset = {
        name: int(seed)
        for name, value in model.get_params(deep=True).items()
        if name.split("__")[-1] == "random_state" and value is None
    }
    return model.set_params(**unset)


def take(data, rows):
    """Rows ``rows`` (integer positions) of an array, list or pandas object."""
    if isinstance(data, np.ndarray):
        return data[rows]
    return _safe_indexing(data, rows)


class _ConstantClassifier(ClassifierMixin, BaseEstimator):
    """Predicts one class for every row; probabilities one-hot over ``classes``."""

    def __init__(self, label=None, classes=None):
        self.label = label
        self.classes = classes

    def fit(self, X=None, y=None):
        self.classes_ = np.asarray(self.classes)
        return self

    def predict(self, X):
        return np.full(_n_rows(X), self.label, dtype=self.classes_.dtype)

    def predict_proba(self, X):
        proba = np.zeros((_n_rows(X), len(self.classes_)))
        proba[:, np.flatnonzero(self.classes_ == self.label)] = 1.0
        return proba


class _ConstantRegressor(RegressorMixin, BaseEstimator):
    """Predicts one value (a scalar or one row of outputs) for every row."""

    def __init__(self, value=None):
        self.value = value

    def fit(self, X=None, y=None):
        self.value_ = np.asarray(self.value, dtype=float)
        return self

    def predict(self, X):
        return np.broadcast_to(self.value_, (_n_rows(X), *self.value_.shape)).copy()


def _n_rows(X):
    return X.shape[0] if hasattr(X, "shape") else len(X)


def _most_frequent(labels):
    values, counts = np.unique(labels, return_counts=True)
    return values[np.argmax(counts)]


def constant_model(model, y_rows, y_all):
    """The model ``U`` scores for a degenerate subset with labels ``y_rows``.

    Classifiers, subsets with at most one class: predict that class (the
    most frequent class of all training rows when the subset is empty).
    Regressors, empty subsets: predict the mean of all training targets.
    Returns None when the subset is not degenerate.
    """
    labels = to_numpy(y_rows)
    if is_classifier(model):
        classes = np.unique(to_numpy(y_all))
        if len(np.unique(labels)) > 1:
            return None
        label = labels[0] if len(labels) else _most_frequent(to_numpy(y_all))
        return _ConstantClassifier(label=label, classes=classes).fit()
    if len(labels):
        return None
    return _ConstantRegressor(value=np.mean(to_numpy(y_all), axis=0)).fit()


def split_tasks(items, n_jobs):
    """``items`` cut into contiguous pieces, one per worker."""
    n_pieces = max(1, min(effective_n_jobs(n_jobs), len(items)))
    return np.array_split(np.arange(len(items)), n_pieces)


def progress(verbose, total, desc, unit):
    """A tqdm bar (with time left) when ``verbose``, else a bar that does nothing."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not verbose, leave=False)
