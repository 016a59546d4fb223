"""Shapley values of any model by truncated Monte Carlo (Ghorbani & Zou, 2019)."""

from math import ceil
from numbers import Real

import numpy as np
from sklearn.utils._param_validation import Interval

from ._montecarlo import _SampledValuation
from ._utility import permutation_marginals


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
        with utility.refits() as evaluate:
            u_empty, u_full = evaluate(np.arange(0)), evaluate(np.arange(n))
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
        return permutation_marginals, stats["args"]

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
