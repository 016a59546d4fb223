"""Shapley and Banzhaf values of any model by Monte Carlo retraining.

Both estimate a semivalue of the utility ``U(S)`` (the validation score of
the model refitted on the rows ``S``) from random samples, in rounds:
``batch_size`` samples are drawn in the calling process, split among the
``n_jobs`` workers, and their results summed in the order they were drawn,
so values depend on ``random_state`` but not on ``n_jobs``. The budget and
the convergence criterion are checked between rounds.
"""

from math import ceil
from numbers import Integral, Real
from time import perf_counter

import numpy as np
from joblib import Parallel, delayed
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from .._validation import check_X_y
from ._base import (
    BaseValuation,
    Utility,
    draw_seed,
    progress,
    seeded_clone,
    split_tasks,
)


def _permutation_marginals(utility, permutations, u_empty, u_full, threshold):
    """Marginal contributions (k, n) along each permutation, and the fits made.

    ``threshold`` (truncation): once ``|U(N) - U(prefix)| <= threshold`` the
    rows left in the permutation get 0 without fitting. ``U(N)`` is known,
    so the last row of an untruncated permutation needs no fit either.
    """
    n = permutations.shape[1]
    marginals = np.zeros(permutations.shape)
    fits = 0
    for k, permutation in enumerate(permutations):
        previous = u_empty
        for position in range(n):
            if threshold is not None and abs(u_full - previous) <= threshold:
                break
            if position == n - 1:
                current = u_full
            else:
                current = utility(permutation[: position + 1])
                fits += 1
            marginals[k, permutation[position]] = current - previous
            previous = current
    return marginals, fits


def _subset_utilities(utility, masks):
    """``U(S)`` (k,) for the subsets given as boolean rows of ``masks`` (k, n)."""
    return np.array([utility(np.flatnonzero(mask)) for mask in masks])


class _SampledValuation(BaseValuation):
    """Rounds of samples, budget and convergence; subclasses say what a sample is."""

    _parameter_constraints: dict = {
        **BaseValuation._parameter_constraints,
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "scoring": [None, str, callable],
        "max_fits": [None, Interval(Integral, 1, None, closed="left")],
        "max_time": [None, Interval(Real, 0, None, closed="neither")],
        "tol": [None, Interval(Real, 0, None, closed="neither")],
        "error_score": [StrOptions({"raise"}), Real],
    }

    def fit(self, model, X, y):
        """Store a seeded clone of ``model`` and the training data.

        The fits happen in :meth:`value`, which needs the validation set.

        Parameters
        ----------
        model : scikit-learn estimator, fitted or not
            Cloned (a ``random_state`` left at ``None`` is set from this
            estimator's ``random_state``, so that a subset always gives the
            same model); never modified.
        X : array-like or DataFrame of shape (n_train, n_features)
        y : array-like or Series of shape (n_train,) or (n_train, n_outputs)

        Returns
        -------
        self
        """
        model = self._fit_data(model, X, y)
        if self.n_train_ < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 training rows, got "
                f"{self.n_train_}; one row's value is simply U({{row}}) - U(empty set)."
            )
        self._model = seeded_clone(model, draw_seed(self.random_state))
        return self

    def value(self, X_val, y_val):
        """Estimate the value of every training row on a validation set.

        Refits the model on random subsets until the values converge (see
        ``tol``) or the budget (``max_fits``, ``max_time``) is spent.

        Parameters
        ----------
        X_val : array-like or DataFrame of shape (n_val, n_features)
        y_val : array-like or Series of shape (n_val,) or (n_val, n_outputs)

        Returns
        -------
        values : pandas.Series indexed by ``train``
            Higher = more valuable, in the units of ``scoring``. The run's
            figures are in ``n_fits_``, ``n_samples_``, ``converged_`` and
            ``stderr_``.
        """
        check_is_fitted(self)
        if X_val is None or y_val is None:
            raise ValueError(
                f"{type(self).__name__}.value needs a validation set to score the "
                "refitted models on, got None; hold out rows and pass "
                "value(X_val, y_val) (DataOOB and KNNShapley().value() need none)."
            )
        check_X_y(X_val, y_val, name_X="X_val", name_y="y_val")
        utility = Utility(
            self._model, self._X, self._y, X_val, y_val, self.scoring, self.error_score
        )
        rng = check_random_state(self.random_state)
        budget = 100 * self.n_train_ if self.max_fits is None else self.max_fits
        stats = self._start(utility)
        start, fits, n_samples = perf_counter(), 0, 0
        bar = progress(self.verbose, budget, type(self).__name__, "fit")
        with Parallel(n_jobs=self.n_jobs) as parallel:
            # at least one round; then until converged or out of budget
            while True:
                samples = self._draw(rng, budget - fits)
                function, args = self._task(stats)
                pieces = split_tasks(samples, self.n_jobs)
                results = parallel(
                    delayed(function)(utility, samples[piece], *args)
                    for piece in pieces
                )
                round_fits = sum(
                    self._update(stats, samples[piece], result)
                    for piece, result in zip(pieces, results)
                )
                fits += round_fits
                n_samples += len(samples)
                bar.update(round_fits)
                values, stderr = self._estimates(stats)
                converged = self.tol is not None and _converged(
                    values, stderr, self.tol
                )
                out_of_time = (
                    self.max_time is not None and perf_counter() - start > self.max_time
                )
                if converged or out_of_time or fits >= budget:
                    break
        bar.close()
        self.n_fits_, self.n_samples_, self.converged_ = fits, n_samples, converged
        if not np.isfinite(stderr).all():
            raise ValueError(
                f"max_fits={budget} (or max_time={self.max_time}) allowed too few "
                f"samples ({n_samples}) to estimate every value; raise the budget."
            )
        self.stderr_ = self._series(stderr, "stderr")
        return self._series(values, self._value_name)


