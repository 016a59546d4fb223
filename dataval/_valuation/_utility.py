"""The utility ``U(S)`` of a subset, and the refits that evaluate it in bulk.

Valuation by retraining asks one question of a subset ``S`` of the training
rows: how good is the model fitted on ``S`` alone? That number is the
*utility* ``U(S)``. :class:`Utility` computes it the same way every time (a
clone of one seeded model, one scorer, one validation set) and defines it
for the subsets a model cannot be fitted on.

A refit on a few dozen rows costs little more than scikit-learn's checks of
its input, parameters and targets, so the refits of one joblib task share
what those checks establish once:

- the model's parameters are validated once, then refits and metrics run
  with ``skip_parameter_validation``;
- for a model with no nested estimators, finite numeric ``X`` and ``X_val``
  are checked once, then refits run with ``assume_finite``;
- ``accuracy`` and ``r2`` (named, or the default ``score`` of a classifier
  or regressor) are computed from one ``predict`` in numpy, skipping the
  target-type checks of :func:`~sklearn.metrics.accuracy_score`;
- a task refits one clone instead of cloning per subset, unless the model
  keeps state between fits (``warm_start``) or draws from a shared
  ``RandomState``.

None of these changes a utility: a subset gives the score sklearn's own
scorer gives its refitted clone.
"""

from contextlib import contextmanager
from functools import partial
from numbers import Integral

import numpy as np
from scipy import sparse
from sklearn import config_context
from sklearn.base import ClassifierMixin, RegressorMixin, clone, is_classifier
from sklearn.metrics import check_scoring
from sklearn.utils.multiclass import type_of_target

from .._validation import to_numpy
from ._base import _ConstantClassifier, constant_model, take


class Utility:
    """``U(S)``: the score on ``(X_val, y_val)`` of ``model`` fitted on rows ``S``.

    Degenerate subsets (see :func:`~._base.constant_model`) are scored as a
    constant model. A fit or score that raises gives ``error_score``, or
    re-raises with the subset's size when it is ``"raise"``. Call it for
    one subset; use :meth:`refits` for many.
    """

    def __init__(self, model, X, y, X_val, y_val, scoring, error_score):
        self.model = model
        self.X, self.y = X, y
        self.X_val, self.y_val = X_val, y_val
        self.scorer = check_scoring(model, scoring=scoring)
        self.error_score = error_score
        self._labels = to_numpy(y)
        self._classifier = is_classifier(model)
        self._empty = constant_model(model, self._labels[:0], self._labels)
        self._classes = np.unique(self._labels) if self._classifier else None
        self._y_val = to_numpy(y_val)
        self._metric = _fast_metric(model, scoring, self._y_val)
        _validate_model_params(model)
        self._settings = _refit_settings(model, X, X_val)
        self._reusable = _reusable(model)

    def __call__(self, rows):
        return self._evaluate(None, rows)

    @contextmanager
    def refits(self):
        """A function ``rows -> U(rows)`` for the refits of one task.

        Inside, sklearn skips the checks done once in ``__init__``; the
        function refits one clone (local to the task, so threads never share
        it) when that gives what a fresh clone would.
        """
        with config_context(**self._settings):
            model = clone(self.model) if self._reusable else None
            yield partial(self._evaluate, model)

    def _evaluate(self, model, rows):
        try:
            fitted = self._constant_model(rows)
            if fitted is None:
                model = clone(self.model) if model is None else model
                fitted = model.fit(take(self.X, rows), take(self.y, rows))
            score = self._score(fitted)
        except Exception as error:
            if isinstance(self.error_score, str):
                raise ValueError(
                    f"Fitting or scoring {type(self.model).__name__} on a subset of "
                    f"{len(rows)} training rows failed ({type(error).__name__}: "
                    f"{error}). Small subsets are part of valuation by retraining; "
                    "pass error_score=0.0 (or another number) to give such subsets "
                    "that utility."
                ) from error
            return float(self.error_score)
        if not np.isfinite(score):
            raise FloatingPointError(
                f"The scorer returned {score} for the model fitted on a subset of "
                f"{len(rows)} training rows; use a bounded scoring such as "
                "'accuracy' or 'r2'."
            )
        return score

    def _constant_model(self, rows):
        """:func:`~._base.constant_model` with the training labels' summary cached."""
        if not len(rows):
            return self._empty
        if not self._classifier:
            return None
        labels = self._labels[rows]
        if (labels.ravel() != labels.ravel()[0]).any():
            return None
        return _ConstantClassifier(label=labels[0], classes=self._classes).fit()

    def _score(self, fitted):
        if self._metric is not None:
            predicted = fitted.predict(self.X_val)
            if (
                isinstance(predicted, np.ndarray)
                and predicted.shape == self._y_val.shape
            ):
                score = self._metric(predicted, self._y_val)
                if score is not None:
                    return score
        return float(self.scorer(fitted, self.X_val, self.y_val))


