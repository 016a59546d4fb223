"""Ground truth by retraining: leave-one-out influence and the LDS."""

from numbers import Integral, Real

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from scipy.stats import rankdata
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import (
    Interval,
    StrOptions,
    validate_params,
)

from .._validation import check_X_y, to_numpy
from ._retrain import Retrainer

_RETRAIN_CONSTRAINTS = {
    "loss": [StrOptions({"auto"}), callable],
    "random_state": ["random_state"],
    "n_jobs": [None, Integral],
    "verbose": ["verbose"],
}


def loo_losses(retrainer, positions, X_test, y_test, n_jobs=None, verbose=0):
    """(n_test, len(positions)): test loss without each row minus with all rows."""
    full = retrainer.losses(retrainer.full_, X_test, y_test)  # (n_test,)
    columns = Parallel(n_jobs=n_jobs, verbose=verbose)(
        delayed(retrainer.losses_without)([j], X_test, y_test) for j in positions
    )
    return np.stack(columns, 1).reshape(len(full), -1) - full[:, None]


def subset_losses(retrainer, n_subsets, frac, X_test, y_test, rng, **parallel):
    """Random training subsets (n_subsets, n_train) bool and their test losses.

    The losses, (n_subsets, n_test), are those of the model refitted on each
    subset.
    """
    n = len(retrainer.y)
    size = int(round(frac * n))
    if not 1 <= size < n:
        raise ValueError(
            f"frac={frac} keeps {size} of {n} training rows per subset; it must "
            "keep at least one row and leave at least one out."
        )
    masks = np.zeros((n_subsets, n), dtype=bool)
    for mask in masks:
        mask[rng.choice(n, size=size, replace=False)] = True
    measured = Parallel(**parallel)(
        delayed(retrainer.losses_on)(np.flatnonzero(mask), X_test, y_test)
        for mask in masks
    )
    return masks, np.stack(measured)


def lds_per_test(scores, masks, measured):
    """Spearman over subsets between predicted and measured loss, per test row.

    ``scores`` (n_test, n_train), ``masks`` (n_subsets, n_train) bool,
    ``measured`` (n_subsets, n_test). NaN where either side is constant.
    """
    # a subset's loss is predicted to rise by the influence of the rows it leaves out
    predicted = (~masks).astype(np.float64) @ scores.T  # (n_subsets, n_test)
    a = rankdata(predicted, axis=0)
    b = rankdata(measured, axis=0)
    a -= a.mean(0)
    b -= b.mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(0) / np.sqrt((a**2).sum(0) * (b**2).sum(0))


def _check_positions(indices, n_train):
    if indices is None:
        return np.arange(n_train)
    positions = np.asarray(to_numpy(indices))
    if positions.ndim != 1 or positions.dtype.kind not in "iu":
        raise ValueError(
            "indices must be a 1-D array of integer row positions (0 to "
            f"{n_train - 1}), got {positions.dtype} values of shape {positions.shape}; "
            "for pandas labels pass X.index.get_indexer(labels)."
        )
    if len(positions) and (positions.min() < 0 or positions.max() >= n_train):
        raise ValueError(
            f"indices must be row positions between 0 and {n_train - 1}, got values "
            f"from {positions.min()} to {positions.max()}."
        )
    if len(np.unique(positions)) != len(positions):
        raise ValueError("indices contains repeated positions; give each row once.")
    return positions


def _test_frame_index(X_test, y_test):
    return pd.Index(check_X_y(X_test, y_test, name_X="X_test", name_y="y_test"))


