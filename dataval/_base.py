"""The estimator contract and the one influence equation.

Every estimator estimates

    influence[i, j] = (1/n) g_i^T (H + damping I)^{-1} g_j

with ``g = grad loss`` of a test row ``i`` and a training row ``j``. This
module holds the contract every estimator keeps: parameter validation, the fit
(reading the model, preparing the data, checking the result) and the outputs
as pandas objects. An estimator supplies ``_fit_curvature`` (what it learns
about the training data) and names its two parts, a featurizer
(``_featurizer``: what a row becomes) and a curvature (``_curvature``: how
``(H + damping I)^{-1}`` is applied); the streaming core
(:mod:`dataval._core.stream`) pairs them for every output.
"""

from abc import ABCMeta, abstractmethod
from numbers import Integral

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import (
    Interval,
    StrOptions,
    validate_parameter_constraints,
)
from sklearn.utils.validation import check_is_fitted

from ._adapters import adapt_model
from ._core.data import TrainingData
from ._core.parts import FlatGradients
from ._core.stream import Stream, check_dense_size
from ._finite import check_finite, check_fitted_state
from ._functional import FunctionalModel
from ._labels import add_labels
from ._measurements import MEASUREMENTS, resolve_measurement
from ._numerics.damping import DAMPING_CONSTRAINT
from ._objective import check_sample_weight, training_weights, warn_if_not_stationary
from ._progress import phase
from ._validation import (
    N_JOBS_CONSTRAINT,
    check_dtype_on_device,
    check_X_y,
    resolve_device,
    resolve_dtype,
)


