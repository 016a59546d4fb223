"""Data-OOB: the value of a row is how well bagged models predict it out of bag."""

from numbers import Integral, Real

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import is_classifier
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from .._validation import to_numpy
from ._base import (
    BaseValuation,
    constant_model,
    progress,
    seeded_clone,
    split_tasks,
    take,
)


def _out_of_bag_scores(model, X, y, seeds, bag_size):
    """``[(out-of-bag rows, their scores)]`` for the bags drawn from ``seeds``.

    Module level, so that process and dask workers can run it.
    """
    n = len(y)
    labels = to_numpy(y)
    results = []
    for seed in seeds:
        in_bag = np.random.RandomState(seed).randint(n, size=bag_size)
        out = np.setdiff1d(np.arange(n), in_bag)
        if not len(out):
            results.append((out, np.empty(0)))
            continue
        y_bag = take(y, in_bag)
        fitted = constant_model(model, y_bag, y)
        if fitted is None:
            fitted = seeded_clone(model, seed).fit(take(X, in_bag), y_bag)
        predicted = np.asarray(fitted.predict(take(X, out)))
        if is_classifier(model):
            scores = (predicted == labels[out]).astype(np.float64)
        else:
            residual = predicted.reshape(len(out), -1) - np.asarray(
                labels[out], dtype=np.float64
            ).reshape(len(out), -1)
            scores = -(residual**2).sum(1)
        results.append((out, scores))
    return results


class DataOOB(BaseValuation):
    """Data-OOB: value each row by its out-of-bag score in a bagging ensemble.

    ``fit`` trains ``n_estimators`` clones of the model on bootstrap samples
    of the training rows (Kwon & Zou, 2023). The value of a row is the mean,
    over the models whose bag left it out, of how well they predict it:
    ``1`` if a classifier predicts its label, else ``0``; minus the squared
    error (summed over outputs) for a regressor. A row with a wrong label or
    an outlying target is predicted badly by models that never saw it, so a
    low value flags it. No validation set and no gradients: any scikit-learn
    estimator works (forests, boosting, SVMs, neighbours, pipelines).

    A bag whose rows hold a single class is scored as a model predicting that
    class (many classifiers cannot be fitted on one class).

    Parameters
    ----------
    random_state : int, RandomState instance or None, default=None
        Seeds the bags; a ``random_state`` of the model left at ``None`` is set
        to its bag's seed, so that results are reproducible.
    verbose : int, default=0
        Show a progress bar over the bags, with the time left.
    n_jobs : int, default=None
        Fit the bags in parallel with joblib (any backend, e.g.
        ``joblib.parallel_config(backend="dask")``). Values do not depend on
        it. ``-1`` uses every core.
    n_estimators : int, default=100
        Number of bags (models fitted).
    max_samples : float in (0, 1], default=1.0
        Size of each bag as a fraction of the training rows, drawn with
        replacement. About ``exp(-max_samples)`` of the rows are out of each
        bag.

    Attributes
    ----------
    n_train_ : int
        Number of training rows.
    train_index_ : pandas.Index
        The training index, named ``"train"``.
    n_out_of_bag_ : pandas.Series of int
        How many bags left each row out (the values average over these).

    See Also
    --------
    KNNShapley : Exact Shapley values of a nearest-neighbour classifier.
    ShapleyValuation : Shapley values of any model by Monte Carlo retraining.

    Examples
    --------
    >>> from sklearn.tree import DecisionTreeClassifier
    >>> from dataval import DataOOB
    >>> from dataval.datasets import load_mislabeled_digits
    >>> from dataval.metrics import mislabel_detection_auc
    >>> X, y, is_flipped = load_mislabeled_digits(noise=0.1)
    >>> X, y, is_flipped = X[:300], y[:300], is_flipped[:300]
    >>> oob = DataOOB(n_estimators=20, random_state=0)
    >>> values = oob.fit(DecisionTreeClassifier(), X, y).value()
    >>> values.shape
    (300,)
    >>> bool(mislabel_detection_auc(-values, is_flipped) > 0.7)
    True
    """

    _parameter_constraints: dict = {
        **BaseValuation._parameter_constraints,
        "n_estimators": [Interval(Integral, 1, None, closed="left")],
        "max_samples": [Interval(Real, 0, 1, closed="right")],
    }

    def __init__(
        self,
        *,
        random_state=None,
        verbose=0,
        n_jobs=None,
        n_estimators=100,
        max_samples=1.0,
    ):
        self.random_state = random_state
        self.verbose = verbose
        self.n_jobs = n_jobs
        self.n_estimators = n_estimators
        self.max_samples = max_samples

    def fit(self, model, X, y):
        """Fit the bagged clones of ``model`` and record their out-of-bag scores.

        Parameters
        ----------
        model : scikit-learn estimator, fitted or not
            Cloned for every bag; never modified.
        X : array-like or DataFrame of shape (n_train, n_features)
        y : array-like or Series of shape (n_train,) or (n_train, n_outputs)

        Returns
        -------
        self : DataOOB
        """
        model = self._fit_data(model, X, y)
        n = self.n_train_
        seeds = check_random_state(self.random_state).randint(
            2**31 - 1, size=self.n_estimators
        )
        bag_size = max(1, int(round(self.max_samples * n)))
        total, count = np.zeros(n), np.zeros(n, dtype=np.int64)
        bar = progress(self.verbose, self.n_estimators, "Data-OOB", "bag")
        # bags run in fixed pieces of the seed list and are summed in their
        # order, so the values do not depend on n_jobs
        with Parallel(n_jobs=self.n_jobs, return_as="generator") as parallel:
            results = parallel(
                delayed(_out_of_bag_scores)(model, X, y, seeds[piece], bag_size)
                for piece in split_tasks(seeds, self.n_jobs)
            )
            for bags in results:
                for out, scores in bags:
                    total[out] += scores
                    count[out] += 1
                bar.update(len(bags))
        bar.close()
        never = np.flatnonzero(count == 0)
        if len(never):
            raise ValueError(
                f"{len(never)} training rows (e.g. "
                f"{self.train_index_[never[:5]].tolist()}) were in every one of the "
                f"n_estimators={self.n_estimators} bags, so they have no "
                "out-of-bag score; raise n_estimators or lower max_samples."
            )
        self._total = total
        self.n_out_of_bag_ = self._series(count, "n_out_of_bag")
        return self

    def value(self, X_val=None, y_val=None):
        """Mean out-of-bag score of each training row; higher = more valuable.

        Parameters
        ----------
        X_val, y_val : None
            Data-OOB needs no validation set; both must be left at None.

        Returns
        -------
        values : pandas.Series indexed by ``train``
            Classifiers: the fraction of out-of-bag models that predict the
            row's label. Regressors: minus their mean squared error on it.
        """
        check_is_fitted(self)
        if X_val is not None or y_val is not None:
            raise ValueError(
                "DataOOB values each row by how well models that did not see it "
                "predict it, without a validation set; call value() with no "
                "arguments (use ShapleyValuation or KNNShapley to value rows on a "
                "validation set)."
            )
        return self._series(self._total / self.n_out_of_bag_.to_numpy(), "data_oob")