def _converged(values, stderr, tol):
    """Every standard error below ``tol`` times the spread of the values."""
    return bool(np.isfinite(stderr).all() and stderr.max() <= tol * values.std())


class ShapleyValuation(_SampledValuation):
    """Shapley values of training rows for any model, by truncated Monte Carlo.

    The Shapley value of row ``i`` is its marginal contribution
    ``U(S + i) - U(S)`` averaged over the orders in which the rows could be
    added, where ``U(S)`` is ``scoring`` on ``(X_val, y_val)`` of the model
    refitted on the rows ``S``. Values add up to ``U(all rows) - U(empty)``
    (efficiency). Truncated Monte Carlo (Ghorbani & Zou, 2019) walks random
    permutations, one refit per prefix, and stops a permutation once the
    prefix scores within ``truncation_tol`` of the full model: the remaining
    rows get 0, which saves most fits on larger data sets.

    Degenerate subsets: for a classifier, a subset with one class (or none)
    is scored as a model predicting that class, and the empty set as one
    predicting the most frequent training class; for a regressor, the empty
    set as one predicting the mean training target. A fit that still fails
    (e.g. ``KNeighborsClassifier(n_neighbors=5)`` on 3 rows) raises, or
    scores ``error_score`` when it is a number.

    Parameters
    ----------
    batch_size : int, default=16
        Permutations per round (split among the ``n_jobs`` workers). Budget
        and convergence are checked between rounds.
    random_state : int, RandomState instance or None, default=None
        Seeds the permutations and any ``random_state`` of the model left at
        ``None`` (one seed for every refit).
    verbose : int, default=0
        Show a progress bar over the fit budget, with the time left.
    n_jobs : int, default=None
        Refit in parallel with joblib (processes by default; a dask cluster
        through ``joblib.parallel_config(backend="dask")``). Values do not
        depend on it.
    scoring : str, callable or None, default=None
        The utility, as in :func:`sklearn.model_selection.cross_val_score`:
        a scorer name (``"accuracy"``, ``"neg_log_loss"``, ``"r2"``), a
        callable ``scorer(estimator, X, y)``, or None for the model's
        ``score`` method.
    max_fits : int, default=None
        Budget in refits; no new round starts once it is spent, and the last
        round is sized to stay within one permutation of it. None:
        ``100 * n_train``.
    max_time : float, default=None
        Budget in seconds, checked between rounds.
    tol : float or None, default=0.05
        Convergence: stop once every value's standard error is below ``tol``
        times the standard deviation of the values across rows (rankings are
        then stable). None: spend the whole budget.
    error_score : "raise" or float, default="raise"
        Utility of a subset whose fit or score raises.
    truncation_tol : float or None, default=0.01
        Truncate a permutation once ``|U(prefix) - U(all)|`` is at most
        ``truncation_tol * |U(all) - U(empty)|``. None: never truncate
        (unbiased, efficiency exact, ``n_train - 1`` fits per permutation).

    Attributes
    ----------
    n_fits_, n_samples_ : int
        Refits and permutations of the last :meth:`value` call.
    converged_ : bool
        Whether it stopped by ``tol`` rather than by the budget.
    stderr_ : pandas.Series
        Standard error of each value.
    n_train_ : int
    train_index_ : pandas.Index

    See Also
    --------
    BanzhafValuation : Banzhaf values, robust to a noisy utility.
    KNNShapley : Exact Shapley values of a nearest-neighbour classifier.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from dataval import ShapleyValuation
    >>> X, y = load_iris(return_X_y=True)
    >>> X_train, y_train, X_val, y_val = X[::5], y[::5], X[1::5], y[1::5]
    >>> shapley = ShapleyValuation(max_fits=300, random_state=0)
    >>> values = shapley.fit(LogisticRegression(), X_train, y_train).value(X_val, y_val)
    >>> values.shape
    (30,)
    >>> shapley.n_fits_ <= 300 + 29
    True
    """

    _parameter_constraints: dict = {
        **_SampledValuation._parameter_constraints,
        "truncation_tol": [None, Interval(Real, 0, 1, closed="left")],
    }
    _value_name = "shapley"

    def __init__(
        self,
        *,
        batch_size=16,
        random_state=None,
        verbose=0,
        n_jobs=None,
        scoring=None,
        max_fits=None,
        max_time=None,
        tol=0.05,
        error_score="raise",
        truncation_tol=0.01,
    ):
        self.batch_size = batch_size
        self.random_state = random_state
        self.verbose = verbose
        self.n_jobs = n_jobs
        self.scoring = scoring
        self.max_fits = max_fits
        self.max_time = max_time
        self.tol = tol
        self.error_score = error_score
        self.truncation_tol = truncation_tol

    def _start(self, utility):
        n = self.n_train_
        u_empty, u_full = utility(np.arange(0)), utility(np.arange(n))
        threshold = None
        if self.truncation_tol is not None:
            threshold = self.truncation_tol * abs(u_full - u_empty)
        return {
            "sum": np.zeros(n),
            "sumsq": np.zeros(n),
            "count": 0,
            "args": (u_empty, u_full, threshold),
        }

    def _draw(self, rng, remaining):
        # a permutation costs at most n_train - 1 fits
        size = min(self.batch_size, ceil(remaining / (self.n_train_ - 1)))
        return np.array([rng.permutation(self.n_train_) for _ in range(size)])

    def _task(self, stats):
        return _permutation_marginals, stats["args"]

    def _update(self, stats, samples, result):
        marginals, fits = result
        stats["sum"] += marginals.sum(0)
        stats["sumsq"] += (marginals**2).sum(0)
        stats["count"] += len(marginals)
        return fits

    def _estimates(self, stats):
        count = stats["count"]
        mean = stats["sum"] / count
        if count < 2:
            return mean, np.full_like(mean, np.inf)
        variance = np.maximum(stats["sumsq"] - count * mean**2, 0) / (count - 1)
        return mean, np.sqrt(variance / count)


