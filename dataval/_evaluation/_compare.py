"""Cross-validated comparison of influence and valuation estimators on one model."""

import warnings
from numbers import Integral, Real

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import is_classifier
from sklearn.exceptions import FitFailedWarning
from sklearn.model_selection import check_cv
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

from .._base import BaseInfluence
from .._validation import check_X_y, final_step
from .._valuation._base import BaseValuation
from ._fold import Fold
from ._removal import DEFAULT_FRACTIONS
from ._retrain import WITH_GRADIENTS, has_gradients

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


def _check_model(model, estimators):
    """TypeError unless ``model`` can be refitted, with gradients where needed."""
    if not (hasattr(model, "fit") and hasattr(model, "get_params")):
        raise TypeError(
            "compare_estimators refits model on every training fold, so it must be "
            "a scikit-learn estimator or a skorch net; got a "
            f"{type(model).__name__}. Wrap a torch module in a skorch "
            "NeuralNetClassifier or NeuralNetRegressor."
        )
    influence = [k for k, e in estimators.items() if isinstance(e, BaseInfluence)]
    if influence and not has_gradients(model):
        raise TypeError(
            f"estimators[{influence[0]!r}] is an influence estimator, which needs "
            f"the gradients of model, but dataval reads none from a "
            f"{type(final_step(model)).__name__}. Compare valuation estimators only "
            "(DataOOB, KNNShapley, ShapleyValuation, BanzhafValuation), which "
            f"retrain any scikit-learn model, or pass {WITH_GRADIENTS}."
        )


def _check_scoring(scoring, model, estimators):
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
    clean = [name for name in names if name in ("lds", "loo")]
    if clean and not any(isinstance(e, BaseInfluence) for e in estimators.values()):
        raise ValueError(
            f"scoring {clean} compares influence scores of (test, training) row "
            "pairs with retraining, but estimators holds valuation estimators "
            "only; use scoring=['mislabel_auc', 'removal']."
        )
    return tuple(dict.fromkeys(names))


def _evaluate_fold(fold, train, test, estimators, model, X, y, scoring, settings, seed):
    return Fold(fold, train, test, model, X, y, settings, seed).run(estimators, scoring)


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
    Valuation estimators alone compare on any scikit-learn model (a
    ``RandomForestClassifier``, an ``SVC``): the point-removal curve
    refits clones of it. Influence estimators, ``"lds"`` and ``"loo"`` need
    a model whose gradients dataval reads.

    Parameters
    ----------
    estimators : dict of str to influence or valuation estimator
        The estimators to compare, e.g. ``{"exact": ExactInfluence(),
        "oob": DataOOB()}``;
        each is cloned per fold, and a ``random_state`` left at ``None`` is
        set to the fold's seed.
    model : scikit-learn estimator, Pipeline or skorch net
        The model to explain, fitted or not: it is refitted on every
        training fold (see :func:`~dataval.metrics.loo_influence`). With
        influence estimators: a skorch net or a model dataval reads
        gradients from (``LogisticRegression``, ``LinearRegression``,
        ``Ridge``, ``MLPClassifier``, ``MLPRegressor``, alone or ending a
        Pipeline); with valuation estimators only, any scikit-learn
        estimator.
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
    _check_model(model, estimators)
    scoring = _check_scoring(scoring, model, estimators)
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
