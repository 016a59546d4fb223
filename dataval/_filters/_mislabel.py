"""MislabelFilter: score every training row for a wrong label and drop the worst."""

import warnings
from numbers import Integral, Real

import numpy as np
import pandas as pd
import torch
from scipy import sparse
from sklearn.base import BaseEstimator, clone, is_classifier
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import KFold, StratifiedKFold, check_cv
from sklearn.utils import _safe_indexing
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    StrOptions,
)
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import (
    _check_feature_names,
    _check_n_features,
    check_is_fitted,
)

from .._adapters import adapt_model
from .._estimators.dense.exact import ExactInfluence
from .._estimators.kronecker.ekfac import EKFACInfluence
from .._functional import FunctionalModel
from .._progress import tqdm
from .._validation import check_X_y, to_numpy
from .._valuation._knn import KNNShapley, nearest_neighbour_model
from .._valuation._oob import DataOOB
from ._estimate import count_outliers, estimate_n_issues

#: largest model (trainable parameters) given a dense ExactInfluence by default
DENSE_LIMIT = 5000
# probabilities are clipped here before the log: a row the model calls
# impossible gets a large finite loss rather than infinity
_MIN_PROBABILITY = 1e-12
# integer ``cv`` folds are shuffled (data often come sorted by class, source
# or time) with this fixed seed, so the filter stays deterministic
_FOLD_SEED = 0
_SCORE_NAMES = {
    "combined": "combined_loss",
    "self": "self_influence",
    "cross-fit": "heldout_loss",
    "loss": "loss",
    "data-oob": "neg_data_oob",
    "knn-shapley": "neg_knn_shapley",
}
_VALUATIONS = {"data-oob": DataOOB, "knn-shapley": KNNShapley}
_VALUATIONS_BY_CLASS = {cls: name for name, cls in _VALUATIONS.items()}


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


def _is_fitted(model):
    if isinstance(model, torch.nn.Module):
        return True
    try:
        check_is_fitted(model)
    except NotFittedError:
        return False
    return True


def _indexable(X):
    """``X`` with rows that can be indexed: sparse formats other than CSR/CSC -> CSR."""
    if sparse.issparse(X) and X.format not in ("csr", "csc"):
        return X.tocsr()
    return X


def _is_classification(y):
    return type_of_target(to_numpy(y)) in ("binary", "multiclass")


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
    return (_residuals(model.predict(X), labels) ** 2).sum(1)


def _residuals(predicted, labels):
    """``predicted - labels`` as float64 (n, n_outputs)."""
    n = len(labels)
    return np.asarray(predicted, dtype=np.float64).reshape(n, -1) - np.asarray(
        labels, dtype=np.float64
    ).reshape(n, -1)


def _aligned_proba(model, X, classes):
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