class BanzhafValuation(_SampledValuation):
    """Banzhaf values of training rows for any model, by maximum sample reuse.

    The Banzhaf value of row ``i`` is ``U(S + i) - U(S)`` averaged over all
    subsets ``S`` of the other rows with equal weight, where ``U(S)`` is
    ``scoring`` on ``(X_val, y_val)`` of the model refitted on ``S``. Among
    semivalues it is the most robust to noise in ``U`` (a stochastic
    learner: Wang & Jia, 2023). Maximum sample reuse draws subsets with each
    row in or out with probability 1/2 and estimates every value from every
    refit: ``mean U(S) over S containing i - mean U(S) over S without i``.

    Degenerate subsets are scored as described in :class:`ShapleyValuation`.

    Parameters
    ----------
    batch_size : int, default=64
        Subsets per round (split among the ``n_jobs`` workers).
    random_state : int, RandomState instance or None, default=None
        Seeds the subsets and any ``random_state`` of the model left at
        ``None``.
    verbose : int, default=0
        Show a progress bar over the fit budget, with the time left.
    n_jobs : int, default=None
        Refit in parallel with joblib; values do not depend on it.
    scoring : str, callable or None, default=None
        The utility, as in :func:`sklearn.model_selection.cross_val_score`.
    max_fits : int, default=None
        Budget in refits (one per subset). None: ``100 * n_train``.
    max_time : float, default=None
        Budget in seconds, checked between rounds.
    tol : float or None, default=0.05
        Stop once every value's standard error is below ``tol`` times the
        standard deviation of the values across rows. None: spend the budget.
    error_score : "raise" or float, default="raise"
        Utility of a subset whose fit or score raises.

    Attributes
    ----------
    n_fits_, n_samples_ : int
        Refits (= subsets) of the last :meth:`value` call.
    converged_ : bool
    stderr_ : pandas.Series
    n_train_ : int
    train_index_ : pandas.Index

    See Also
    --------
    ShapleyValuation : Shapley values (they add up to the full model's score).

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from dataval import BanzhafValuation
    >>> X, y = load_iris(return_X_y=True)
    >>> X_train, y_train, X_val, y_val = X[::5], y[::5], X[1::5], y[1::5]
    >>> banzhaf = BanzhafValuation(max_fits=200, random_state=0)
    >>> values = banzhaf.fit(LogisticRegression(), X_train, y_train).value(X_val, y_val)
    >>> values.shape, banzhaf.n_fits_
    ((30,), 200)
    """

    _value_name = "banzhaf"

    def __init__(
        self,
        *,
        batch_size=64,
        random_state=None,
        verbose=0,
        n_jobs=None,
        scoring=None,
        max_fits=None,
        max_time=None,
        tol=0.05,
        error_score="raise",
    ):
        self.batch_size = batch_size
        self.random_state = random_state
        self.verbose = verbose
        self.n_jobs = n_jobs
        self.scoring = scoring
        self.max_fits = max_fits
        self.max_time = max_time
        self.tol = tol
        self.error_score = error_score

    def _start(self, utility):
        n = self.n_train_
        return {
            key: np.zeros(n)
            for key in (
                "in_sum",
                "in_sumsq",
                "in_count",
                "out_sum",
                "out_sumsq",
                "out_count",
            )
        }

    def _draw(self, rng, remaining):
        size = min(self.batch_size, remaining)
        return rng.randint(2, size=(size, self.n_train_)).astype(bool)

    def _task(self, stats):
        return _subset_utilities, ()

    def _update(self, stats, masks, result):
        for side, rows in (("in", masks), ("out", ~masks)):
            weights = rows.astype(np.float64)
            stats[f"{side}_sum"] += weights.T @ result
            stats[f"{side}_sumsq"] += weights.T @ result**2
            stats[f"{side}_count"] += weights.sum(0)
        return len(result)

    def _estimates(self, stats):
        means, variances = {}, {}
        for side in ("in", "out"):
            count = stats[f"{side}_count"]
            with np.errstate(invalid="ignore", divide="ignore"):
                means[side] = stats[f"{side}_sum"] / count
                variances[side] = (
                    np.where(
                        count > 1,
                        np.maximum(stats[f"{side}_sumsq"] - count * means[side] ** 2, 0)
                        / (count - 1),
                        np.inf,
                    )
                    / count
                )
        return means["in"] - means["out"], np.sqrt(variances["in"] + variances["out"])
