"""KNN-Shapley: exact Shapley values of a k-nearest-neighbour classifier."""

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from .._core.stream import working_bytes
from .._validation import check_X_y, final_step, row_index, to_numpy
from ._base import BaseValuation, progress, take


def knn_shapley_recursion(matches, n_neighbors):
    """Shapley values of the rows in ``matches``' order, for one query each.

    ``matches`` (m, N): whether the i-th nearest training row of query ``t``
    has the query's label. The utility of a subset is the fraction of the
    query's ``K = n_neighbors`` nearest rows in it that have its label (over
    ``min(K, |S|)`` rows, divided by ``K``). Jia et al. (2019), Theorem 1:
    ``s_N = m_N / N`` and ``s_i = s_{i+1} + (m_i - m_{i+1}) / max(K, i)``.
    Returns (m, N) in the same order.
    """
    m, N = matches.shape
    values = np.empty((m, N))
    values[:, -1] = matches[:, -1] / max(n_neighbors, N)
    # steps[:, i - 1] = (m_i - m_{i+1}) / max(K, i) for 1-based ranks i < N
    steps = (matches[:, :-1] - matches[:, 1:]) / np.maximum(
        n_neighbors, np.arange(1, N)
    )
    values[:, :-1] = values[:, -1:] + np.cumsum(steps[:, ::-1], axis=1)[:, ::-1]
    return values


def nearest_neighbour_model(model):
    """``model`` if it is a KNN classifier (or a Pipeline ending in one), else
    ``KNeighborsClassifier()``: what valuing rows by KNN-Shapley for ``model`` uses.
    """
    final = final_step(model)
    return model if isinstance(final, KNeighborsClassifier) else KNeighborsClassifier()


def _chunk_values(neighbors, X_query, y_query, y_train, n_neighbors, exclude):
    """(m, n) values of every training row for each query row of the chunk.

    ``exclude`` (m,) or None: a training row to leave out per query (the
    query itself in leave-one-out valuation); its value is 0.
    """
    n = len(y_train)
    order = neighbors.kneighbors(X_query, n_neighbors=n, return_distance=False)
    if exclude is not None:
        order = order[order != exclude[:, None]].reshape(len(order), n - 1)
    matches = (y_train[order] == y_query[:, None]).astype(np.float64)
    values = np.zeros((len(order), n))
    np.put_along_axis(values, order, knn_shapley_recursion(matches, n_neighbors), 1)
    return values


def _chunk_sum(*args):
    return _chunk_values(*args).sum(0)


