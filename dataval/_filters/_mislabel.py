"""MislabelFilter: score every training row for a wrong label and drop the worst."""

from numbers import Real

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, clone, is_classifier
from sklearn.utils import _safe_indexing
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_feature_names, _check_n_features

from .._adapters import adapt_model
from .._estimators.dense.exact import ExactInfluence
from .._estimators.kronecker.ekfac import EKFACInfluence
from .._progress import tqdm
from .._validation import check_X_y, indexable_rows, is_fitted, to_numpy
from .._valuation._knn import KNNShapley
from .._valuation._oob import DataOOB
from ._estimate import estimate_from_predictions, keep_mask
from ._scores import (
    VALUATIONS,
    cross_fit,
    cross_fit_splits,
    fitted_influence,
    fitted_valuation,
    in_sample_loss,
    in_sample_proba,
    is_classification,
)

#: largest model (trainable parameters) given a dense ExactInfluence by default
DENSE_LIMIT = 5000
_SCORE_NAMES = {
    "combined": "combined_loss",
    "self": "self_influence",
    "cross-fit": "heldout_loss",
    "loss": "loss",
    "data-oob": "neg_data_oob",
    "knn-shapley": "neg_knn_shapley",
}
_VALUATIONS_BY_CLASS = {cls: name for name, cls in VALUATIONS.items()}


def default_influence(model, X, y):
    """The influence estimator ``MislabelFilter(influence=None)`` uses for ``model``.

    ``ExactInfluence`` up to ``DENSE_LIMIT`` parameters (its
    ``curvature="auto"`` is the Gauss-Newton matrix for networks, which
    stays positive semi-definite where their Hessian does not); above it
    ``EKFACInfluence``, whose cost grows linearly with the number of
    parameters.
    """
    parameters = adapt_model(model, "auto", X, y).trainable_parameters()
    if sum(p.numel() for p in parameters.values()) <= DENSE_LIMIT:
        return ExactInfluence()
    return EKFACInfluence()


