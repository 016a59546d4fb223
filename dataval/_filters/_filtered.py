"""FilteredEstimator: drop suspicious rows, then fit the model on the rest."""

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone, is_classifier
from sklearn.utils import _safe_indexing, get_tags
from sklearn.utils._param_validation import HasMethods
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .._validation import row_index
from ._mislabel import MislabelFilter


def _estimator_has(attr):
    """``available_if`` check: the (fitted) wrapped estimator has ``attr``."""

    def check(self):
        model = self.estimator_ if hasattr(self, "estimator_") else self.estimator
        return hasattr(model, attr)

    return check


class FilteredEstimator(MetaEstimatorMixin, BaseEstimator):
    """A model fitted only on the rows whose labels a filter trusts.

    ``fit(X, y)`` runs the filter on ``(X, y)``, drops the rows it flags and
    fits a clone of ``estimator`` on the rest. Prediction methods delegate to
    that clone, so this works wherever the estimator does: a scikit-learn
    ``Pipeline``, ``cross_val_score``, ``GridSearchCV`` (tune
    ``filter__frac``). Filtering happens only in ``fit``; test data is never
    filtered.

    Parameters
    ----------
    estimator : scikit-learn or skorch estimator
        The model to fit (unfitted; it is cloned). Also the model that judges
        the labels when the filter's own ``estimator`` is None.
    filter : MislabelFilter or None, default=None
        Decides which rows to drop; cloned in ``fit``. ``None`` means
        ``MislabelFilter()``: self-influence, the top 10 % removed. Pass a
        filter explicitly to tune it (``GridSearchCV`` over ``filter__frac``).
        Any object with ``fit(X, y)`` that sets a boolean ``mask_`` of kept
        rows works.
    verbose : int, default=0
        Passed to the filter when positive (one progress bar over its fits).

    Attributes
    ----------
    estimator_ : estimator
        The clone of ``estimator`` fitted on the kept rows.
    filter_ : MislabelFilter
        The fitted filter (``filter_.scores_``: each row's suspicion).
    removed_ : pandas.Index
        Index labels of the removed rows (positions for arrays).
    classes_ : ndarray of shape (n_classes,)
        Class labels, from ``estimator_`` (classifiers only).
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of str
        Column names seen in ``fit`` (only for DataFrames with string columns).

    See Also
    --------
    MislabelFilter : The default filter; also a resampler for imbalanced-learn.

    Notes
    -----
    Data must be dense and finite. On tiny data the filter adapts rather than
    fails: cross-fitting with fewer rows in a class than folds uses fewer
    folds (and self-influence below two), and no class ever loses all its
    rows, so ``classes_`` always matches the training labels.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.model_selection import cross_val_score
    >>> from dataval.datasets import load_mislabeled_digits
    >>> from dataval.filters import FilteredEstimator, MislabelFilter
    >>> X, y, _ = load_mislabeled_digits(noise=0.1)
    >>> X, y = X[:300], y[:300]
    >>> model = FilteredEstimator(LogisticRegression(C=0.1, max_iter=1000),
    ...                           filter=MislabelFilter(frac=0.1))
    >>> model.fit(X, y).removed_.size
    30
    >>> model.predict(X[:3]).shape
    (3,)
    """

    _parameter_constraints = {
        "estimator": [HasMethods(["fit", "predict"])],
        "filter": [None, HasMethods(["fit"])],
        "verbose": ["verbose"],
    }

    def __init__(self, estimator, *, filter=None, verbose=0):
        self.estimator = estimator
        self.filter = filter
        self.verbose = verbose

    def fit(self, X, y):
        """Filter ``(X, y)``, then fit a clone of ``estimator`` on the kept rows.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
        y : array-like or Series of shape (n_samples,)

        Returns
        -------
        self : FilteredEstimator
        """
        self._validate_params()
        X_checked, y_checked = validate_data(self, X, y, dtype=None)
        if is_classifier(self.estimator):
            check_classification_targets(y_checked)
        # pandas stays pandas: the filter's scores and removed_ keep its index
        X = X if isinstance(X, pd.DataFrame) else X_checked
        y = y if isinstance(y, pd.Series) else y_checked
        filter_ = MislabelFilter() if self.filter is None else clone(self.filter)
        params = filter_.get_params()
        if "estimator" in params and params["estimator"] is None:
            filter_.set_params(estimator=self.estimator)
        if self.verbose and "verbose" in params:
            filter_.set_params(verbose=self.verbose)
        kept = np.asarray(filter_.fit(X, y).mask_, dtype=bool)
        self.filter_ = filter_
        self.removed_ = row_index(X)[~kept]
        rows = np.flatnonzero(kept)
        self.estimator_ = clone(self.estimator).fit(
            _safe_indexing(X, rows), _safe_indexing(y, rows)
        )
        return self

    def _checked(self, X):
        check_is_fitted(self)
        validate_data(self, X, dtype=None, reset=False)
        return X

    @available_if(_estimator_has("predict"))
    def predict(self, X):
        """Predict with the estimator fitted on the kept rows."""
        X = self._checked(X)
        return self.estimator_.predict(X)

    @available_if(_estimator_has("predict_proba"))
    def predict_proba(self, X):
        """Class probabilities from the estimator fitted on the kept rows."""
        X = self._checked(X)
        return self.estimator_.predict_proba(X)

    @available_if(_estimator_has("predict_log_proba"))
    def predict_log_proba(self, X):
        """Log class probabilities from the estimator fitted on the kept rows."""
        X = self._checked(X)
        return self.estimator_.predict_log_proba(X)

    @available_if(_estimator_has("decision_function"))
    def decision_function(self, X):
        """Decision function of the estimator fitted on the kept rows."""
        X = self._checked(X)
        return self.estimator_.decision_function(X)

    @available_if(_estimator_has("score"))
    def score(self, X, y):
        """The estimator's own score (accuracy, R^2, ...) on ``(X, y)``."""
        X = self._checked(X)
        return self.estimator_.score(X, y)

    @property
    def classes_(self):
        """Class labels of the fitted estimator."""
        return self.estimator_.classes_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = get_tags(self.estimator)
        tags.estimator_type = inner.estimator_type
        tags.classifier_tags = inner.classifier_tags
        tags.regressor_tags = inner.regressor_tags
        tags.target_tags.required = True
        return tags
