"""Cross-validated comparison of influence estimators on one model and data set."""

import warnings
from numbers import Integral, Real
from time import perf_counter

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import clone, is_classifier
from sklearn.exceptions import FitFailedWarning
from sklearn.model_selection import check_cv
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

from .._base import BaseInfluence
from .._validation import check_X_y
from .._valuation._base import BaseValuation
from .._valuation._knn import KNNShapley, nearest_neighbour_model
from .._valuation._oob import DataOOB
from ..datasets import flip_labels
from ._detection import mislabel_detection_auc
from ._ground_truth import lds_per_test, loo_losses, subset_losses
from ._removal import DEFAULT_FRACTIONS, point_removal_curve
from ._retrain import Retrainer, take_rows

METRICS = ("lds", "loo", "mislabel_auc", "removal")
COLUMNS = ["estimator", "fold", "metric", "value", "fit_time", "score_time"]


def _check_estimators(estimators):
    if not isinstance(estimators, dict) or not estimators:
        raise ValueError(
            "estimators must be a non-empty dict of name -> influence or valuation "
            "estimator, e.g. {'exact': ExactInfluence(), 'oob': DataOOB()}; got "
            f"{estimators!r}."
        )
    for name, estimator in estimators.items():
        if not isinstance(estimator, (BaseInfluence, BaseValuation)):
            raise TypeError(
                f"estimators[{name!r}] must be a dataval influence or valuation "
                f"estimator such as ExactInfluence() or DataOOB(), got "
                f"{type(estimator).__name__}."
            )


def _check_scoring(scoring, model):
    names = (scoring,) if isinstance(scoring, str) else tuple(scoring)
    unknown = [name for name in names if name not in METRICS]
    if unknown or not names:
        raise ValueError(
            f"scoring must name one or more of {list(METRICS)}, got {scoring!r}."
        )
    if "mislabel_auc" in names and not is_classifier(model):
        raise ValueError(
            f"scoring='mislabel_auc' flips class labels, so it needs a classifier; "
            f"got a {type(model).__name__}. Use 'lds' or 'loo' for regressors."
        )
    return tuple(dict.fromkeys(names))


def _seeded_clone(estimator, seed):
    """A fresh copy; a ``random_state`` left at ``None`` gets the fold's seed."""
    estimator = clone(estimator)
    if estimator.get_params().get("random_state", 0) is None:
        estimator.set_params(random_state=seed)
    return estimator


def _timed(function, *args):
    start = perf_counter()
    result = function(*args)
    return result, perf_counter() - start


def _fit_valuation(estimator, model, X, y):
    """Fit ``estimator``; KNN-Shapley values rows for a nearest-neighbour proxy."""
    if isinstance(estimator, KNNShapley):
        model = nearest_neighbour_model(model)
    return estimator.fit(model, X, y)


def _values(fitted, X_test, y_test):
    """Training-row values, higher = more valuable (Data-OOB needs no test rows)."""
    if isinstance(fitted, DataOOB):
        return fitted.value()
    return fitted.value(X_test, y_test)


def _reraise_with_key(error, name, fold):
    """Raise ``error`` again, its message naming the estimator and the fold."""
    message = f"estimators[{name!r}] failed on fold {fold}: {error}"
    try:
        renamed = type(error)(message)
    except Exception:  # an exception type that needs other arguments
        renamed = RuntimeError(f"{message} ({type(error).__name__})")
    raise renamed from error


def _failure_message(name, fold, error, error_score):
    return (
        f"estimators[{name!r}] failed on fold {fold} and its results were set to "
        f"error_score={error_score!r}: {type(error).__name__}: {error}"
    )


def _pearson(a, b):
    a, b = a - a.mean(), b - b.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        return float((a @ b) / np.sqrt((a @ a) * (b @ b)))


