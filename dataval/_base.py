"""The estimator contract and the one influence equation.

Every estimator estimates

    influence[i, j] = (1/n) g_i^T (H + damping I)^{-1} g_j

with ``g = grad loss`` of a test row ``i`` and a training row ``j``. Subclasses
supply only ``_fit_curvature`` (what they learn about the training data) and
``_apply_inverse`` (how they apply ``(H + damping I)^{-1}``). Scoring, streaming,
indexes and output frames live here, once.
"""

from abc import ABCMeta, abstractmethod
from numbers import Integral, Real

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
from tqdm.auto import tqdm

from ._adapters import adapt_model
from ._config import get_config
from ._functional import FunctionalModel
from ._validation import check_X_y, resolve_device, resolve_dtype

# bytes of preconditioned test gradients (or cached training gradients) held at once
_WORKING_MEMORY = 512 * 2**20


class BaseInfluence(BaseEstimator, metaclass=ABCMeta):
    """Base class of influence estimators; not used directly.

    Subclasses define ``__init__`` (storing arguments only), extend
    ``_parameter_constraints`` and implement ``_fit_curvature`` and
    ``_apply_inverse``.
    """

    _parameter_constraints: dict = {
        "damping": [Interval(Real, 0, None, closed="left")],
        "loss": [StrOptions({"auto"}), callable],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str, torch.device],
        "dtype": [None, str, torch.dtype],
        "verbose": ["verbose"],
    }

    #: dtype of gradients and solves when ``dtype=None``
    _default_dtype = torch.float32
    #: whether the pair score carries the ``1/n`` of the influence equation
    _per_training_point = True

    # ------------------------------------------------------------------ fitting
    def fit(self, model, X, y):
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

        Returns
        -------
        self : object
            The fitted estimator.
        """
        validate_parameter_constraints(
            self._parameter_constraints,
            self.get_params(deep=False),
            caller_name=type(self).__name__,
        )
        index = check_X_y(X, y)
        device = resolve_device(self.device)
        dtype = resolve_dtype(self.dtype, self._default_dtype)
        adapted = adapt_model(model, self.loss, X, y)
        X_t, y_t = adapted.prepare_X(X), adapted.prepare_y(y)
        self.model_ = FunctionalModel(adapted, device, dtype)
        self.device_ = device
        self.dtype_ = dtype
        self.n_train_ = len(X_t)
        self.n_params_ = self.model_.n_params
        self.train_index_ = pd.Index(index).rename("train")
        self._X_train, self._y_train = X_t, y_t
        self._fit_curvature()
        return self

    @abstractmethod
    def _fit_curvature(self):
        """Learn what ``_apply_inverse`` needs from the training data."""

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
    def _gradients(self, X, y):
        """Per-sample loss gradients (b, p) of a prepared batch."""
        return self.model_.per_sample_grads(X, y)

    def _layers(self):
        """``[(layer name, slice of p)]``: the blocks ``by_layer`` reports."""
        return self.model_.layers

    def _batches(self, X, y, desc, batch_size=None):
        """Yield ``(start, X_batch, y_batch)`` on the device."""
        size = batch_size or self.batch_size
        starts = range(0, len(X), size)
        if self.verbose:
            starts = tqdm(starts, desc=desc, unit="batch", leave=False)
        for start in starts:
            X_b, y_b = self.model_.prepare(
                X[start : start + size], y[start : start + size]
            )
            yield start, X_b, y_b

    def _training_gradients(self, store=None):
        """Yield ``(start, G)`` over the training set.

        ``store`` (a list owned by the caller) keeps the gradients after the
        first pass when they fit in working memory, for the next test chunk.
        """
        if store:
            yield from store
            return
        fits = self._training_bytes() <= _WORKING_MEMORY
        keep = [] if store is not None and fits else None
        for start, X_b, y_b in self._batches(self._X_train, self._y_train, "train"):
            G = self._training_batch(X_b, y_b)
            if keep is not None:
                keep.append((start, G))
            yield start, G
        if keep is not None:
            store.extend(keep)

    def _training_rows(self, positions):
        """Yield ``(offset, G)``: ``_training_batch`` of the rows at ``positions``."""
        X, y = self._X_train[positions], self._y_train[positions]
        for start, X_b, y_b in self._batches(X, y, "train"):
            yield start, self._training_batch(X_b, y_b)

    def _training_batch(self, X, y):
        """Gradients of a prepared training batch, in the form ``_inner`` takes.

        Flat per-sample gradients (b, p) here.
        """
        return self._gradients(X, y)

    def _training_bytes(self):
        """Bytes of the whole training set's ``_training_batch`` results."""
        return self.n_train_ * self._vector_size() * self.dtype_.itemsize

    def _curvature_product(self, V, curvature, X=None, y=None):
        """``V @ H`` for ``V`` of shape (k, p): the objective's curvature.

        ``H`` is the mean over the rows of ``(X, y)`` (default: the training
        set) of the loss Hessian (``curvature="hessian"``) or Gauss-Newton
        matrix (``"ggn"``), plus the model's L2 term. Damping is not included.
        """
        if X is None:
            X, y = self._X_train, self._y_train
        total = torch.zeros_like(V)
        for _, X_b, y_b in self._batches(X, y, "curvature"):
            total += self.model_.curvature_matvec(V, X_b, y_b, curvature)
        return total / len(X) + V * self.model_.l2

    def _vector_size(self):
        return self._layers()[-1][1].stop

    def _test_chunk_size(self):
        return max(1, _WORKING_MEMORY // (self._vector_size() * self.dtype_.itemsize))

    def _queries(self, X, y):
        """Yield ``(start, Q)``: preconditioned test gradients, chunk by chunk."""
        chunk = self._test_chunk_size()
        for start in range(0, len(X), chunk):
            Q = torch.cat(
                [
                    self._apply_inverse(self._gradients(X_b, y_b))
                    for _, X_b, y_b in self._batches(
                        X[start : start + chunk], y[start : start + chunk], "test"
                    )
                ]
            )
            yield start, Q

    def _prepare_test(self, X, y):
        check_is_fitted(self)
        index = check_X_y(X, y, name_X="X_test", name_y="y_test")
        adapted = self.model_.adapted
        return (
            adapted.prepare_X(X),
            adapted.prepare_y(y),
            pd.Index(index).rename("test"),
        )

    # -------------------------------------------------------------- outputs
    def score(self, X_test, y_test, by_layer=False):
        """Influence of every training row on the loss of every test row.

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
            negative = harmful. Index ``test`` (the pandas index of ``X_test``
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
        store = []
        for t0, Q in self._queries(X_t, y_t):
            for j0, G in self._training_gradients(store):
                for g, slices in enumerate(groups.values()):
                    block = sum(self._influence(Q, G, layer=sl) for sl in slices)
                    out[g, t0 : t0 + len(Q), j0 : j0 + len(G)] = block.float().cpu()
        if not by_layer:
            return pd.DataFrame(out[0], index=index, columns=self.train_index_)
        rows = pd.MultiIndex.from_product(
            [list(groups), index], names=["layer", "test"]
        )
        return pd.DataFrame(
            out.reshape(len(rows), -1), index=rows, columns=self.train_index_
        )

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

    def top_k(self, X_test, y_test, k=10, kind="helpful"):
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

        Returns
        -------
        top : DataFrame
            Long format with columns ``test``, ``rank`` (1 = strongest),
            ``train`` and ``influence``; ``n_test * k`` rows.
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
        store = []
        for t0, Q in self._queries(X_t, y_t):
            best = torch.empty(len(Q), 0, dtype=self.dtype_, device=self.device_)
            best_at = torch.empty(len(Q), 0, dtype=torch.long, device=self.device_)
            for j0, G in self._training_gradients(store):
                block = sign * self._influence(Q, G)
                at = torch.arange(j0, j0 + len(G), device=self.device_).expand_as(block)
                best, chosen = torch.cat([best, block], 1).topk(
                    min(k, best.shape[1] + block.shape[1]), dim=1
                )
                best_at = torch.cat([best_at, at], 1).gather(1, chosen)
            values[t0 : t0 + len(Q)] = (sign * best).float().cpu().numpy()
            positions[t0 : t0 + len(Q)] = best_at.cpu().numpy()
        return pd.DataFrame(
            {
                "test": np.repeat(index.to_numpy(), k),
                "rank": np.tile(np.arange(1, k + 1), len(X_t)),
                "train": self.train_index_.to_numpy()[positions.ravel()],
                "influence": values.ravel(),
            }
        )

    def value(self, X_val, y_val):
        """Influence of each training row on the mean loss over a validation set.

        Equals ``score(X_val, y_val).mean(axis=0)`` but needs one inverse
        application and streams over the training set.

        Returns
        -------
        value : Series indexed by ``train``, float32
            Positive = the row helps the validation loss.
        """
        X_t, y_t, _ = self._prepare_test(X_val, y_val)
        total = None
        for _, X_b, y_b in self._batches(X_t, y_t, "validation"):
            g = self._gradients(X_b, y_b).sum(0)
            total = g if total is None else total + g
        q = self._apply_inverse((total / len(X_t))[None])
        values = np.empty(self.n_train_, np.float32)
        for j0, G in self._training_gradients():
            values[j0 : j0 + len(G)] = self._influence(q, G)[0].float().cpu().numpy()
        return pd.Series(values, index=self.train_index_, name="value")

    def self_influence(self):
        """``(1/n) g_j^T (H + damping I)^{-1} g_j`` for every training row.

        Large values mark rows the model had to bend to fit: unusual or
        mislabeled examples.

        Returns
        -------
        self_influence : Series indexed by ``train``, float32
        """
        check_is_fitted(self)
        values = np.empty(self.n_train_, np.float32)
        for j0, G in self._training_gradients():
            Q = self._apply_inverse(G)
            values[j0 : j0 + len(G)] = (
                self._influence(Q, G, diagonal=True).float().cpu().numpy()
            )
        return pd.Series(values, index=self.train_index_, name="self_influence")


def dense_size_message(n_params, limit, name):
    """Error text for a dense matrix that would be too large."""
    gib = n_params**2 * 8 / 2**30
    return (
        f"{name} forms a dense {n_params} x {n_params} matrix ({gib:.1f} GiB in "
        f"float64), above max_params={limit}. Use an estimator that never forms it: "
        "CGInfluence, LiSSAInfluence, ArnoldiInfluence or EKFACInfluence."
    )