@validate_params(
    {
        **_RETRAIN_CONSTRAINTS,
        "indices": [None, "array-like"],
        "warm_start": ["boolean"],
    },
    prefer_skip_nested_validation=False,
)
def loo_influence(
    estimator,
    X,
    y,
    X_test,
    y_test,
    indices=None,
    *,
    loss="auto",
    warm_start=False,
    random_state=None,
    n_jobs=None,
    verbose=0,
):
    """Leave-one-out influence, measured by retraining without each row.

    ``loo[i, j] = loss(test_i; refit without j) - loss(test_i; refit on all)``:
    the quantity every influence estimator approximates, in the same units
    (the per-row loss dataval reads from the model) and with the same sign,
    positive = helpful.

    Every refit uses the same procedure and the same seed, and the reference
    is the model refitted on all rows by that procedure, so that optimizer
    noise cancels as far as it can:

    - scikit-learn estimators are cloned and refitted; a ``random_state``
      parameter left at ``None`` is set to the shared seed.
      The refits differ from the full model by ``O(1/n)``, so the optimizer
      must converge far below that: give convex models a tight tolerance,
      e.g. ``LogisticRegression(solver="newton-cholesky", tol=1e-10)``.
    - skorch nets are cloned and fitted (fitting initializes them) after
      ``torch.manual_seed(seed)``: every refit starts from the same weights
      and draws the same shuffles (a module given as an instance, e.g. that
      of a fitted net, is re-initialized by the ``reset_parameters()`` of its
      submodules). The difference still mixes the removal
      with a change of training trajectory; average over seeds for nets.
    - The leading steps of a Pipeline are fitted once on all rows (kept when
      the Pipeline is already fitted) and held fixed, as the influence
      estimators treat them; only the last step is refitted.

    Parameters
    ----------
    estimator : scikit-learn estimator, Pipeline or skorch net
        The model to retrain, fitted or not; only its settings are used.
        Supported: those dataval scores (LogisticRegression,
        LinearRegression, Ridge, MLPClassifier, MLPRegressor, a Pipeline
        ending in one) and skorch nets.
    X : array-like or DataFrame of shape (n_train, ...)
        Training data.
    y : array-like or Series of shape (n_train, ...)
        Training targets.
    X_test : array-like or DataFrame of shape (n_test, ...)
    y_test : array-like or Series of shape (n_test, ...)
    indices : array-like of int, default=None
        Positions of the training rows to leave out, one at a time (one
        refit each); ``None`` means all rows.
    loss : "auto" or callable, default="auto"
        Per-row loss of skorch nets, as the estimators' ``loss`` parameter.
    warm_start : bool, default=False
        Start each refit from the full-data solution. Only allowed for
        LogisticRegression, whose L2-penalized objective has a single
        optimum, so the start changes the time, not the result (up to
        ``tol``); for nets it would bias the refit towards the full model.
    random_state : int, RandomState instance or None, default=None
        The seed shared by every refit (``torch.manual_seed`` for skorch nets,
        ``random_state`` for scikit-learn estimators that leave it at
        ``None``): an int is used as is, otherwise one seed is drawn.
    n_jobs : int, default=None
        Refits run in parallel with joblib; ``-1`` uses every core.
    verbose : int, default=0
        joblib progress messages.

    Returns
    -------
    loo : DataFrame of shape (n_test, len(indices)), float64
        Laid out as :meth:`~dataval.ExactInfluence.score`: index ``test``
        (``X_test.index`` or a RangeIndex), columns ``train`` (the labels of
        the rows left out).

    See Also
    --------
    linear_datamodeling_score : Ground truth for sets of rows left out.

    Examples
    --------
    >>> from sklearn.datasets import load_breast_cancer
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.preprocessing import scale
    >>> from dataval import ExactInfluence
    >>> from dataval.metrics import loo_influence
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> X = scale(X)[:200]
    >>> y = y[:200]
    >>> clf = LogisticRegression(solver="newton-cholesky", tol=1e-10)
    >>> loo = loo_influence(clf, X[20:], y[20:], X[:20], y[:20], indices=range(5))
    >>> loo.shape
    (20, 5)
    >>> clf.fit(X[20:], y[20:])
    LogisticRegression(...)
    >>> predicted = ExactInfluence(damping=0).fit(clf, X[20:], y[20:])
    >>> error = predicted.score(X[:20], y[:20]).iloc[:, :5] - loo
    >>> bool(error.abs().max().max() < 0.1 * loo.abs().max().max())
    True
    """
    train_index = check_X_y(X, y)
    test_index = _test_frame_index(X_test, y_test)
    positions = _check_positions(indices, len(train_index))
    retrainer = Retrainer(
        estimator, X, y, loss=loss, warm_start=warm_start, random_state=random_state
    )
    values = loo_losses(retrainer, positions, X_test, y_test, n_jobs, verbose)
    return pd.DataFrame(
        values,
        index=test_index.rename("test"),
        columns=pd.Index(train_index[positions]).rename("train"),
    )


