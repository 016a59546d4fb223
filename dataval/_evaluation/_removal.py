"""The point-removal curve: drop the highest- or lowest-valued rows, refit, score."""

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.metrics import check_scoring

from .._numerics.seeding import draw_seed
from .._validation import check_X_y, to_numpy
from .._valuation._base import seeded_clone, take

DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5)


def _refit_score(model, X, y, keep, X_val, y_val, scorer):
    fitted = clone(model).fit(take(X, keep), take(y, keep))
    return float(scorer(fitted, X_val, y_val))


def point_removal_curve(
    values,
    model,
    X,
    y,
    X_val,
    y_val,
    *,
    fractions=DEFAULT_FRACTIONS,
    scoring=None,
    n_jobs=None,
    random_state=None,
):
    """Validation score after removing the highest- or lowest-valued training rows.

    The standard check of a data valuation: removing the most valuable rows
    first should hurt the model fastest, removing the least valuable (e.g.
    mislabeled) rows first should hurt it least or help. For each fraction
    the model is refitted on the remaining rows.

    Parameters
    ----------
    values : Series or array-like of shape (n_train,)
        Value of each training row, higher = more valuable (e.g. the output
        of ``value`` of any dataval estimator).
    model : scikit-learn estimator
        Cloned and refitted for every point of the curve (a
        ``random_state`` left at None gets one seed for all refits).
    X : array-like or DataFrame of shape (n_train, n_features)
    y : array-like or Series of shape (n_train,)
    X_val, y_val : validation rows the refitted models are scored on.
    fractions : sequence of float in [0, 1), default=(0.1, 0.2, 0.3, 0.4, 0.5)
        Fractions of the training rows removed.
    scoring : str, callable or None, default=None
        As in :func:`sklearn.model_selection.cross_val_score`; None uses the
        model's ``score``.
    n_jobs : int, default=None
        Refits in parallel with joblib.
    random_state : int, RandomState instance or None, default=None
        Seed of the refits.

    Returns
    -------
    curve : DataFrame
        Tidy, columns ``order`` (``"highest"`` or ``"lowest"`` removed
        first), ``fraction`` and ``score``; ``fraction=0`` is the model on
        all rows.

    Examples
    --------
    >>> from sklearn.neighbors import KNeighborsClassifier
    >>> from sklearn.naive_bayes import GaussianNB
    >>> from dataval import KNNShapley
    >>> from dataval.datasets import load_mislabeled_digits
    >>> from dataval.metrics import point_removal_curve
    >>> X, y, _ = load_mislabeled_digits(noise=0.2)
    >>> values = KNNShapley().fit(KNeighborsClassifier(), X[:600], y[:600]).value()
    >>> curve = point_removal_curve(
    ...     values, GaussianNB(), X[:600], y[:600], X[600:], y[600:],
    ...     fractions=[0.2],
    ... )
    >>> curve.pivot(index="fraction", columns="order", values="score").shape
    (2, 2)
    """
    check_X_y(X, y)
    check_X_y(X_val, y_val, name_X="X_val", name_y="y_val")
    scores = np.asarray(to_numpy(values), dtype=np.float64)
    if scores.shape != (len(to_numpy(y)),) or not np.isfinite(scores).all():
        raise ValueError(
            f"values must hold one finite value per training row ({len(to_numpy(y))}), "
            f"got shape {scores.shape}; pass e.g. estimator.value(X_val, y_val)."
        )
    fractions = [float(f) for f in fractions]
    if not fractions or not all(0 <= f < 1 for f in fractions):
        raise ValueError(f"fractions must lie in [0, 1), got {fractions!r}.")
    scorer = check_scoring(model, scoring=scoring)
    model = seeded_clone(model, draw_seed(random_state))
    n = len(scores)
    points = [("highest", 0.0, np.arange(n))]
    for order, sign in (("highest", -1.0), ("lowest", 1.0)):
        ranked = np.argsort(sign * scores, kind="stable")  # removed first
        points += [(order, f, np.sort(ranked[int(f * n) :])) for f in fractions]
    results = Parallel(n_jobs=n_jobs)(
        delayed(_refit_score)(model, X, y, keep, X_val, y_val, scorer)
        for _, _, keep in points
    )
    curve = [(order, f, s) for (order, f, _), s in zip(points, results)]
    curve.insert(len(fractions) + 1, ("lowest", 0.0, results[0]))
    return pd.DataFrame(curve, columns=["order", "fraction", "score"])