class BaseInfluence(BaseEstimator, metaclass=ABCMeta):
    """Base class of influence estimators; not used directly.

    Subclasses define ``__init__`` (keyword-only, storing arguments only),
    extend ``_parameter_constraints``, implement ``_fit_curvature`` and
    ``_curvature``, and override ``_featurizer`` when a row is not its flat
    loss gradient.
    """

    _parameter_constraints: dict = {
        "damping": DAMPING_CONSTRAINT,
        "measurement": [StrOptions(set(MEASUREMENTS)), callable],
        "loss": [StrOptions({"auto"}), callable],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str, torch.device],
        "dtype": [None, str, torch.dtype],
        "verbose": ["verbose"],
        "n_jobs": N_JOBS_CONSTRAINT,
    }

    #: dtype of gradients and solves when ``dtype=None``
    _default_dtype = torch.float32
    #: attributes set by ``_fit_curvature`` that ``dataval.save`` writes and
    #: ``dataval.load`` restores (tensors, numbers, strings, numpy arrays and
    #: containers of them): everything scoring needs that a pass over the
    #: training data computed
    _saved_state = ()

    # ------------------------------------------------------------------ fitting
    def fit(self, model, X, y, sample_weight=None):
        """Read a fitted model and what the method needs about its training data.

        Parameters
        ----------
        model : torch.nn.Module, skorch net or fitted scikit-learn model
            The trained model. It is never modified.
        X : array-like, DataFrame or tensor of shape (n_train, ...)
            The data ``model`` was trained on. A pandas index becomes the
            ``train`` axis of every output.
        y : array-like, Series or tensor of shape (n_train, ...)
            Training targets.
        sample_weight : array-like of shape (n_train,), default=None
            The weights ``model`` was fitted with. The training objective is
            then ``(1/n) sum_j w_j loss_j + regularizer``, and the influence
            of row ``j`` is that of removing ``w_j loss_j`` (a row of weight 0
            has none). A scikit-learn model's ``class_weight`` is applied on
            top, as scikit-learn does.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        # a refit never mixes two fits' state, and a fit that raises leaves
        # the estimator unfitted
        self._forget_fit()
        try:
            with phase("curvature", self.verbose):
                self._fit_model(model, X, y, sample_weight)
                self._fit_curvature()
            check_fitted_state(self)
        except BaseException:
            self._forget_fit()
            raise
        return self

    def _forget_fit(self):
        """Drop every attribute that is not a constructor parameter."""
        params = self.get_params(deep=False)
        for name in [name for name in vars(self) if name not in params]:
            delattr(self, name)

    def _fit_model(self, model, X, y, sample_weight=None):
        """Everything ``fit`` does before ``_fit_curvature``: one cheap check pass.

        For a model that should minimize its rebuilt objective (scikit-learn),
        the objective's gradient is measured once and a warning given when
        it is not near zero.
        """
        validate_parameter_constraints(
            self._parameter_constraints,
            self.get_params(deep=False),
            caller_name=type(self).__name__,
        )
        index = check_X_y(X, y)
        given_weights = check_sample_weight(sample_weight, len(index))
        device = resolve_device(self.device)
        # gradient passes run in the requested dtype; curvature, solves, stored
        # gradients and scores in at least float32 (mixed precision for 16-bit)
        grad_dtype = resolve_dtype(self.dtype, self._default_dtype)
        check_dtype_on_device(grad_dtype, device)
        adapted = adapt_model(model, self.loss, X, y)
        X_t, y_t = adapted.prepare_X(X), adapted.prepare_y(y)
        weights = training_weights(adapted, y_t, given_weights)
        if adapted.at_minimum:
            warn_if_not_stationary(
                adapted, X_t, y_t, weights, self.batch_size, given_weights is not None
            )
        self._set_training(
            FunctionalModel(adapted, device, grad_dtype),
            X_t,
            y_t,
            pd.Index(index).rename("train"),
            None if weights is None else torch.from_numpy(weights),
        )
        self._check_measurement(X_t, y_t)

    def _set_training(self, model, X, y, train_index, sample_weight=None):
        """The fitted state ``_fit_curvature`` reads: a model and prepared data.

        ``sample_weight``: the per-row weights (n,) of the objective, or
        ``None`` for all ones. Lets an estimator fit others on its own
        model's checkpoints.
        """
        self.model_ = model
        self.device_ = model.device
        self.dtype_ = torch.promote_types(model.dtype, torch.float32)
        self.n_train_ = len(X)
        self.n_params_ = model.n_params
        self.train_index_ = train_index
        self._X_train, self._y_train = X, y
        self._sample_weight = (
            None
            if sample_weight is None
            else sample_weight.to(self.device_, self.dtype_)
        )

    def _measurement_function(self):
        """``f(output, target) -> (B,)`` of ``measurement``: what queries measure."""
        return resolve_measurement(self.measurement, self.model_.adapted.loss)

    def _check_measurement(self, X, y):
        """Refuse a measurement that does not fit the model, before the curvature."""
        function = self._measurement_function()
        if callable(self.measurement):
            X_b, y_b = self.model_.prepare(X[:2], y[:2])
            function(self.model_.outputs(X_b), y_b)

    @abstractmethod
    def _fit_curvature(self):
        """Learn what the estimator's featurizer and curvature need."""

    def _fitted_state(self):
        """``{name: value}`` of what ``_fit_curvature`` learned, for ``dataval.save``."""
        return {name: getattr(self, name) for name in self._saved_state}

    def _restore_state(self, state):
        """Set a ``_fitted_state`` again after ``_fit_model``, with no pass over the data.

        Subclasses also rebuild here, from their parameters and the saved
        values, the fitted parts that are code rather than numbers (layer
        hooks, checkpoint models, seeded projections).
        """
        for name, value in state.items():
            setattr(self, name, value)

    # ------------------------------------------------------------ the parts
    def _featurizer(self):
        """What a row becomes (:class:`~dataval._core.parts.Featurizer`).

        Per-sample loss gradients, flat, unless a subclass says otherwise.
        """
        return FlatGradients(self.model_, self.dtype_)

    @abstractmethod
    def _curvature(self):
        """How ``(H + damping I)^{-1}`` is applied (:class:`~dataval._core.parts.Curvature`)."""

    def _data(self, batch_size=None):
        """The training rows and the passes over them (:class:`TrainingData`)."""
        return TrainingData(
            self.model_,
            self._X_train,
            self._y_train,
            self._sample_weight,
            batch_size or self.batch_size,
            self.verbose,
        )

    def _stream(self):
        """The streaming core over this fitted estimator's two parts."""
        return Stream(
            self._featurizer(),
            self._curvature(),
            self._data(),
            self.dtype_,
            self.n_jobs,
        )

    def _prepare_test(self, X, y):
        check_is_fitted(self)
        index = check_X_y(X, y, name_X="X_test", name_y="y_test")
        adapted = self.model_.adapted
        return (
            adapted.prepare_X(X, "X_test"),
            adapted.prepare_y(y, "y_test"),
            pd.Index(index).rename("test"),
        )

    # -------------------------------------------------------------- outputs
    def score(self, X_test, y_test, by_layer=False):
        """Influence of every training row on each test row's loss or ``measurement``.

        Parameters
        ----------
        X_test : array-like, DataFrame or tensor of shape (n_test, ...)
        y_test : array-like, Series or tensor of shape (n_test, ...)
        by_layer : bool, default=False
            Split each score into the contributions of the model's layers
            (modules owning parameters). The layers sum to the plain score.

        Returns
        -------
        scores : DataFrame of shape (n_test, n_train), float32
            ``scores.loc[i, j]`` estimates how much removing training row ``j``
            would raise the loss on test row ``i``: positive = helpful,
            negative = harmful (with another ``measurement``, how much it
            would raise that). Index ``test`` (the pandas index of ``X_test``
            or a RangeIndex), columns ``train`` (the index seen in ``fit``).
            With ``by_layer=True`` the index is a MultiIndex ``(layer, test)``.
        """
        X_t, y_t, index = self._prepare_test(X_test, y_test)
        stream = self._stream()
        groups = stream.layer_groups(by_layer)
        check_dense_size(len(X_t) * len(groups), self.n_train_)
        with phase("scoring", self.verbose):
            out = stream.dense(X_t, y_t, self._measurement_function(), groups.values())
        check_finite(self, out, "score", (X_t, y_t, index))
        if not by_layer:
            frame = pd.DataFrame(out[0], index=index, columns=self.train_index_)
        else:
            rows = pd.MultiIndex.from_product(
                [list(groups), index], names=["layer", "test"]
            )
            frame = pd.DataFrame(
                out.reshape(len(rows), -1), index=rows, columns=self.train_index_
            )
        return stream.annotate(frame)

    def top_k(self, X_test, y_test, k=10, kind="helpful", include_labels=False):
        """The ``k`` most helpful or harmful training rows for each test row.

        Streams over the training set: never holds the n_test x n_train scores.

        Parameters
        ----------
        X_test : array-like, DataFrame or tensor of shape (n_test, ...)
        y_test : array-like, Series or tensor of shape (n_test, ...)
        k : int, default=10
            Rows per test point (at most n_train).
        kind : {"helpful", "harmful"}, default="helpful"
            ``"helpful"``: largest influence first; ``"harmful"``: most
            negative first.
        include_labels : bool, default=False
            Add the given label and the model's prediction of each test and
            training row: columns ``test_label``, ``test_predicted``,
            ``train_label`` and ``train_predicted`` (class labels as the model
            knows them; outputs for regression).

        Returns
        -------
        top : DataFrame
            Long format with columns ``test``, ``rank`` (1 = strongest),
            ``train`` and ``influence`` (and the label columns);
            ``n_test * k`` rows.
        """
        if kind not in ("helpful", "harmful"):
            raise ValueError(f"kind must be 'helpful' or 'harmful', got {kind!r}.")
        if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}.")
        X_t, y_t, index = self._prepare_test(X_test, y_test)
        k = min(int(k), self.n_train_)
        with phase("scoring", self.verbose):
            stream = self._stream()
            values, positions = stream.top_k(
                X_t, y_t, self._measurement_function(), k, kind == "helpful"
            )
        check_finite(self, values, "top_k", (X_t, y_t, index))
        top = pd.DataFrame(
            {
                "test": np.repeat(index.to_numpy(), k),
                "rank": np.tile(np.arange(1, k + 1), len(X_t)),
                "train": self.train_index_.to_numpy()[positions.ravel()],
                "influence": values.ravel(),
            }
        )
        if include_labels:
            test_rows = np.repeat(np.arange(len(X_t)), k)
            top = add_labels(self, top, X_t, y_t, test_rows, positions.ravel())
        return stream.annotate(top)

    def value(self, X_val, y_val):
        """Influence of each training row on the mean loss over a validation set.

        Equals ``score(X_val, y_val).mean(axis=0)`` but needs one inverse
        application and streams over the training set.

        Returns
        -------
        value : Series indexed by ``train``, float32
            Positive = the row helps the validation loss.
        """
        X_t, y_t, index = self._prepare_test(X_val, y_val)
        with phase("scoring", self.verbose):
            stream = self._stream()
            values = stream.values(X_t, y_t, self._measurement_function())
        value = pd.Series(values, index=self.train_index_, name="value")
        check_finite(self, value.to_numpy(), "value", (X_t, y_t, index))
        return stream.annotate(value)

    def self_influence(self):
        """``(1/n) w_j g_j^T (H + damping I)^{-1} g_j`` for every training row.

        Large values mark rows the model had to bend to fit: unusual or
        mislabeled examples.

        Returns
        -------
        self_influence : Series indexed by ``train``, float32
        """
        check_is_fitted(self)
        with phase("scoring", self.verbose):
            stream = self._stream()
            values = pd.Series(
                stream.self_influence(),
                index=self.train_index_,
                name="self_influence",
            )
        check_finite(self, values.to_numpy(), "self_influence")
        return stream.annotate(values)

    def _candidate_scores(self, X, y, positions):
        """Dense scores (m, len(positions)) of prepared query rows against the
        training rows at ``positions`` (sorted, unique): only those rows'
        gradients are computed (see :func:`dataval.text.score_candidates`)."""
        with phase("scoring", self.verbose):
            return self._stream().candidates(
                X, y, self._measurement_function(), torch.as_tensor(positions)
            )