class _Fold:
    """One split: retrains the model and measures every estimator on it."""

    def __init__(self, fold, train, test, model, X, y, settings, seed):
        self.fold = fold
        self.model = model
        self.settings = settings
        self.seed = seed
        self.rng = np.random.RandomState(seed)
        n_test = settings["n_test"]
        if n_test is not None and len(test) > n_test:
            test = np.sort(self.rng.choice(test, size=n_test, replace=False))
        self.X_train, self.y_train = take_rows(X, train), take_rows(y, train)
        self.X_test, self.y_test = take_rows(X, test), take_rows(y, test)

    def _record(self, name, metric, value, fit_time, score_time):
        if self.settings["verbose"]:
            print(
                f"[fold {self.fold}] {name:>16} {metric:>12} = {value:8.4f}  "
                f"(fit {fit_time:.2f} s, score {score_time:.2f} s)"
            )
        return dict(
            estimator=name,
            fold=self.fold,
            metric=metric,
            value=value,
            fit_time=fit_time,
            score_time=score_time,
        )

    def _measure(self, name, metrics, evaluate, estimator):
        """Records of ``evaluate(estimator)`` -> ``({metric: value}, fit, score time)``.

        A failing estimator gets ``error_score`` for every metric (or the
        error is raised again, naming it, when ``error_score="raise"``).
        """
        error_score = self.settings["error_score"]
        try:
            values, fit_time, score_time = evaluate(estimator)
        except Exception as error:
            if error_score == "raise":
                _reraise_with_key(error, name, self.fold)
            failure = _failure_message(name, self.fold, error, error_score)
            return [
                {**self._record(name, m, error_score, np.nan, np.nan), "error": failure}
                for m in metrics
            ]
        return [self._record(name, m, values[m], fit_time, score_time) for m in metrics]

    def run(self, estimators, scoring):
        records = []
        clean = [metric for metric in scoring if metric in ("lds", "loo")]
        if clean:
            records += self._clean_metrics(estimators, clean)
        if "mislabel_auc" in scoring:
            records += self._mislabel_auc(estimators)
        if "removal" in scoring:
            records += self._removal(estimators)
        return records

    def _clean_metrics(self, estimators, metrics):
        """LDS and LOO agreement of each estimator's scores on the test rows."""
        s = self.settings
        retrainer = Retrainer(
            self.model, self.X_train, self.y_train, random_state=self.seed
        )
        X_test, y_test = self.X_test, self.y_test
        measure = {}
        if "lds" in metrics:
            masks, measured = subset_losses(
                retrainer, s["n_subsets"], s["frac"], X_test, y_test, self.rng
            )
            measure["lds"] = lambda tau: float(
                np.nanmean(lds_per_test(tau, masks, measured))
            )
        if "loo" in metrics:
            n_train = len(retrainer.y)
            rows = self.rng.choice(
                n_train, size=min(s["n_loo"], n_train), replace=False
            )
            loo = loo_losses(retrainer, rows, X_test, y_test)
            measure["loo"] = lambda tau: _pearson(tau[:, rows].ravel(), loo.ravel())

        def evaluate(estimator):
            fitted, fit_time = _timed(
                _seeded_clone(estimator, self.seed).fit,
                retrainer.full_,
                self.X_train,
                self.y_train,
            )
            scores, score_time = _timed(fitted.score, X_test, y_test)
            tau = scores.to_numpy(np.float64)
            values = {metric: measure[metric](tau) for metric in metrics}
            return values, fit_time, score_time

        records = []
        for name, estimator in estimators.items():
            if isinstance(estimator, BaseValuation):
                continue  # values of rows, not per-test-row influences
            records += self._measure(name, metrics, evaluate, estimator)
        return records

    def _mislabel_auc(self, estimators):
        """AUC for the labels flipped in the training fold of a refitted model."""
        s = self.settings
        y_noisy, flipped = flip_labels(
            self.y_train, frac=s["noise"], random_state=self.rng
        )
        model = Retrainer(
            self.model, self.X_train, y_noisy, random_state=self.seed
        ).full_

        def evaluate(estimator):
            fitted, fit_time = self._fit_timed(estimator, model, y_noisy)
            if isinstance(fitted, BaseValuation):
                value, score_time = _timed(_values, fitted, self.X_test, self.y_test)
                suspicion = -value
            elif s["detection"] == "self_influence":
                suspicion, score_time = _timed(fitted.self_influence)
            else:
                value, score_time = _timed(fitted.value, self.X_test, self.y_test)
                suspicion = -value
            auc = mislabel_detection_auc(suspicion.to_numpy(), flipped)
            return {"mislabel_auc": auc}, fit_time, score_time

        records = []
        for name, estimator in estimators.items():
            records += self._measure(name, ["mislabel_auc"], evaluate, estimator)
        return records

    def _fit_timed(self, estimator, model, y):
        """``(fitted, seconds)``: a seeded clone of ``estimator`` fitted on the fold."""
        estimator = _seeded_clone(estimator, self.seed)
        return _timed(_fit_valuation, estimator, model, self.X_train, y)

    def _removal(self, estimators):
        """Mean held-out score along the point-removal curve of each estimator."""
        model = Retrainer(
            self.model, self.X_train, self.y_train, random_state=self.seed
        ).full_
        metrics = ["removal_highest", "removal_lowest"]

        def evaluate(estimator):
            fitted, fit_time = self._fit_timed(estimator, model, self.y_train)
            values, score_time = _timed(_values, fitted, self.X_test, self.y_test)
            curve = point_removal_curve(
                values,
                self.model,
                self.X_train,
                self.y_train,
                self.X_test,
                self.y_test,
                fractions=self.settings["removal_fractions"],
                random_state=self.seed,
            )
            curve = curve[curve["fraction"] > 0]
            scores = {
                f"removal_{order}": float(
                    curve.loc[curve["order"] == order, "score"].mean()
                )
                for order in ("highest", "lowest")
            }
            return scores, fit_time, score_time

        records = []
        for name, estimator in estimators.items():
            records += self._measure(name, metrics, evaluate, estimator)
        return records