@validate_params(
    {
        **_RETRAIN_CONSTRAINTS,
        "scores": ["array-like"],
        "n_subsets": [Interval(Integral, 3, None, closed="left")],
        "frac": [Interval(Real, 0, 1, closed="neither")],
        "return_per_test": ["boolean"],
    },
    prefer_skip_nested_validation=False,
)
def linear_datamodeling_score(
    scores,
    estimator,
    X,
    y,
    X_test,
    y_test,
    *,
    n_subsets=50,
    frac=0.5,
    loss="auto",
    random_state=None,
    n_jobs=None,
    verbose=0,
    return_per_test=False,
):
    """Linear datamodeling score (LDS): do summed scores rank retrained models?

    Draws ``n_subsets`` random subsets ``S_m`` of ``round(frac * n)``
    training rows and refits the model on each (as :func:`loo_influence`
    does: same procedure, one shared seed). For a test row ``i`` the
    influence scores ``tau`` predict the loss of the refit on ``S_m`` to
    rise, from the full model's, by the influence of the rows left out:

        predicted_i(S_m) = sum_{j not in S_m} tau[i, j]
                         = sum_j tau[i, j] - sum_{j in S_m} tau[i, j].

    ``LDS_i`` is the Spearman rank correlation over the subsets between
    ``predicted_i(S_m)`` and the measured test loss ``loss(test_i; refit on
    S_m)``; the LDS is the mean of ``LDS_i`` over the test rows. This is the
    score of TRAK (Park et al., 2023) and the dattri benchmark with the test
    loss as the model output: since a loss falls when helpful rows are
    added, their ``sum_{j in S} tau`` enters with a minus sign. 1 is a
    perfect ranking, 0 none; the summed first-order prediction caps it
    below 1 for large subsets removed.

    Parameters
    ----------
    scores : DataFrame or array-like of shape (n_test, n_train)
        Influence of every training row (columns in the order of ``X``) on
        every test row, e.g. ``estimator.score(X_test, y_test)``.
    estimator : scikit-learn estimator, Pipeline or skorch net
        The model to retrain, fitted or not (see :func:`loo_influence`).
    X : array-like or DataFrame of shape (n_train, ...)
    y : array-like or Series of shape (n_train, ...)
    X_test : array-like or DataFrame of shape (n_test, ...)
    y_test : array-like or Series of shape (n_test, ...)
    n_subsets : int, default=50
        Number of random subsets, one refit each.
    frac : float, default=0.5
        Fraction of the training rows in each subset.
    loss : "auto" or callable, default="auto"
        Per-row loss of skorch nets, as the estimators' ``loss`` parameter.
    random_state : int, RandomState instance or None, default=None
        Seeds the refits (as in :func:`loo_influence`) and draws the subsets.
    n_jobs : int, default=None
        Refits run in parallel with joblib.
    verbose : int, default=0
        joblib progress messages.
    return_per_test : bool, default=False
        Also return ``LDS_i`` for every test row.

    Returns
    -------
    lds : float
        Mean over the test rows of ``LDS_i``, leaving out rows where it is
        undefined (a constant prediction or loss).
    per_test : Series indexed by ``test``
        ``LDS_i``; only when ``return_per_test=True``.

    See Also
    --------
    loo_influence : Ground truth for one row left out at a time.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.model_selection import train_test_split
    >>> from dataval import ExactInfluence
    >>> from dataval.metrics import linear_datamodeling_score
    >>> X, X_test, y, y_test = train_test_split(
    ...     *load_iris(return_X_y=True), test_size=20, random_state=0
    ... )
    >>> clf = LogisticRegression(tol=1e-10, max_iter=10_000).fit(X, y)
    >>> scores = ExactInfluence().fit(clf, X, y).score(X_test, y_test)
    >>> lds = linear_datamodeling_score(
    ...     scores, clf, X, y, X_test, y_test, n_subsets=20, random_state=0
    ... )
    >>> bool(lds > 0.5)
    True
    """
    train_index = check_X_y(X, y)
    test_index = _test_frame_index(X_test, y_test)
    tau = np.asarray(to_numpy(scores), dtype=np.float64)
    expected = (len(test_index), len(train_index))
    if tau.shape != expected:
        raise ValueError(
            f"scores has shape {tau.shape}, expected (n_test, n_train) = {expected}: "
            "one row per row of X_test and one column per row of X, as returned by "
            "estimator.score(X_test, y_test)."
        )
    if not np.isfinite(tau).all():
        raise ValueError("scores contains NaN or infinity.")
    rng = check_random_state(random_state)
    retrainer = Retrainer(estimator, X, y, loss=loss, random_state=random_state)
    masks, measured = subset_losses(
        retrainer, n_subsets, frac, X_test, y_test, rng, n_jobs=n_jobs, verbose=verbose
    )
    per_test = lds_per_test(tau, masks, measured)
    lds = float(np.nanmean(per_test)) if np.isfinite(per_test).any() else np.nan
    if return_per_test:
        return lds, pd.Series(per_test, index=test_index.rename("test"), name="lds")
    return lds