class MislabelFilter(BaseEstimator):
    """Score training rows for a wrong label and drop the most suspicious.

    A resampler in the sense of imbalanced-learn: ``fit_resample(X, y)``
    returns the rows it keeps, so it can be a step of an
    ``imblearn.pipeline.Pipeline``; in a plain scikit-learn pipeline wrap the
    final model in :class:`FilteredEstimator` instead.

    Ways to score a row (``scores_``, higher = more suspicious):

    ``method="combined"``
        The sum of the row's two losses below, ``"loss"`` and
        ``"cross-fit"``: its loss under the model fitted on all rows plus its
        loss under a model that never saw it. Costs ``cv + 1`` fits.
    ``method="cross-fit"``
        Split the rows into ``cv`` folds; each fold is scored by a model fitted
        on the other folds, so a row cannot vouch for itself. The score is the
        row's loss under that model (``-log p(given label)`` for classifiers,
        squared error otherwise), the ranking of cleanlab's self-confidence.
    ``method="loss"``
        The row's loss under the model fitted on all rows: one fit.
    ``method="self"``
        Each row's self-influence ``(1/n) g_j^T (H + damping I)^{-1} g_j``
        under the model fitted on all rows: how much the model had to bend to
        fit it. Uses ``influence``.
    ``method="data-oob"``, ``"knn-shapley"`` or a valuation estimator
        Minus a data value (:class:`~dataval.DataOOB`: how well bagged clones
        of the model that never saw the row predict its label;
        :class:`~dataval.KNNShapley`: each row valued on the others for a
        nearest-neighbour classifier, the model itself when it is a
        ``KNeighborsClassifier`` or a Pipeline ending in one, else
        ``KNeighborsClassifier()`` on the raw features). An instance such as
        ``DataOOB(n_estimators=200)`` is cloned and used with its settings.
        No gradients: any scikit-learn classifier.
    ``method="auto"``
        ``"combined"`` for models that can be refitted (scikit-learn, skorch);
        ``"self"`` for a plain ``torch.nn.Module``.

    The user guide compares them on a grid of data sets, models and noise
    (``benchmarks/label_detection.py``).

    How many rows to drop: ``frac="auto"`` estimates the number of wrong
    labels. For classification it counts the confident joint of given and
    likely labels from held-out class probabilities (the method of
    cleanlab; see the user guide); for regression, the rows whose held-out
    residual lies beyond 3.5 robust standard deviations. Held-out
    predictions come from the cross-fitted models (``cv`` extra fits with
    ``method="self"`` or ``"loss"``; the model's own predictions for a
    plain torch module, which under-count what it memorized).

    Parameters
    ----------
    influence : dataval estimator or None, default=None
        How ``method="self"`` computes self-influence; cloned before use.
        ``None`` picks by model size: ``ExactInfluence`` up to 5000 trainable
        parameters, else ``EKFACInfluence``.
    estimator : scikit-learn, skorch or torch model, default=None
        The model whose fit judges the labels. Unfitted: cloned and fitted
        inside. Already fitted: used as it is for the in-sample scores (it
        must have been trained on the ``X, y`` given to ``fit``);
        cross-fitting always fits clones. A ``torch.nn.Module`` is taken as
        fitted and cannot be cross-fitted. ``None`` is allowed only inside
        :class:`FilteredEstimator`, which passes its own estimator.
    method : {"auto", "combined", "cross-fit", "loss", "self", "data-oob", \
            "knn-shapley"} or valuation estimator, default="auto"
        How rows are scored (see above).
    frac : "auto" or float in [0, 1), default="auto"
        Fraction of rows to remove (the ``int(frac * n)`` highest scores), or
        ``"auto"`` to remove as many as the estimated number of wrong labels.
    threshold : float or None, default=None
        Remove the rows scoring above it instead (``frac`` is then ignored).
        Scores are on the scale of the method: self-influence or a loss.
    cv : int, cross-validation generator or iterable, default=5
        Folds for cross-fitting (see :func:`sklearn.model_selection.check_cv`;
        an integer means stratified folds for classifiers). With fewer rows in
        some class than folds, the folds are reduced to that count; below two,
        the filter warns and falls back to in-sample scores.
    random_state : int, RandomState instance or None, default=None
        Passed to ``influence`` (or the valuation estimator) when it has a
        ``random_state`` parameter (stochastic estimators). Integer ``cv`` folds are shuffled with a
        fixed seed: deterministic, and unaffected by the order of the rows.
    verbose : int, default=0
        1 shows one progress bar over the fits and phases; 2 also the
        influence estimator's own bars.

    Attributes
    ----------
    scores_ : pandas.Series of shape (n_samples,)
        Suspicion of each row, higher = more likely mislabeled; indexed like
        ``X`` (a RangeIndex for arrays) and named after what it holds
        (``"combined_loss"``, ``"heldout_loss"``, ``"loss"``,
        ``"self_influence"``, ``"neg_data_oob"`` or ``"neg_knn_shapley"``).
    mask_ : ndarray of bool of shape (n_samples,)
        True for the rows kept. A class never loses all its rows: for
        classification targets its least suspicious row is always kept.
    labels_ : pandas.Series of shape (n_samples,)
        The labels given to ``fit``, indexed like ``scores_``.
    predictions_ : pandas.Series of shape (n_samples,)
        The model's prediction for each row: out-of-fold when cross-fitted,
        else in-sample.
    n_issues_ : int
        Number of rows judged mislabeled: the estimate for ``frac="auto"``,
        else ``int(frac * n)`` or the count above ``threshold``.
    noise_rate_ : float
        ``n_issues_ / n_samples``.
    n_features_in_ : int
        Number of features (columns of ``X``) seen in ``fit``.
    feature_names_in_ : ndarray of str
        Column names seen in ``fit`` (only for DataFrames with string columns).
    method_ : str
        The method used (differs from ``method`` for ``"auto"`` and after a
        fallback).
    influence_ : dataval estimator
        The fitted influence estimator (``method_="self"`` only).
    estimator_ : fitted model
        The model fitted on all rows (every method but ``"cross-fit"``).
    valuation_ : fitted valuation estimator
        The fitted :class:`~dataval.DataOOB` or :class:`~dataval.KNNShapley`
        (valuation methods only).

    See Also
    --------
    FilteredEstimator : Fit a model on the rows a filter keeps.
    find_label_issues : The same scores and estimate as one table.
    suspects : The most suspicious rows as a DataFrame.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from dataval.datasets import load_mislabeled_digits
    >>> from dataval.filters import MislabelFilter
    >>> X, y, is_flipped = load_mislabeled_digits(noise=0.1, as_frame=True)
    >>> X, y, is_flipped = X.iloc[:300], y.iloc[:300], is_flipped.iloc[:300]
    >>> filt = MislabelFilter(estimator=LogisticRegression(C=0.1, max_iter=1000))
    >>> X_kept, y_kept = filt.fit_resample(X, y)
    >>> 20 <= filt.n_issues_ <= 45
    True
    >>> bool(is_flipped[~filt.mask_].mean() > 0.7)
    True
    """

    _parameter_constraints = {
        "influence": [None, HasMethods(["fit", "self_influence"])],
        "estimator": [None, HasMethods(["fit"]), torch.nn.Module],
        "method": [
            StrOptions(
                {"auto", "combined", "self", "cross-fit", "loss"} | set(VALUATIONS)
            ),
            DataOOB,
            KNNShapley,
        ],
        "frac": [StrOptions({"auto"}), Interval(Real, 0, 1, closed="left")],
        "threshold": [None, Interval(Real, None, None, closed="neither")],
        "cv": ["cv_object"],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        *,
        influence=None,
        estimator=None,
        method="auto",
        frac="auto",
        threshold=None,
        cv=5,
        random_state=None,
        verbose=0,
    ):
        self.influence = influence
        self.estimator = estimator
        self.method = method
        self.frac = frac
        self.threshold = threshold
        self.cv = cv
        self.random_state = random_state
        self.verbose = verbose

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
        if y is None:
            raise ValueError(
                "MislabelFilter requires y to be passed, but the target y is None; "
                "pass the labels to check."
            )
        X = indexable_rows(X)
        index = check_X_y(X, y)
        _check_n_features(self, X, reset=True)
        _check_feature_names(self, X, reset=True)
        is_module = isinstance(self.estimator, torch.nn.Module)
        if not is_module and is_classifier(self.estimator):
            check_classification_targets(to_numpy(y))
        method, scores, predictions, heldout = self._score_rows(X, y)
        self.method_ = method
        self.scores_ = pd.Series(scores, index=index, name=_SCORE_NAMES[method])
        self.labels_ = pd.Series(to_numpy(y), index=index, name="label")
        self.predictions_ = pd.Series(predictions, index=index, name="predicted")
        self.n_issues_ = self._n_issues(X, y, scores, heldout)
        self.noise_rate_ = self.n_issues_ / len(scores)
        self.mask_ = keep_mask(scores, to_numpy(y), self.n_issues_, self.threshold)
        # for plot_suspects; a reference, left out of pickles
        self._X_seen = X
        return self

    def _score_rows(self, X, y):
        """Method used, scores (n,), predictions (n,) and cross-fitted results."""
        method = self._resolve_method()
        is_valuation = not isinstance(method, str) or method in VALUATIONS
        needs_heldout = method in ("combined", "cross-fit") or (
            self.frac == "auto" and self.threshold is None
        )
        splits = (
            cross_fit_splits(self.estimator, self.cv, X, y) if needs_heldout else None
        )
        if splits is None and method in ("combined", "cross-fit"):
            method = "loss"
        steps = (len(splits) if splits else 0) + (method != "cross-fit")
        with tqdm(
            total=steps, desc="label audit", unit="fit", disable=not self.verbose
        ) as progress:
            heldout = (
                cross_fit(self.estimator, X, y, splits, progress) if splits else None
            )
            if method == "cross-fit":
                scores, predictions = heldout["loss"], heldout["predicted"]
            elif is_valuation:
                scores, predictions = self._valuation(X, y)
                method = _VALUATIONS_BY_CLASS[type(self.valuation_)]
                progress.update()
            else:
                progress.set_postfix_str(method)
                scores, predictions = self._in_sample(X, y, method)
                progress.update()
                if method == "combined":
                    scores = scores + heldout["loss"]
                    predictions = heldout["predicted"]
        return method, scores, predictions, heldout

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_X_seen", None)
        return state

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
        X = indexable_rows(X)
        kept = np.flatnonzero(self.fit(X, y).mask_)
        return _safe_indexing(X, kept), _safe_indexing(y, kept)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # rows are only indexed and handed to the estimator, which may take
        # sparse data (scikit-learn's linear models do)
        tags.input_tags.sparse = True
        tags.target_tags.required = True
        return tags

    def _resolve_method(self):
        is_module = isinstance(self.estimator, torch.nn.Module)
        if self.method == "auto":
            return "self" if is_module else "combined"
        if is_module and self.method in ("combined", "cross-fit"):
            raise ValueError(
                f"method={self.method!r} refits the model on folds, which a plain "
                "torch.nn.Module cannot do; use method='self' or 'loss', or wrap "
                "the module in a skorch NeuralNetClassifier."
            )
        return self.method

    def _model(self, X, y):
        if is_fitted(self.estimator):
            return self.estimator
        return clone(self.estimator).fit(X, y)

    def _in_sample(self, X, y, method):
        """Scores (n,) and predictions (n,) of the model fitted on all rows."""
        model = self.estimator_ = self._model(X, y)
        loss, predictions = in_sample_loss(model, X, y, compute=method != "self")
        if method != "self":
            return loss, predictions
        influence = self.influence
        if influence is None:
            influence = default_influence(model, X, y)
        settings = dict(random_state=self.random_state, verbose=self.verbose)
        self.influence_ = fitted_influence(influence, model, X, y, **settings)
        return self.influence_.self_influence().to_numpy(), predictions

    def _valuation(self, X, y):
        """Minus the values of a DataOOB or KNNShapley, and in-sample predictions."""
        model = self._model(X, y)
        self.valuation_ = fitted_valuation(
            self.method, self.estimator, X, y, random_state=self.random_state
        )
        self.estimator_ = model
        return -self.valuation_.value().to_numpy(), to_numpy(model.predict(X))

    def _n_issues(self, X, y, scores, heldout):
        """Rows to remove: estimated, from ``frac`` or above ``threshold``."""
        n = len(scores)
        if self.threshold is not None:
            return int(np.sum(scores > self.threshold))
        if self.frac != "auto":
            return int(self.frac * n)
        labels = to_numpy(y)
        if heldout is not None:
            proba, classes = heldout["proba"], np.unique(labels)
            return estimate_from_predictions(
                labels, heldout["predicted"], proba, classes
            )
        proba = classes = None
        if is_classification(labels):
            proba, classes = in_sample_proba(self.estimator_, X, y)
        predicted = self.predictions_.to_numpy()
        return estimate_from_predictions(labels, predicted, proba, classes)
