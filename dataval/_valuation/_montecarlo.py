"""Monte Carlo retraining in rounds: the driver of Shapley and Banzhaf values.

Both estimate a semivalue of the utility ``U(S)`` (the validation score of
the model refitted on the rows ``S``) from random samples, in rounds:
``batch_size`` samples are drawn in the calling process, split among the
``n_jobs`` workers, and their results summed in the order they were drawn,
so values depend on ``random_state`` but not on ``n_jobs``. The budget and
the convergence criterion are checked between rounds.
"""

from numbers import Integral, Real
from time import perf_counter

import numpy as np
from joblib import Parallel, delayed
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from .._numerics.seeding import draw_seed
from .._validation import check_X_y
from ._base import BaseValuation, progress, seeded_clone, split_tasks
from ._utility import Utility


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
        budget = 100 * self.n_train_ if self.max_fits is None else self.max_fits
        values, stderr = self._rounds(utility, budget)
        if not np.isfinite(stderr).all():
            raise ValueError(
                f"max_fits={budget} (or max_time={self.max_time}) allowed too few "
                f"samples ({self.n_samples_}) to estimate every value; raise the "
                "budget."
            )
        self.stderr_ = self._series(stderr, "stderr")
        return self._series(values, self._value_name)

    def _rounds(self, utility, budget):
        """Values and standard errors after rounds of samples; sets the run's figures.

        At least one round; then until converged or out of budget.
        """
        rng = check_random_state(self.random_state)
        stats = self._start(utility)
        start, fits, n_samples = perf_counter(), 0, 0
        bar = progress(self.verbose, budget, type(self).__name__, "fit")
        with Parallel(n_jobs=self.n_jobs) as parallel:
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
        return values, stderr


def _converged(values, stderr, tol):
    """Every standard error below ``tol`` times the spread of the values."""
    return bool(np.isfinite(stderr).all() and stderr.max() <= tol * values.std())