def _evaluate_fold(fold, train, test, estimators, model, X, y, scoring, settings, seed):
    return _Fold(fold, train, test, model, X, y, settings, seed).run(
        estimators, scoring
    )


@validate_params(
    {
        "estimators": "no_validation",
        "model": "no_validation",
        "scoring": [str, list, tuple],
        "cv": ["cv_object"],
        "groups": [None, "array-like"],
        "n_test": [None, Interval(Integral, 1, None, closed="left")],
        "n_subsets": [Interval(Integral, 3, None, closed="left")],
        "frac": [Interval(Real, 0, 1, closed="neither")],
        "n_loo": [Interval(Integral, 2, None, closed="left")],
        "noise": [Interval(Real, 0, 1, closed="neither")],
        "detection": [StrOptions({"self_influence", "value"})],
        "removal_fractions": ["array-like"],
        "n_jobs": [None, Integral],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "error_score": [StrOptions({"raise"}), Real],
    },
    prefer_skip_nested_validation=False,
)
def compare_estimators(
    estimators,
    model,
    X,
    y,
    *,
    scoring=("lds",),
    cv=5,
    groups=None,
    n_test=None,
    n_subsets=30,
    frac=0.5,
    n_loo=30,
    noise=0.1,
    detection="self_influence",
    removal_fractions=DEFAULT_FRACTIONS,
    n_jobs=None,
    random_state=None,
    verbose=0,
    error_score=np.nan,
):
    """Compare influence and valuation estimators by cross-validation.

    For each split of ``cv``, the model is fitted on the training fold (as
    :func:`~dataval.metrics.loo_influence` refits it: same settings, one
    seed), each estimator is cloned and fitted to it, and the held-out fold
    serves as test rows for every metric in ``scoring``:

    ``"lds"``
        :func:`~dataval.metrics.linear_datamodeling_score` of
        ``score(X_test, y_test)``, with ``n_subsets`` refits on random
        fractions ``frac`` of the training fold (shared by the estimators).
    ``"loo"``
        Pearson correlation, over all (test row, training row) pairs, between
        ``score(X_test, y_test)`` and
        :func:`~dataval.metrics.loo_influence` for ``n_loo`` random training
        rows. Scale-free, so TracIn (not in loss units) is comparable.
    ``"mislabel_auc"``
        A fraction ``noise`` of the training fold's labels is flipped, the
        model refitted on them, each estimator fitted to it, and
        :func:`~dataval.metrics.mislabel_detection_auc` computed for the
        flipped rows with ``detection`` as suspicion: ``self_influence()``
        or ``-value(X_test, y_test)`` (rows that hurt the clean held-out
        loss). Classifiers only. Valuation estimators use minus their
        ``value(X_test, y_test)`` (``value()`` for Data-OOB).
    ``"removal"``
        The point-removal curve (:func:`~dataval.metrics.point_removal_curve`):
        the training rows with the highest (``"removal_highest"``, lower is
        better) or lowest values (``"removal_lowest"``, higher is better) are
        removed by the fractions ``removal_fractions``, the model refitted
        and scored on the held-out fold (its ``score``, e.g. accuracy); the
        value reported is the mean score over the fractions. Influence
        estimators value rows by ``value(X_test, y_test)``.

    Valuation estimators (:class:`~dataval.DataOOB`,
    :class:`~dataval.KNNShapley`, :class:`~dataval.ShapleyValuation`,
    :class:`~dataval.BanzhafValuation`) value rows, not pairs: they take part
    in ``"mislabel_auc"`` and ``"removal"`` and are left out of ``"lds"``
    and ``"loo"``. KNN-Shapley values rows for ``model`` when it is a
    nearest-neighbour classifier, else for ``KNeighborsClassifier()``.

    Parameters
    ----------
    estimators : dict of str to influence or valuation estimator
        The estimators to compare, e.g. ``{"exact": ExactInfluence(),
        "oob": DataOOB()}``;
        each is cloned per fold, and a ``random_state`` left at ``None`` is
        set to the fold's seed.
    model : scikit-learn estimator, Pipeline or skorch net
        The model to explain, fitted or not: it is refitted on every
        training fold (see :func:`~dataval.metrics.loo_influence`).
    X : array-like or DataFrame of shape (n_samples, ...)
    y : array-like or Series of shape (n_samples, ...)
    scoring : str or list of str, default=("lds",)
        Metrics among ``"lds"``, ``"loo"``, ``"mislabel_auc"`` and
        ``"removal"``.
    cv : int, cross-validation generator or iterable, default=5
        As in :func:`sklearn.model_selection.cross_validate`: an int is a
        (stratified for classifiers) K-fold.
    groups : array-like of shape (n_samples,), default=None
        Group labels for group splitters.
    n_test : int, default=None
        Held-out rows used per fold (a random subset); ``None`` uses all.
    n_subsets : int, default=30
        Refits per fold for ``"lds"``.
    frac : float, default=0.5
        Fraction of the training fold in each LDS subset.
    n_loo : int, default=30
        Training rows left out (one refit each) per fold for ``"loo"``.
    noise : float, default=0.1
        Fraction of training labels flipped for ``"mislabel_auc"``.
    detection : {"self_influence", "value"}, default="self_influence"
        Suspicion score of influence estimators for ``"mislabel_auc"``.
    removal_fractions : array-like of float, default=(0.1, 0.2, 0.3, 0.4, 0.5)
        Fractions of the training fold removed for ``"removal"``.
    n_jobs : int, default=None
        Folds run in parallel with joblib; ``-1`` uses every core.
    random_state : int, RandomState instance or None, default=None
        Seeds each fold (test rows, subsets, flips, refits), so that results
        do not depend on ``n_jobs``. The splits are those of ``cv``.
    verbose : int, default=0
        Print one line per result (and joblib's progress) when positive.
    error_score : "raise" or float, default=np.nan
        As in :func:`sklearn.model_selection.cross_validate`: the value
        recorded for every metric of an estimator whose ``fit`` or scoring
        raises on a fold (its times are NaN), with a
        :class:`~sklearn.exceptions.FitFailedWarning` naming its key, the
        fold and the error; the other estimators' results are kept. With
        ``"raise"`` the error is raised again, its message starting with
        ``estimators[<key>] failed on fold <fold>``.

    Returns
    -------
    results : DataFrame
        Tidy, one row per (estimator, fold, metric), with columns
        ``estimator``, ``fold``, ``metric``, ``value``, ``fit_time`` (seconds
        of the estimator's ``fit``) and ``score_time`` (seconds of the
        ``score``, ``self_influence`` or ``value`` call the metric used;
        ``"lds"`` and ``"loo"`` share one fit and one score). The first fit
        in a process also pays torch's one-time set-up. Summarize with
        ``results.groupby(["estimator", "metric"])["value"].agg(["mean",
        "std"])``.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from dataval import ExactInfluence, TracIn
    >>> from dataval.model_selection import compare_estimators
    >>> X, y = load_iris(return_X_y=True)
    >>> model = make_pipeline(
    ...     StandardScaler(), LogisticRegression(solver="newton-cholesky", tol=1e-8)
    ... )
    >>> results = compare_estimators(
    ...     {"exact": ExactInfluence(), "tracin": TracIn()},
    ...     model,
    ...     X,
    ...     y,
    ...     scoring=["lds", "mislabel_auc"],
    ...     cv=2,
    ...     n_subsets=10,
    ...     random_state=0,
    ... )
    >>> results.shape
    (8, 6)
    >>> results.groupby(["metric", "estimator"])["value"].mean().index.tolist()
    [('lds', 'exact'), ('lds', 'tracin'), ('mislabel_auc', 'exact'), ('mislabel_auc', 'tracin')]
    """
    _check_estimators(estimators)
    scoring = _check_scoring(scoring, model)
    check_X_y(X, y)
    splitter = check_cv(cv, y, classifier=is_classifier(model))
    splits = list(splitter.split(X, y, groups))
    seeds = check_random_state(random_state).randint(2**31 - 1, size=len(splits))
    settings = dict(
        n_test=n_test,
        n_subsets=n_subsets,
        frac=frac,
        n_loo=n_loo,
        noise=noise,
        detection=detection,
        removal_fractions=removal_fractions,
        verbose=verbose,
        error_score=error_score,
    )
    results = Parallel(n_jobs=n_jobs, verbose=verbose)(
        delayed(_evaluate_fold)(
            fold, train, test, estimators, model, X, y, scoring, settings, seed
        )
        for fold, ((train, test), seed) in enumerate(zip(splits, seeds))
    )
    records = [record for fold in results for record in fold]
    # warned here, not in the workers: joblib's processes would lose them
    for failure in dict.fromkeys(r["error"] for r in records if "error" in r):
        warnings.warn(failure, FitFailedWarning, stacklevel=2)
    return pd.DataFrame(records, columns=COLUMNS)
