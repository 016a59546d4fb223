"""Banzhaf values of any model by maximum sample reuse (Wang & Jia, 2023)."""

import numpy as np

from ._montecarlo import _SampledValuation
from ._utility import subset_utilities


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
        return subset_utilities, ()

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