def _fast_metric(model, scoring, y_val):
    """:func:`_accuracy` or :func:`_r2` where ``scoring`` means that metric of
    ``predict`` on a 1-d ``y_val`` it is defined for, else None."""
    if y_val.ndim != 1:
        return None
    if scoring is None:
        score = getattr(type(model), "score", None)
        scoring = {ClassifierMixin.score: "accuracy", RegressorMixin.score: "r2"}.get(
            score
        )
    if scoring == "accuracy" and type_of_target(y_val) in ("binary", "multiclass"):
        return _accuracy
    if scoring == "r2" and len(y_val) > 1 and y_val.dtype.kind in "biuf":
        return _r2
    return None


def _accuracy(predicted, y_val):
    """:func:`~sklearn.metrics.accuracy_score`, or None where it would check more
    than labels of one kind (numbers, or strings of one dtype kind)."""
    numeric = predicted.dtype.kind in "biuf" and y_val.dtype.kind in "biuf"
    if not numeric and predicted.dtype.kind != y_val.dtype.kind:
        return None
    if predicted.dtype.kind == "f" and not np.isfinite(predicted).all():
        return None
    return float(np.mean(predicted == y_val))


def _r2(predicted, y_val):
    """:func:`~sklearn.metrics.r2_score` (its value for constant ``y_val`` too), or
    None for predictions it would reject."""
    if predicted.dtype.kind not in "biuf" or not np.isfinite(predicted).all():
        return None
    residual = np.sum((y_val - predicted) ** 2)
    spread = np.sum((y_val - np.mean(y_val)) ** 2)
    if spread == 0:
        return 1.0 if residual == 0 else 0.0
    return float(1 - residual / spread)


def _estimators(model):
    """``model`` and the estimators among its parameters (a Pipeline's steps)."""
    nested = model.get_params(deep=True).values()
    return [model, *(value for value in nested if hasattr(value, "fit"))]


def _validate_model_params(model):
    """The parameter check sklearn's ``fit`` makes, made once before the refits."""
    for estimator in _estimators(model):
        if hasattr(estimator, "_parameter_constraints"):
            estimator._validate_params()


def _refit_settings(model, X, X_val):
    """sklearn settings under which refits skip the checks already made once.

    ``assume_finite`` only when the model has no nested estimators (a
    Pipeline's transform could make non-finite features) and ``X`` and
    ``X_val`` are numeric and finite, so every refit's input is too.
    """
    settings = {"skip_parameter_validation": True}
    if len(_estimators(model)) == 1 and _finite(X) and _finite(X_val):
        settings["assume_finite"] = True
    return settings


def _finite(X):
    if sparse.issparse(X):
        return False
    values = to_numpy(X)
    return values.dtype.kind in "biuf" and bool(np.isfinite(values).all())


def _reusable(model):
    """Whether refitting one clone gives the models fresh clones would.

    A clone that keeps state between fits (``warm_start``) or draws from a
    ``RandomState`` instance (whose state a refit advances) is not.
    """
    for name, value in model.get_params(deep=True).items():
        parameter = name.split("__")[-1]
        if parameter == "warm_start" and value:
            return False
        if parameter == "random_state" and not (
            value is None or isinstance(value, Integral)
        ):
            return False
    return True


def permutation_marginals(utility, permutations, u_empty, u_full, threshold):
    """Marginal contributions (k, n) along each permutation, and the fits made.

    ``threshold`` (truncation): once ``|U(N) - U(prefix)| <= threshold`` the
    rows left in the permutation get 0 without fitting. ``U(N)`` is known,
    so the last row of an untruncated permutation needs no fit either.
    Module level, so that process and dask workers can run it.
    """
    n = permutations.shape[1]
    marginals = np.zeros(permutations.shape)
    fits = 0
    with utility.refits() as evaluate:
        for k, permutation in enumerate(permutations):
            previous = u_empty
            for position in range(n):
                if threshold is not None and abs(u_full - previous) <= threshold:
                    break
                if position == n - 1:
                    current = u_full
                else:
                    current = evaluate(permutation[: position + 1])
                    fits += 1
                marginals[k, permutation[position]] = current - previous
                previous = current
    return marginals, fits


def subset_utilities(utility, masks):
    """``U(S)`` (k,) for the subsets given as boolean rows of ``masks`` (k, n)."""
    with utility.refits() as evaluate:
        return np.array([evaluate(np.flatnonzero(mask)) for mask in masks])
