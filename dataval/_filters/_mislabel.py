"""MislabelFilter: score every training row for a wrong label and drop the worst."""

import warnings
from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone, is_classifier
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import StratifiedKFold, check_cv
from sklearn.utils import _safe_indexing
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    StrOptions,
)
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted

from .._adapters import adapt_model
from .._estimators._ekfac import EKFACInfluence
from .._estimators._exact import ExactInfluence
from .._validation import check_X_y, to_numpy
from .._valuation._knn import KNNShapley, nearest_neighbour_model
from .._valuation._oob import DataOOB

#: largest model (trainable parameters) given a dense ExactInfluence by default
DENSE_LIMIT = 5000
# probabilities are clipped here before the log: a row the model calls
# impossible gets a large finite loss rather than infinity
_MIN_PROBABILITY = 1e-12
_SCORE_NAMES = {
    "self": "self_influence",
    "cross-fit": "heldout_loss",
    "data-oob": "neg_data_oob",
    "knn-shapley": "neg_knn_shapley",
}
_VALUATIONS = {"data-oob": DataOOB, "knn-shapley": KNNShapley}
_VALUATIONS_BY_CLASS = {cls: name for name, cls in _VALUATIONS.items()}


def default_influence(model, X, y):
    """The influence estimator ``MislabelFilter(influence=None)`` uses for ``model``.

    ``ExactInfluence(curvature="ggn")`` up to ``DENSE_LIMIT`` parameters (the
    Gauss-Newton matrix stays positive semi-definite where a net's Hessian
    does not); above it ``EKFACInfluence``, whose cost grows linearly with
    the number of parameters.
    """
    parameters = adapt_model(model, "auto", X, y).trainable_parameters()
    if sum(p.numel() for p in parameters.values()) <= DENSE_LIMIT:
        return ExactInfluence(curvature="ggn")
    return EKFACInfluence()


def _is_fitted(model):
    try:
        check_is_fitted(model)
    except NotFittedError:
        return False
    return True


def heldout_loss(model, X, y):
    """Loss of each row of ``(X, y)`` under ``model``, shape (n,).

    Classifiers: ``-log p(given label)`` from ``predict_proba`` (a label the
    model never saw has probability 0); other models: the squared error of
    ``predict``, summed over outputs.
    """
    labels = to_numpy(y)
    if hasattr(model, "predict_proba"):
        proba = np.asarray(model.predict_proba(X))  # (n, n_classes)
        classes = np.asarray(model.classes_)
        codes = np.searchsorted(classes, labels).clip(0, len(classes) - 1)
        given = np.where(
            classes[codes] == labels, proba[np.arange(len(labels)), codes], 0.0
        )
        return -np.log(np.maximum(given, _MIN_PROBABILITY))
    predicted = np.asarray(model.predict(X), dtype=np.float64)
    residual = predicted.reshape(len(labels), -1) - np.asarray(
        labels, dtype=np.float64
    ).reshape(len(labels), -1)
    return (residual**2).sum(1)