class KNNShapley(BaseValuation):
    """Exact Shapley values of a k-nearest-neighbour classifier (KNN-Shapley).

    For one validation row, the utility of a set ``S`` of training rows is
    the share of its ``K`` nearest neighbours in ``S`` that carry its label
    (divided by ``K`` even when ``S`` has fewer than ``K`` rows, so the empty
    set is worth 0). Jia et al. (2019) give the exact Shapley values of this
    utility by a recursion over the training rows sorted by distance:
    ``O(n log n)`` per validation row instead of ``2^n`` refits. The value of
    a row on a validation set is the mean over its rows.

    It values the data for the classifier ``KNeighborsClassifier(K)`` (with
    ``weights="uniform"``) with its metric; for other models it is a fast
    proxy that depends only on the geometry and the labels: rows surrounded
    by other labels get negative values.

    The method is exact: it has no ``random_state``.

    Parameters
    ----------
    verbose : int, default=0
        Show a progress bar over chunks of validation rows, with the time left.
    n_jobs : int, default=None
        Value chunks of validation rows in parallel with joblib (threads
        unless a ``joblib.parallel_config`` chooses another backend). Values
        do not depend on it.

    Attributes
    ----------
    estimator_ : KNeighborsClassifier or Pipeline
        The clone of the model fitted on the training data.
    n_neighbors_ : int
        ``K``, read from the model.
    n_train_ : int
    train_index_ : pandas.Index

    See Also
    --------
    DataOOB : Values for any model without a validation set.
    ShapleyValuation : Shapley values of any model by retraining.

    Examples
    --------
    >>> from sklearn.neighbors import KNeighborsClassifier
    >>> from dataval import KNNShapley
    >>> from dataval.datasets import load_mislabeled_digits
    >>> from dataval.metrics import mislabel_detection_auc
    >>> X, y, is_flipped = load_mislabeled_digits(noise=0.1)
    >>> knn = KNNShapley().fit(KNeighborsClassifier(n_neighbors=5), X[:1000], y[:1000])
    >>> values = knn.value()  # each training row valued on the others
    >>> bool(mislabel_detection_auc(-values, is_flipped[:1000]) > 0.9)
    True
    >>> knn.score(X[1000:1003], y[1000:1003]).shape
    (3, 1000)
    """

    _parameter_constraints: dict = {
        key: value
        for key, value in BaseValuation._parameter_constraints.items()
        if key != "random_state"
    }

    def __init__(self, *, verbose=0, n_jobs=None):
        self.verbose = verbose
        self.n_jobs = n_jobs

    def fit(self, model, X, y):
        """Fit a clone of the nearest-neighbour classifier on the training data.

        Parameters
        ----------
        model : KNeighborsClassifier or Pipeline ending in one, fitted or not
            Gives ``K`` (``n_neighbors``) and the metric; the leading steps
            of a Pipeline (e.g. a scaler) are fitted on ``X``. Cloned, never
            modified.
        X : array-like or DataFrame of shape (n_train, n_features)
        y : array-like or Series of shape (n_train,)

        Returns
        -------
        self : KNNShapley
        """
        model = self._fit_data(model, X, y)
        final = final_step(model)
        if not isinstance(final, KNeighborsClassifier):
            raise TypeError(
                "KNNShapley values data for a k-nearest-neighbour classifier: pass "
                "KNeighborsClassifier(n_neighbors=...) or a Pipeline ending in one, "
                f"got {type(final).__name__}. For other models use DataOOB or "
                "ShapleyValuation."
            )
        if final.weights != "uniform":
            raise ValueError(
                f"KNNShapley's closed form is for equally weighted neighbours; the "
                f"model has weights={final.weights!r}. Use "
                "KNeighborsClassifier(weights='uniform')."
            )
        self.estimator_ = model.fit(X, y)
        self.n_neighbors_ = int(final.n_neighbors)
        self._labels = to_numpy(y)
        return self

    def _transform(self, X):
        if isinstance(self.estimator_, Pipeline):
            return self.estimator_[:-1].transform(X)
        return X

    def _neighbors(self):
        return (
            self.estimator_.steps[-1][1]
            if isinstance(self.estimator_, Pipeline)
            else self.estimator_
        )

    def _map_chunks(self, function, X_val, y_val):
        """``[function(chunk)]`` over chunks of validation rows, in order.

        ``X_val=None``: the training rows, each valued without itself.
        """
        if X_val is None:
            X_query, y_query = self._transform(self._X), self._labels
            exclude = np.arange(self.n_train_)
        else:
            X_query, y_query = self._transform(X_val), to_numpy(y_val)
            exclude = None
        # per query row: neighbour order (int64) and three float64 rows
        row_bytes = 32 * self.n_train_
        size = max(1, working_bytes() // row_bytes)
        n_queries = len(y_query)
        starts = range(0, n_queries, size)
        bar = progress(self.verbose, len(starts), "KNN-Shapley", "chunk")
        with Parallel(
            n_jobs=self.n_jobs, prefer="threads", return_as="generator"
        ) as parallel:
            results = parallel(
                delayed(function)(
                    self._neighbors(),
                    take(X_query, np.arange(start, min(start + size, n_queries))),
                    y_query[start : start + size],
                    self._labels,
                    self.n_neighbors_,
                    None if exclude is None else exclude[start : start + size],
                )
                for start in starts
            )
            for result in results:
                bar.update()
                yield result
        bar.close()

    def _check_query(self, X_val, y_val, names=("X_val", "y_val")):
        check_is_fitted(self)
        if (X_val is None) != (y_val is None):
            raise ValueError(
                f"Pass both {names[0]} and {names[1]}, or neither (each training "
                "row is then valued on the others)."
            )
        if X_val is not None:
            check_X_y(X_val, y_val, name_X=names[0], name_y=names[1])
        if X_val is None and self.n_train_ < 2:
            raise ValueError(
                "Valuing training rows on each other needs at least 2 rows; pass "
                "X_val and y_val."
            )

    def value(self, X_val=None, y_val=None):
        """Mean KNN-Shapley value of each training row over validation rows.

        Parameters
        ----------
        X_val : array-like or DataFrame of shape (n_val, n_features), default=None
        y_val : array-like or Series of shape (n_val,), default=None
            The validation set. ``None``: every training row serves as a
            validation row for the others (it is left out of its own
            neighbour set), which flags rows whose neighbours disagree with
            their label.

        Returns
        -------
        values : pandas.Series indexed by ``train``
            Higher = more valuable; the values over one validation row sum to
            the fraction of its ``K`` nearest neighbours with its label.
        """
        self._check_query(X_val, y_val)
        total = sum(self._map_chunks(_chunk_sum, X_val, y_val))
        n_queries = self.n_train_ if X_val is None else len(to_numpy(y_val))
        return self._series(total / n_queries, "knn_shapley")

    def score(self, X_test, y_test):
        """KNN-Shapley value of every training row for every test row.

        Parameters
        ----------
        X_test : array-like or DataFrame of shape (n_test, n_features)
        y_test : array-like or Series of shape (n_test,)

        Returns
        -------
        values : DataFrame of shape (n_test, n_train), float32
            Index ``test`` (the index of ``X_test`` or a RangeIndex),
            columns ``train``. ``value(X_test, y_test)`` is its column mean.
        """
        if X_test is None:
            raise ValueError(
                "score needs test rows, got X_test=None; value() with no arguments "
                "values the training rows on each other."
            )
        self._check_query(X_test, y_test, names=("X_test", "y_test"))
        blocks = list(self._map_chunks(_chunk_values, X_test, y_test))
        return pd.DataFrame(
            np.concatenate(blocks).astype(np.float32),
            index=pd.Index(row_index(X_test, y_test)).rename("test"),
            columns=self.train_index_,
        )


def fit_valuation(valuation, model, X, y):
    """``valuation`` fitted for ``model``: KNNShapley values rows for its KNN proxy.

    The proxy is :func:`nearest_neighbour_model`; other valuation estimators
    take ``model`` itself.
    """
    if isinstance(valuation, KNNShapley):
        model = nearest_neighbour_model(model)
    return valuation.fit(model, X, y)
