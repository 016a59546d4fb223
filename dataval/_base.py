"""The estimator contract and the one influence equation.

Every estimator estimates

    influence[i, j] = (1/n) g_i^T (H + damping I)^{-1} g_j

with ``g = grad loss`` of a test row ``i`` and a training row ``j``. Subclasses
supply only ``_fit_curvature`` (what they learn about the training data) and
``_apply_inverse`` (how they apply ``(H + damping I)^{-1}``). Scoring, streaming,
indexes and output frames live here, once.
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
from ._config import get_config
from ._finite import check_finite, check_fitted_state
from ._functional import FunctionalModel
from ._labels import add_labels
from ._layers import flush_denormals
from ._measurements import MEASUREMENTS, resolve_measurement
from ._numerics.damping import DAMPING_CONSTRAINT
from ._objective import check_sample_weight, training_weights, warn_if_not_stationary
from ._parallel import copy_sharing_tensors, map_shards, shard_bounds
from ._progress import phase, tracked
from ._validation import (
    check_dtype_on_device,
    check_X_y,
    resolve_device,
    resolve_dtype,
)

# bytes of training gradients cached from one test chunk to the next
_WORKING_MEMORY = 512 * 2**20


class BaseInfluence(BaseEstimator, metaclass=ABCMeta):
    """Base class of influence estimators; not used directly.

    Subclasses define ``__init__`` (storing arguments only), extend
    ``_parameter_constraints`` and implement ``_fit_curvature`` and
    ``_apply_inverse``.
    """

    _parameter_constraints: dict = {
        "damping": DAMPING_CONSTRAINT,
        "measurement": [StrOptions(set(MEASUREMENTS)), callable],
        "loss": [StrOptions({"auto"}), callable],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str, torch.device],
        "dtype": [None, str, torch.dtype],
        "verbose": ["verbose"],
        "n_jobs": [
            None,
            Interval(Integral, None, -1, closed="right"),
            Interval(Integral, 1, None, closed="left"),
        ],
    }

    #: dtype of gradients and solves when ``dtype=None``
    _default_dtype = torch.float32
    #: whether the pair score carries the ``1/n`` of the influence equation
    _per_training_point = True
    #: the training rows this object scores; parallel workers get a slice
    _worker_rows = slice(None)
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
        """Learn what ``_apply_inverse`` needs from the training data."""

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

    @abstractmethod
    def _apply_inverse(self, G):
        """Rows of ``G`` (m, p) times ``(H + damping I)^{-1}``, shape (m, p)."""

    # ------------------------------------------------------- the one equation
    def _influence(self, Q, G, diagonal=False, layer=None):
        """``(1/n) Q G^T``: preconditioned test rows ``Q`` against gradients ``G``.

        ``Q = _apply_inverse(g_test)`` (m, p), ``G`` training gradients (b, p);
        returns (m, b), or (m,) with ``diagonal=True`` (row ``i`` with row ``i``).
        ``layer`` (a slice of p from ``_layers``) keeps one layer's block only.
        """
        scores = self._inner(Q, G, diagonal, layer)
        return scores / self.n_train_ if self._per_training_point else scores

    def _inner(self, Q, G, diagonal=False, layer=None):
        """Dot products of the rows of ``Q`` and ``G`` over the parameters in ``layer``.

        Subclasses whose ``_training_batch`` or ``_queries`` return a factored
        form (instead of flat rows) compute the same products from it.
        """
        if layer is not None:
            Q, G = Q[:, layer], G[:, layer]
        return (Q * G).sum(1) if diagonal else Q @ G.T

    # ------------------------------------------------------------- gradients
    def _gradients(self, X, y, function=None):
        """Per-sample loss gradients (b, p) of a prepared batch, in ``dtype_``.

        ``function(output, target)`` replaces the loss (see ``_query_gradients``).
        """
        G = self.model_.per_sample_grads(X, y, function).to(self.dtype_)
        return flush_denormals(G)

    def _query_gradients(self, X, y):
        """Gradients of the measurement of query rows, as ``_gradients`` gives them."""
        return self._gradients(X, y, self._measurement_function())

    def _layers(self):
        """``[(layer name, slice of p)]``: the blocks ``by_layer`` reports."""
        return self.model_.layers

    def _batches(self, X, y, desc, batch_size=None):
        """Yield ``(start, X_batch, y_batch)`` on the device."""
        size = batch_size or self.batch_size
        starts = range(0, len(X), size)
        for start in tracked(starts, len(starts), desc, self.verbose):
            X_b, y_b = self.model_.prepare(
                X[start : start + size], y[start : start + size]
            )
            yield start, X_b, y_b

    def _training_gradients(self, store=None):
        """Yield ``(start, G)`` over the training rows this object scores.

        ``store`` (a list owned by the caller) keeps the gradients after the
        first pass when they fit in working memory, for the next test chunk.
        ``start`` counts from the first of ``_worker_rows`` (all rows, except
        in a parallel worker).
        """
        if store:
            yield from store
            return
        fits = self._training_bytes() <= _WORKING_MEMORY
        keep = [] if store is not None and fits else None
        rows = self._worker_rows
        for start, X_b, y_b in self._batches(
            self._X_train[rows], self._y_train[rows], "train"
        ):
            G = self._weighted(
                self._training_batch(X_b, y_b),
                self._weights_at(rows, start, len(X_b)),
            )
            if keep is not None:
                keep.append((start, G))
            yield start, G
        if keep is not None:
            store.extend(keep)

    def _training_rows(self, positions):
        """Yield ``(offset, G)``: ``_training_batch`` of the rows at ``positions``."""
        X, y = self._X_train[positions], self._y_train[positions]
        for start, X_b, y_b in self._batches(X, y, "train"):
            weights = self._weights_at(positions, start, len(X_b))
            yield start, self._weighted(self._training_batch(X_b, y_b), weights)

    def _weights_at(self, rows, start, size):
        """Objective weights (size,) of training rows ``rows[start:start+size]``.

        ``None`` when the objective is unweighted.
        """
        if self._sample_weight is None:
            return None
        return self._sample_weight[rows][start : start + size]

    def _weighted(self, G, weights):
        """A ``_training_batch`` result with row ``j`` scaled by ``weights[j]``.

        Removing row ``j`` removes ``w_j loss_j`` from the objective: its
        gradient enters the influence equation as ``w_j g_j``.
        """
        return G if weights is None else G * weights[:, None].to(G.dtype)

    def _training_batch(self, X, y):
        """Gradients of a prepared training batch, in the form ``_inner`` takes.

        Flat per-sample gradients (b, p) here.
        """
        return self._gradients(X, y)

    def _training_bytes(self):
        """Bytes of the whole training set's ``_training_batch`` results."""
        return self.n_train_ * self._vector_size() * self.dtype_.itemsize

    def _curvature_product(self, V, curvature, rows=None, batch_size=None):
        """``V @ H`` for ``V`` of shape (k, p): the objective's curvature.

        ``H`` is the mean over the training rows at positions ``rows``
        (default: all) of the loss Hessian (``curvature="hessian"``) or
        Gauss-Newton matrix (``"ggn"``), plus the model's L2 term. Damping is
        not included. ``batch_size``: rows per pass (default: the estimator's).
        """
        X, y = self._X_train, self._y_train
        rows = slice(None) if rows is None else rows
        X, y = X[rows], y[rows]
        total = torch.zeros_like(V)
        # the products run in the gradient passes' dtype, the sum in V's
        V_model = V.to(self.model_.dtype)
        for start, X_b, y_b in self._batches(X, y, "curvature", batch_size):
            weights = self._weights_at(rows, start, len(X_b))
            total += self.model_.curvature_matvec(V_model, X_b, y_b, curvature, weights)
        return total / len(X) + V * self.model_.l2

    def _vector_size(self):
        return self._layers()[-1][1].stop

    def _test_chunk_size(self):
        # per test row: its preconditioned gradient (p,) and, per worker, a
        # float32 row of scores against a training batch plus top-k indices
        row_bytes = self._vector_size() * self.dtype_.itemsize + 16 * self.batch_size
        budget = get_config()["working_memory"] * 2**20
        return max(1, int(budget // row_bytes))

    def _shards(self):
        """``[(start, estimator, store)]``: who scores which training rows.

        Serially, the estimator itself scores every row. With ``n_jobs``,
        each worker gets a copy that shares this one's tensors and scores one
        contiguous slice (see ``_parallel``). ``store`` caches that slice's
        training gradients from one test chunk to the next.
        """
        bounds = shard_bounds(self.n_train_, self.batch_size, self.n_jobs)
        if len(bounds) == 1:
            return [(0, self, [])]
        shards = []
        for start, stop in bounds:
            worker = copy_sharing_tensors(self)
            worker._worker_rows = slice(start, stop)
            shards.append((start, worker, []))
        return shards

    def _queries(self, X, y):
        """Yield ``(start, Q)``: preconditioned test gradients, chunk by chunk."""
        chunk = self._test_chunk_size()
        # the caller's loops over training rows run while this generator is
        # suspended: they advance the same "scoring" bar
        with phase("scoring", self.verbose):
            for start in range(0, len(X), chunk):
                # one solve per chunk: iterative solvers pay per call, not per row
                G = torch.cat(
                    [
                        self._query_gradients(X_b, y_b)
                        for _, X_b, y_b in self._batches(
                            X[start : start + chunk], y[start : start + chunk], "test"
                        )
                    ]
                )
                yield start, flush_denormals(self._apply_inverse(G))

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
        # {layer name: [slices]}: a name may own several blocks (e.g. checkpoints)
        groups = {}
        for name, sl in self._layers() if by_layer else [("", None)]:
            groups.setdefault(name, []).append(sl)
        self._check_dense_size(len(X_t) * len(groups))
        out = np.empty((len(groups), len(X_t), self.n_train_), np.float32)
        shards = self._shards()
        for t0, Q in self._queries(X_t, y_t):
            for start, blocks in self._map_shards(shards, "_score_rows", Q, groups):
                for j0, block in blocks:
                    j0 += start
                    out[:, t0 : t0 + len(Q), j0 : j0 + block.shape[2]] = block
        check_finite(self, out, "score", (X_t, y_t, index))
        if not by_layer:
            return pd.DataFrame(out[0], index=index, columns=self.train_index_)
        rows = pd.MultiIndex.from_product(
            [list(groups), index], names=["layer", "test"]
        )
        return pd.DataFrame(
            out.reshape(len(rows), -1), index=rows, columns=self.train_index_
        )

    def _score_rows(self, store, Q, groups):
        """``[(start, (n_groups, m, b) scores)]`` of ``Q`` against this object's rows."""
        return [
            (
                j0,
                torch.stack(
                    [
                        sum(self._influence(Q, G, layer=sl) for sl in slices)
                        for slices in groups.values()
                    ]
                )
                .float()
                .cpu()
                .numpy(),
            )
            for j0, G in self._training_gradients(store)
        ]

    def _map_shards(self, shards, method, *args):
        return map_shards(shards, self.n_jobs, method, *args)

    def _check_dense_size(self, n_rows):
        budget = get_config()["max_score_memory"]
        mib = n_rows * self.n_train_ * 4 / 2**20
        if mib > budget:
            raise ValueError(
                f"score would build a {n_rows} x {self.n_train_} frame ({mib:,.0f} MiB), "
                f"above max_score_memory={budget} MiB. Use top_k(X_test, y_test, k=...) "
                "or value(X_val, y_val), which stream over the training set, or raise "
                "the budget with dataval.set_config(max_score_memory=...)."
            )

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
        sign = 1.0 if kind == "helpful" else -1.0
        values = np.empty((len(X_t), k), np.float32)
        positions = np.empty((len(X_t), k), np.int64)
        shards = self._shards()
        for t0, Q in self._queries(X_t, y_t):
            # each shard's own top k, then the best k of those
            best = self._map_shards(shards, "_top_k_rows", Q, k, sign)
            scores = torch.cat([scores for _, (scores, _) in best], 1)
            at = torch.cat([j0 + at for j0, (_, at) in best], 1)
            scores, chosen = scores.topk(k, dim=1)
            values[t0 : t0 + len(Q)] = (sign * scores).numpy()
            positions[t0 : t0 + len(Q)] = at.gather(1, chosen).numpy()
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
        return top

    def _top_k_rows(self, store, Q, k, sign):
        """``sign * scores`` (m, <=k) of the best rows here, and their positions."""
        best = torch.empty(len(Q), 0, dtype=self.dtype_, device=self.device_)
        best_at = torch.empty(len(Q), 0, dtype=torch.long, device=self.device_)
        for j0, G in self._training_gradients(store):
            block = sign * self._influence(Q, G)
            at = torch.arange(j0, j0 + len(G), device=self.device_).expand_as(block)
            best, chosen = torch.cat([best, block], 1).topk(
                min(k, best.shape[1] + block.shape[1]), dim=1
            )
            best_at = torch.cat([best_at, at], 1).gather(1, chosen)
        return best.cpu(), best_at.cpu()

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
        total = None
        for _, X_b, y_b in self._batches(X_t, y_t, "validation"):
            g = self._query_gradients(X_b, y_b).sum(0)
            total = g if total is None else total + g
        q = self._apply_inverse((total / len(X_t))[None])
        value = self._training_series("_value_rows", "value", q)
        check_finite(self, value.to_numpy(), "value", (X_t, y_t, index))
        return value

    def _value_rows(self, store, q):
        return np.concatenate(
            [
                self._influence(q, G)[0].float().cpu().numpy()
                for _, G in self._training_gradients(store)
            ]
        )

    def _training_series(self, method, name, *args):
        """A Series over the training rows gathered from ``method`` on each shard."""
        shards = [(start, worker, None) for start, worker, _ in self._shards()]
        with phase("scoring", self.verbose):
            values = [v for _, v in self._map_shards(shards, method, *args)]
        values = np.concatenate(values)
        return pd.Series(values, index=self.train_index_, name=name)

    def self_influence(self):
        """``(1/n) w_j g_j^T (H + damping I)^{-1} g_j`` for every training row.

        Large values mark rows the model had to bend to fit: unusual or
        mislabeled examples.

        Returns
        -------
        self_influence : Series indexed by ``train``, float32
        """
        check_is_fitted(self)
        values = self._training_series("_self_influence_rows", "self_influence")
        check_finite(self, values.to_numpy(), "self_influence")
        return values

    def _self_influence_rows(self, store):
        rows = self._worker_rows
        blocks = []
        for j0, G in self._training_gradients(store):
            block = self._influence(self._apply_inverse(G), G, diagonal=True)
            weights = self._weights_at(rows, j0, len(block))
            if weights is not None:
                # both sides carry w_j; the effect of removing row j on its
                # own (unweighted) loss carries it once
                block = torch.where(weights > 0, block / weights, 0.0)
            blocks.append(block.float().cpu().numpy())
        return np.concatenate(blocks)


def dense_size_message(n_params, limit, name):
    """Error text for a dense matrix that would be too large."""
    gib = n_params**2 * 8 / 2**30
    return (
        f"{name} forms a dense {n_params} x {n_params} matrix ({gib:.1f} GiB in "
        f"float64), above max_params={limit}. Use an estimator that never forms it: "
        "CGInfluence, LiSSAInfluence, ArnoldiInfluence or EKFACInfluence."
    )