class MislabelFilter(BaseEstimator):
    """Score training rows for a wrong label and drop the most suspicious.

    A resampler in the sense of imbalanced-learn: ``fit_resample(X, y)``
    returns the rows it keeps, so it can be a step of an
    ``imblearn.pipeline.Pipeline``; in a plain scikit-learn pipeline wrap the
    final model in :class:`FilteredEstimator` instead.

    Ways to score a row (``scores_``, higher = more suspicious):

    ``method="self"``
        Fit the model on all rows, then each row's self-influence
        ``(1/n) g_j^T (H + damping I)^{-1} g_j``: how much the model had to bend
        to fit it. Uses ``influence``.
    ``method="cross-fit"``
        Split the rows into ``cv`` folds; each fold is scored by a model fitted
        on the other folds, so a row cannot vouch for itself. The score is the
        row's loss under that model (``-log p(given label)`` for classifiers,
        squared error otherwise): the retrained leave-fold-out counterpart of
        self-influence, which needs no influence estimator and works for any
        scikit-learn classifier with ``predict_proba``.
    ``method="data-oob"``, ``"knn-shapley"`` or a valuation estimator
        Minus a data value (:class:`~dataval.DataOOB`: how well bagged clones
        of the model that never saw the row predict its label;
        :class:`~dataval.KNNShapley`: each row valued on the others for a
        nearest-neighbour classifier, the model itself when it is a
        ``KNeighborsClassifier`` or a Pipeline ending in one, else
        ``KNeighborsClassifier()`` on the raw features). An instance such as
        ``DataOOB(n_estimators=200)`` is cloned and used with its settings.
        No gradients: any scikit-learn classifier.

    On the digits with 10 % flipped labels both reach a ROC AUC above 0.99
    for a logistic regression and an MLP; self-influence was the better of
    the two on most seeds measured (``benchmarks/mislabel_detection.py``).
    Cross-fitting costs ``cv`` model fits, often less than an influence
    estimator on a network.

    Parameters
    ----------
    influence : dataval estimator or None, default=None
        How ``method="self"`` computes self-influence; cloned before use.
        ``None`` picks by model size: ``ExactInfluence(curvature="ggn")`` up
        to 5000 trainable parameters, else ``EKFACInfluence``.
    estimator : scikit-learn or skorch model, default=None
        The model whose fit judges the labels. Unfitted: cloned and fitted
        inside. Already fitted: with ``method="self"`` used as it is (it must
        have been trained on the ``X, y`` given to ``fit``); cross-fitting
        always fits clones. ``None`` is allowed only inside
        :class:`FilteredEstimator`, which passes its own estimator.
    method : {"self", "cross-fit", "data-oob", "knn-shapley"} or valuation \
            estimator, default="self"
        How rows are scored (see above).
    frac : float in [0, 1), default=0.1
        Fraction of rows to remove: the ``int(frac * n)`` highest scores.
    threshold : float or None, default=None
        Remove the rows scoring above it instead (``frac`` is then ignored).
        Scores are on the scale of the method: self-influence or a loss.
    cv : int, cross-validation generator or iterable, default=5
        Folds for ``method="cross-fit"`` (see :func:`sklearn.model_selection.check_cv`;
        an integer means stratified folds for classifiers). With fewer rows in
        some class than folds, the folds are reduced to that count; below two,
        the filter warns and falls back to ``method="self"``.
    random_state : int, RandomState instance or None, default=None
        Passed to ``influence`` (or the valuation estimator) when it has a
        ``random_state`` parameter (stochastic estimators). Folds are
        deterministic.

    Attributes
    ----------
    scores_ : pandas.Series of shape (n_samples,)
        Suspicion of each row, higher = more likely mislabeled; indexed like
        ``X`` (a RangeIndex for arrays) and named after what it holds
        (``"self_influence"``, ``"heldout_loss"``, ``"neg_data_oob"`` or
        ``"neg_knn_shapley"``).
    mask_ : ndarray of bool of shape (n_samples,)
        True for the rows kept. A class never loses all its rows: for
        classification targets its least suspicious row is always kept.
    predictions_ : pandas.Series of shape (n_samples,)
        The model's prediction for each row: out-of-fold for
        ``"cross-fit"``, else in-sample.
    method_ : str
        The method used (differs from ``method`` after a fallback).
    influence_ : dataval estimator
        The fitted influence estimator (``method_="self"`` only).
    estimator_ : fitted model
        The model fitted on all rows (not for ``method_="cross-fit"``).
    valuation_ : fitted valuation estimator
        The fitted :class:`~dataval.DataOOB` or :class:`~dataval.KNNShapley`
        (valuation methods only).

    See Also
    --------
    FilteredEstimator : Fit a model on the rows a filter keeps.
    suspects : The most suspicious rows as a DataFrame.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from dataval.datasets import load_mislabeled_digits
    >>> from dataval.filters import MislabelFilter
    >>> X, y, is_flipped = load_mislabeled_digits(noise=0.1, as_frame=True)
    >>> X, y, is_flipped = X.iloc[:300], y.iloc[:300], is_flipped[:300]
    >>> filt = MislabelFilter(estimator=LogisticRegression(C=0.1, max_iter=1000))
    >>> X_kept, y_kept = filt.fit_resample(X, y)
    >>> X_kept.shape
    (270, 64)
    >>> bool(is_flipped[filt.scores_.argsort()[::-1][:30]].mean() > 0.5)
    True
    """

    _parameter_constraints = {
        "influence": [None, HasMethods(["fit", "self_influence"])],
        "estimator": [None, HasMethods(["fit"])],
        "method": [
            StrOptions({"self", "cross-fit", "data-oob", "knn-shapley"}),
            DataOOB,
            KNNShapley,
        ],
        "frac": [Interval(Real, 0, 1, closed="left")],
        "threshold": [None, Interval(Real, None, None, closed="neither")],
        "cv": ["cv_object"],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        influence=None,
        estimator=None,
        method="self",
        frac=0.1,
        threshold=None,
        cv=5,
        random_state=None,
    ):
        self.influence = influence
        self.estimator = estimator
        self.method = method
        self.frac = frac
        self.threshold = threshold
        self.cv = cv
        self.random_state = random_state

    def fit(self, X, y):
        """Score every row of ``(X, y)`` and decide which to keep.

        Parameters
        ----------
        X : array-like, DataFrame or tensor of shape (n_samples, ...)
        y : array-like or Series of shape (n_samples,)
            The labels to check.

        Returns
        -------
        self : MislabelFilter
        """
        self._validate_params()
        if self.estimator is None:
            raise ValueError(
                "MislabelFilter needs a model to judge the labels, got estimator=None; "
                "pass estimator=LogisticRegression() (or another supported model), "
                "or use the filter inside FilteredEstimator, which passes its own."
            )
        index = check_X_y(X, y)
        splits = self._splits(X, y) if self.method == "cross-fit" else None
        if not isinstance(self.method, str) or self.method in _VALUATIONS:
            scores, predictions = self._valuation(X, y)
        elif splits is None:
            scores, predictions = self._self_influence(X, y)
        else:
            scores, predictions = self._cross_fit(X, y, splits)
        self.scores_ = pd.Series(scores, index=index, name=_SCORE_NAMES[self.method_])
        self.predictions_ = pd.Series(predictions, index=index, name="predicted")
        self.mask_ = self._keep(scores, y)
        return self

    def fit_resample(self, X, y):
        """Fit, then return the rows kept.

        Parameters
        ----------
        X : array-like, DataFrame or tensor of shape (n_samples, ...)
        y : array-like or Series of shape (n_samples,)

        Returns
        -------
        X_kept : same type as ``X``
            The rows of ``X`` whose labels look right; pandas keeps its index.
        y_kept : same type as ``y``
        """
        kept = np.flatnonzero(self.fit(X, y).mask_)
        return _safe_indexing(X, kept), _safe_indexing(y, kept)

    # ---------------------------------------------------------------- methods
    def _model(self, X, y):
        if _is_fitted(self.estimator):
            return self.estimator
        return clone(self.estimator).fit(X, y)

    def _self_influence(self, X, y):
        model = self._model(X, y)
        if self.influence is None:
            influence = default_influence(model, X, y)
        else:
            influence = clone(self.influence)
        if self.random_state is not None and "random_state" in influence.get_params():
            influence.set_params(random_state=self.random_state)
        self.influence_ = influence.fit(model, X, y)
        self.estimator_ = model
        self.method_ = "self"
        return influence.self_influence().to_numpy(), to_numpy(model.predict(X))

    def _valuation(self, X, y):
        """Minus the values of a DataOOB or KNNShapley, and in-sample predictions."""
        if isinstance(self.method, str):
            valuation = _VALUATIONS[self.method]()
        else:
            valuation = clone(self.method)
        if self.random_state is not None and isinstance(valuation, DataOOB):
            valuation.set_params(random_state=self.random_state)
        model = self._model(X, y)
        judge = self.estimator
        if isinstance(valuation, KNNShapley):
            judge = nearest_neighbour_model(judge)
        self.valuation_ = valuation.fit(judge, X, y)
        self.estimator_ = model
        self.method_ = _VALUATIONS_BY_CLASS[type(valuation)]
        return -valuation.value().to_numpy(), to_numpy(model.predict(X))

    def _splits(self, X, y):
        """The folds for cross-fitting, or None when it cannot run."""
        classifier = is_classifier(self.estimator)
        labels = to_numpy(y)
        n_splits = self.cv
        if classifier and isinstance(self.cv, Integral):
            _, counts = np.unique(labels, return_counts=True)
            n_splits = min(int(self.cv), int(counts.min()))
            splitter = StratifiedKFold(n_splits) if n_splits >= 2 else None
        else:
            splitter = check_cv(n_splits, labels, classifier=classifier)
            if splitter.get_n_splits(X, labels) > len(labels):
                splitter = None
        if splitter is None:
            warnings.warn(
                f"method='cross-fit' needs at least 2 rows of every class (cv={self.cv!r}); "
                "falling back to method='self' for this data.",
                UserWarning,
                stacklevel=3,
            )
            return None
        return list(splitter.split(X, labels))

    def _cross_fit(self, X, y, splits):
        scores = np.empty(len(y))
        predictions = np.empty(len(y), dtype=object)
        for train, held_out in splits:
            X_train, y_train = _safe_indexing(X, train), _safe_indexing(y, train)
            X_out, y_out = _safe_indexing(X, held_out), _safe_indexing(y, held_out)
            model = clone(self.estimator).fit(X_train, y_train)
            scores[held_out] = heldout_loss(model, X_out, y_out)
            predictions[held_out] = list(to_numpy(model.predict(X_out)))
        self.method_ = "cross-fit"
        # object array -> the plainest dtype that holds the predictions
        return scores, np.array(predictions.tolist())

    def _keep(self, scores, y):
        """Kept rows, bool (n,)."""
        n = len(scores)
        if self.threshold is not None:
            remove = scores > self.threshold
        else:
            order = np.argsort(-scores, kind="stable")
            remove = np.zeros(n, dtype=bool)
            remove[order[: int(self.frac * n)]] = True
        labels = to_numpy(y)
        if type_of_target(labels) in ("binary", "multiclass"):
            for label in np.unique(labels):
                rows = np.flatnonzero(labels == label)
                if remove[rows].all():
                    remove[rows[np.argmin(scores[rows])]] = False
        return ~remove