def _torch_predictions(module, X, y):
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
                {"auto", "combined", "self", "cross-fit", "loss"} | set(_VALUATIONS)
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
        X = _indexable(X)
        index = check_X_y(X, y)
        _check_n_features(self, X, reset=True)
        _check_feature_names(self, X, reset=True)
        is_module = isinstance(self.estimator, torch.nn.Module)
        if not is_module and is_classifier(self.estimator):
            check_classification_targets(to_numpy(y))
        method = self._resolve_method()
        is_valuation = not isinstance(method, str) or method in _VALUATIONS
        needs_heldout = method in ("combined", "cross-fit") or (
            self.frac == "auto" and self.threshold is None
        )
        splits = self._splits(X, y) if needs_heldout else None
        if splits is None and method in ("combined", "cross-fit"):
            method = "loss"
        steps = (len(splits) if splits else 0) + (method != "cross-fit")
        with tqdm(
            total=steps, desc="label audit", unit="fit", disable=not self.verbose
        ) as progress:
            heldout = self._cross_fit(X, y, splits, progress) if splits else None
            if method == "cross-fit":
                scores, predictions = heldout["loss"], heldout["predicted"]
            elif is_valuation:
                scores, predictions = self._valuation(X, y)
                method = self.method_
                progress.update()
            else:
                progress.set_postfix_str(method)
                scores, predictions = self._in_sample(X, y, method)
                progress.update()
                if method == "combined":
                    scores = scores + heldout["loss"]
                    predictions = heldout["predicted"]
        self.method_ = method
        self.scores_ = pd.Series(scores, index=index, name=_SCORE_NAMES[method])
        self.labels_ = pd.Series(to_numpy(y), index=index, name="label")
        self.predictions_ = pd.Series(predictions, index=index, name="predicted")
        self.n_issues_ = self._n_issues(X, y, scores, heldout)
        self.noise_rate_ = self.n_issues_ / len(scores)
        self.mask_ = self._keep(scores, y, self.n_issues_)
        # for plot_suspects; a reference, left out of pickles
        self._X_seen = X
        return self

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
        X = _indexable(X)
        kept = np.flatnonzero(self.fit(X, y).mask_)
        return _safe_indexing(X, kept), _safe_indexing(y, kept)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # rows are only indexed and handed to the estimator, which may take
        # sparse data (scikit-learn's linear models do)
        tags.input_tags.sparse = True
        tags.target_tags.required = True
        return tags

    # ---------------------------------------------------------------- methods
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
        if _is_fitted(self.estimator):
            return self.estimator
        return clone(self.estimator).fit(X, y)

    def _in_sample(self, X, y, method):
        """Scores (n,) and predictions (n,) of the model fitted on all rows."""
        model = self._model(X, y)
        self.estimator_ = model
        if isinstance(model, torch.nn.Module):
            proba, _ = _torch_predictions(model, X, y)
            predictions = proba.argmax(1)
            if method == "loss":
                given = proba[np.arange(len(proba)), to_numpy(y).astype(int)]
                return -np.log(np.maximum(given, _MIN_PROBABILITY)), predictions
        else:
            predictions = to_numpy(model.predict(X))
            if method != "self":
                return heldout_loss(model, X, y), predictions
        if self.influence is None:
            influence = default_influence(model, X, y)
        else:
            influence = clone(self.influence)
        params = influence.get_params()
        if self.random_state is not None and "random_state" in params:
            influence.set_params(random_state=self.random_state)
        if self.verbose > 1 and "verbose" in params:
            influence.set_params(verbose=self.verbose - 1)
        self.influence_ = influence.fit(model, X, y)
        return influence.self_influence().to_numpy(), predictions

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
        if isinstance(self.estimator, torch.nn.Module):
            return None
        classifier = is_classifier(self.estimator)
        labels = to_numpy(y)
        n_splits = self.cv
        if classifier and isinstance(self.cv, Integral):
            _, counts = np.unique(labels, return_counts=True)
            n_splits = min(int(self.cv), int(counts.min()))
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
                f"cross-fitting needs at least 2 rows of every class (cv={self.cv!r}); "
                "falling back to in-sample scores for this data.",
                UserWarning,
                stacklevel=4,
            )
            return None
        return list(splitter.split(X, labels))

    def _cross_fit(self, X, y, splits, progress):
        """Held-out loss, prediction and class probabilities of every row."""
        labels = to_numpy(y)
        classes = np.unique(labels) if _is_classification(labels) else None
        loss = np.empty(len(labels))
        predicted = np.empty(len(labels), dtype=object)
        proba = None if classes is None else np.zeros((len(labels), len(classes)))
        for fold, (train, held_out) in enumerate(splits, 1):
            progress.set_postfix_str(f"fold {fold}/{len(splits)}")
            X_train, y_train = _safe_indexing(X, train), _safe_indexing(y, train)
            X_out, y_out = _safe_indexing(X, held_out), _safe_indexing(y, held_out)
            model = clone(self.estimator).fit(X_train, y_train)
            loss[held_out] = heldout_loss(model, X_out, y_out)
            predicted[held_out] = list(to_numpy(model.predict(X_out)))
            if proba is not None:
                proba[held_out] = _aligned_proba(model, X_out, classes)
            progress.update()
        # object array -> the plainest dtype that holds the predictions
        predicted = np.array(predicted.tolist())
        return {"loss": loss, "predicted": predicted, "proba": proba}

    def _n_issues(self, X, y, scores, heldout):
        """Rows to remove: estimated, from ``frac`` or above ``threshold``."""
        n = len(scores)
        if self.threshold is not None:
            return int(np.sum(scores > self.threshold))
        if self.frac != "auto":
            return int(self.frac * n)
        labels = to_numpy(y)
        if not _is_classification(labels):
            if heldout is None:
                residuals = _residuals(self.predictions_.to_numpy(), labels)
            else:
                residuals = _residuals(heldout["predicted"], labels)
            return count_outliers(residuals)
        if heldout is None:
            if isinstance(self.estimator_, torch.nn.Module):
                proba, classes = _torch_predictions(self.estimator_, X, y)
            else:
                classes = np.unique(labels)
                proba = _aligned_proba(self.estimator_, X, classes)
        else:
            proba, classes = heldout["proba"], np.unique(labels)
        codes = np.searchsorted(classes, labels)
        return estimate_n_issues(codes, proba)

    def _keep(self, scores, y, n_issues):
        """Kept rows, bool (n,)."""
        if self.threshold is not None:
            remove = scores > self.threshold
        else:
            order = np.argsort(-scores, kind="stable")
            remove = np.zeros(len(scores), dtype=bool)
            remove[order[:n_issues]] = True
        labels = to_numpy(y)
        if _is_classification(labels):
            for label in np.unique(labels):
                rows = np.flatnonzero(labels == label)
                if remove[rows].all():
                    remove[rows[np.argmin(scores[rows])]] = False
        return ~remove
