"""Influence through the dense curvature matrix: the reference estimator."""

from numbers import Integral

import torch
from sklearn.utils._param_validation import Interval, StrOptions

from ..._base import BaseInfluence
from ..._core.stream import working_bytes
from ..._finite import check_finite
from ..._numerics.curvature import resolve_curvature
from ..._numerics.damping import resolve_damping
from ..._numerics.operator import curvature_product
from ..._numerics.seeding import torch_generator
from ..._numerics.spectral import (
    DenseFactor,
    factor_damped,
    warn_if_not_positive_definite,
)
from .hessian import LinearHessian, linear_layers

# curvature columns computed per vectorized pass (memory grows with it)
_COLUMNS_PER_PASS = 64


class ExactInfluence(BaseInfluence):
    """Influence from the dense Hessian (or Gauss-Newton matrix), solved exactly.

    Forms the ``p x p`` curvature of the training objective in float64,
    computes its eigenvalues, factors ``H + damping I`` (Cholesky when it is
    positive definite, symmetric indefinite ``L D L^T`` otherwise) and
    applies its inverse exactly. The curvature's block among the model's
    ``torch.nn.Linear`` layers is summed from each row's curvature in the
    layers' outputs by matrix products; the rows of other parameters come
    from curvature-vector products. It is
    the reference every other estimator is compared with; its cost grows as
    ``p^2`` in memory and ``p^3`` in time, so it is meant for models up to a
    few thousand parameters (``max_params``).

    Parameters
    ----------
    damping : "auto" or float, default="auto"
        ``lambda`` added to the curvature's diagonal. ``"auto"`` uses 0.1
        times the mean eigenvalue ``trace(H) / p`` of the curvature (exact
        here; the same rule on every estimator, see :ref:`damping`). Must make
        ``H + lambda I`` positive definite for the result to mean anything (a
        warning says when it does not). Pass ``damping=0`` (or a small
        number) for the leave-one-out influence of a convex model with an L2
        term. The value used is ``damping_``.
    measurement : {"loss", "margin", "log_prob"} or callable, default="loss"
        What the influence is *on*: the query row's loss, its margin (target
        logit minus the largest other logit), the log-probability of its
        target (summed over the positions that are not ``-100``), or
        ``f(output, target)`` returning one value per row. Only the query
        side changes; ``influence[i, j]`` estimates ``f_i(theta without j) -
        f_i(theta)``. See :ref:`measurements`.
    loss : "auto" or callable, default="auto"
        For torch modules: ``"auto"`` is cross-entropy for integer targets and
        squared error for float targets; a callable ``loss(output, target)``
        must return one value per row. scikit-learn and skorch models bring
        their own loss.
    batch_size : int, default=256
        Rows per vectorized gradient pass.
    device : "auto", str or torch.device, default="auto"
        Where to compute; ``"auto"`` picks CUDA when available. The user's
        model is never moved: copies of its parameters are.
    dtype : None, str or torch.dtype, default=None
        Floating dtype of the gradient passes (parameter copies, per-sample
        gradients, curvature-vector products); ``None`` means float64.
        ``"bfloat16"`` or ``"float16"`` run them in mixed precision: the
        curvature, its solve and the scores are then float32.
    verbose : int, default=0
        Show progress bars when positive.
    n_jobs : int, default=None
        Workers scoring slices of the training set in parallel (joblib;
        threads unless a ``joblib.parallel_config`` picks another backend,
        e.g. ``"dask"``). ``None`` means 1 outside such a context, ``-1`` all
        processors. See :doc:`/scaling`.
    curvature : {"auto", "hessian", "ggn"}, default="auto"
        The Hessian of the objective, or its generalized Gauss-Newton matrix
        ``J^T H_out J`` (positive semi-definite for convex losses).
        ``"auto"``: the Hessian for a model whose only parameters are one
        linear layer (scikit-learn's linear models, where the two coincide),
        the Gauss-Newton matrix for any other model (networks: their Hessian
        is indefinite where they fit noisy labels).
    max_params : int, default=20000
        Refuse models with more trainable parameters than this.

    Attributes
    ----------
    curvature_ : str
        The curvature used: ``"hessian"`` or ``"ggn"``.
    damping_ : float
        The ``lambda`` of ``(H + lambda I)^{-1}``: ``damping``, or the
        ``"auto"`` value.
    eigenvalues_ : torch.Tensor of shape (n_params,)
        Eigenvalues of the undamped curvature, ascending.
    n_train_ : int
        Number of training rows.
    n_params_ : int
        Number of trainable parameters.
    train_index_ : pandas.Index
        Index of the training rows (named ``train``).
    device_ : torch.device
        Where the estimator computes.
    dtype_ : torch.dtype
        Precision of the curvature, the solve and the score accumulation:
        ``dtype``, but at least float32.

    See Also
    --------
    TracIn : Gradient similarity along training checkpoints.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from dataval import ExactInfluence
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = LogisticRegression(max_iter=1000).fit(X, y)
    >>> inf = ExactInfluence().fit(clf, X, y)
    >>> inf.score(X[:3], y[:3]).shape
    (3, 150)
    >>> inf.top_k(X[:1], y[:1], k=2, kind="harmful").columns.tolist()
    ['test', 'rank', 'train', 'influence']
    """

    _parameter_constraints = {
        **BaseInfluence._parameter_constraints,
        "curvature": [StrOptions({"auto", "hessian", "ggn"})],
        "max_params": [Interval(Integral, 1, None, closed="left")],
    }
    _default_dtype = torch.float64
    _saved_state = ("curvature_", "damping_", "eigenvalues_", "_factor", "_pivots")

    def __init__(
        self,
        *,
        damping="auto",
        measurement="loss",
        loss="auto",
        batch_size=256,
        device="auto",
        dtype=None,
        verbose=0,
        n_jobs=None,
        curvature="auto",
        max_params=20_000,
    ):
        self.damping = damping
        self.measurement = measurement
        self.loss = loss
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.verbose = verbose
        self.n_jobs = n_jobs
        self.curvature = curvature
        self.max_params = max_params

    def _fit_curvature(self):
        self.curvature_ = resolve_curvature(self.curvature, self.model_)
        p = self.n_params_
        if p > self.max_params:
            raise ValueError(dense_size_message(p, self.max_params, "ExactInfluence"))
        H = self._gauss_newton() if self.curvature_ == "ggn" else self._hessian()
        check_finite(self, H, "The curvature matrix")
        # eigenvalues alone (no eigenvectors: a third of the cost) for the
        # damping, the definiteness warning and ``eigenvalues_``
        eigenvalues = torch.linalg.eigvalsh((H + H.T) / 2)
        self.eigenvalues_ = eigenvalues
        self.damping_ = resolve_damping(
            self.damping,
            lambda: eigenvalues.mean(),
            f"trace(H) / p for curvature={self.curvature_!r}",
            ", or use curvature='ggn' (positive semi-definite)",
        )
        warn_if_not_positive_definite(eigenvalues, self.damping_, self.curvature_)
        # (p, p) factor of H + damping I; pivots None for a Cholesky factor
        self._factor, self._pivots = factor_damped(H, eigenvalues, self.damping_)

    def _hessian(self):
        """The dense (p, p) Hessian."""
        H = self._from_linear_layers("hessian")
        return self._by_products("hessian") if H is None else H

    def _gauss_newton(self):
        """The dense (p, p) Gauss-Newton matrix ``mean_b J_b^T H_b J_b + L2``."""
        G = self._from_linear_layers("ggn")
        return self._gauss_newton_by_jacobians() if G is None else G

    def _from_linear_layers(self, curvature):
        """The dense (p, p) curvature, its block among linear layers from per-row
        products (:class:`LinearHessian`), or None for a model without one.

        The rows of the other parameters come from curvature-vector products.
        A product with a random vector checks the result; should a model use
        a linear layer's parameters in a way the block does not see, None.
        """
        model, p = self.model_, self.n_params_
        layers = []
        if model.dtype in (torch.float32, torch.float64):
            layers = linear_layers(model, model.prepare(self._X_train[:1]))
        if not layers:
            return None
        blocks = LinearHessian(model, layers, self.dtype_, curvature)
        rows = min(self.batch_size, max(1, working_bytes(0.5) // blocks.bytes_per_row))
        for _, X_b, y_b, w_b in self._data(rows).passes(curvature):
            blocks.add(X_b, y_b, w_b)
        # every entry is written below: the block, then the other rows
        H = torch.empty(p, p, dtype=self.dtype_, device=self.device_)
        blocks.write(H, 1 / self.n_train_)
        covered = blocks.covered().to(self.device_)
        diagonal = H.diagonal()
        diagonal[covered] += model.l2.to(self.dtype_)[covered]
        others = (~covered).nonzero().flatten()
        for start in range(0, len(others), _COLUMNS_PER_PASS):
            chunk = others[start : start + _COLUMNS_PER_PASS]
            V = torch.zeros(len(chunk), p, dtype=self.dtype_, device=self.device_)
            V[torch.arange(len(chunk)), chunk] = 1  # (c, p) rows of the identity
            H_rows = curvature_product(model, self._data(), V, curvature)
            H[chunk] = H_rows
            H[:, chunk] = H_rows.T
        return H if self._agrees_with_products(H, curvature) else None

    def _agrees_with_products(self, H, curvature):
        """Whether ``H v`` matches a curvature-vector product for a random ``v``
        (to ``sqrt(eps)`` relative: rounding passes, a missed term does not)."""
        v = torch.randn(self.n_params_, generator=torch_generator(0), dtype=self.dtype_)
        v = v.to(self.device_)
        expected = curvature_product(self.model_, self._data(), v[None], curvature)
        error = torch.linalg.vector_norm(H @ v - expected[0])
        tolerance = torch.finfo(self.dtype_).eps ** 0.5
        return bool(error <= tolerance * torch.linalg.vector_norm(expected))

    def _by_products(self, curvature):
        """The dense (p, p) curvature by blocks of curvature-vector products."""
        p, data = self.n_params_, self._data()
        identity = torch.eye(p, dtype=self.dtype_, device=self.device_)
        return torch.cat(
            [
                curvature_product(
                    self.model_, data, identity[i : i + _COLUMNS_PER_PASS], curvature
                )
                for i in range(0, p, _COLUMNS_PER_PASS)
            ]
        )

    def _gauss_newton_by_jacobians(self):
        """The dense (p, p) Gauss-Newton matrix from per-sample output Jacobians
        ``J_b`` (k, p) and loss Hessians ``H_b`` (k, k): one matrix product
        over all rows and outputs instead of ``p`` Gauss-Newton-vector
        products."""
        model, p = self.model_, self.n_params_
        k = model.outputs(model.prepare(self._X_train[:1])).numel()
        rows = min(
            self.batch_size,
            max(1, working_bytes(0.5) // (k * p * self.dtype_.itemsize)),
        )
        G = torch.zeros(p, p, dtype=self.dtype_, device=self.device_)
        for _, X_b, y_b, w_b in self._data(rows).passes("ggn"):
            J = model.per_sample_jacobians(X_b).to(self.dtype_)  # (b, k, p)
            HJ = model.output_hessians(X_b, y_b).to(self.dtype_) @ J  # (b, k, p)
            if w_b is not None:
                HJ *= w_b.to(self.dtype_)[:, None, None]
            G.addmm_(J.flatten(0, 1).T, HJ.flatten(0, 1))
        return G / self.n_train_ + torch.diag(model.l2.to(self.dtype_))

    def _curvature(self):
        return DenseFactor(self._factor, self._pivots)


def dense_size_message(n_params, limit, name):
    """Error text for a dense matrix that would be too large."""
    gib = n_params**2 * 8 / 2**30
    return (
        f"{name} forms a dense {n_params} x {n_params} matrix ({gib:.1f} GiB in "
        f"float64), above max_params={limit}. Use an estimator that never forms it: "
        "CGInfluence, LiSSAInfluence, ArnoldiInfluence or EKFACInfluence."
    )
