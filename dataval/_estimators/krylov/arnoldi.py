"""Influence through the top eigenpairs of the curvature, found by Lanczos."""

from numbers import Integral

from sklearn.utils._param_validation import Interval, StrOptions

from ..._numerics.spectral import Eigenbasis, warn_if_not_positive_definite
from .base import MatrixFreeInfluence


class ArnoldiInfluence(MatrixFreeInfluence):
    """Influence projected on the ``rank`` dominant eigenvectors of the curvature.

    Finds the ``rank`` eigenpairs of ``H`` largest in magnitude with the
    Lanczos method (Arnoldi's iteration for a symmetric matrix; Schioppa et
    al., 2022), in torch on the estimator's device, with full
    re-orthogonalization. Then ``(H + damping I)^{-1}`` is replaced by
    ``U diag(1 / (eigenvalues + damping)) U^T``.

    The complement of the eigenspace (the directions of small curvature,
    which the exact inverse amplifies most) is by default weighted
    ``1 / damping``, as if its eigenvalues were zero
    (``complement="damping"``): close to exact when they are small next to
    the damping, and converging to the exact inverse as ``rank`` grows.
    ``complement="ignore"`` drops it: a gradient's part orthogonal to the
    ``rank`` eigenvectors contributes nothing, a smoothed low-rank stand-in
    rather than an approximation of the exact influence.

    Parameters
    ----------
    damping : "auto" or float, default="auto"
        ``lambda`` added to the kept eigenvalues; ``"auto"`` uses
        ``0.1 * trace(H) / p`` (Hutchinson estimate, see :ref:`damping`). The value used is
        ``damping_``.
    measurement : {"loss", "margin", "log_prob"} or callable, default="loss"
        As in :class:`ExactInfluence`.
    loss : "auto" or callable, default="auto"
        As in :class:`ExactInfluence`.
    batch_size : int, default=256
        Rows per vectorized gradient or curvature pass.
    device : "auto", str or torch.device, default="auto"
        Where to compute; ``"auto"`` picks CUDA when available.
    dtype : None, str or torch.dtype, default=None
        Floating dtype of the computation; ``None`` means float32.
    random_state : int, RandomState instance or None, default=None
        Seeds the Lanczos start vector.
    verbose : int, default=0
        Show progress bars (Lanczos steps) when positive.
    n_jobs : int, default=None
        Workers scoring slices of the training set in parallel (joblib;
        threads unless a ``joblib.parallel_config`` picks another backend,
        e.g. ``"dask"``). ``None`` means 1 outside such a context, ``-1`` all
        processors. See :doc:`/scaling`.
    curvature : {"auto", "hessian", "ggn"}, default="auto"
        The Hessian of the objective, or its generalized Gauss-Newton matrix.
        ``"auto"``: the Hessian for a model whose only parameters are one
        linear layer (scikit-learn's linear models, where the two coincide),
        the Gauss-Newton matrix for any other model (networks: their Hessian
        is indefinite where they fit noisy labels).
    rank : int, default=50
        Eigenpairs kept (at most the number of parameters).
    complement : {"damping", "ignore"}, default="damping"
        What the directions outside the kept eigenvectors contribute: the
        gradient's component there divided by ``damping`` (as if their
        eigenvalues were 0), or nothing. ``"damping"`` overweights them when
        the damping is small next to the ``rank``-th eigenvalue; it needs a
        positive damping.
    max_iter : int, default=None
        Lanczos steps (size of the Krylov subspace), each one full-batch
        curvature product. ``None`` uses ``min(p, 2 * rank + 20)``; more steps
        give more accurate trailing eigenpairs.

    Attributes
    ----------
    curvature_ : str
        The curvature used: ``"hessian"`` or ``"ggn"``.
    eigenvalues_ : torch.Tensor of shape (rank,)
        Eigenvalues of the undamped curvature kept, largest magnitude first.
    eigenvectors_ : torch.Tensor of shape (n_params, rank)
        The matching orthonormal eigenvectors, as columns.
    damping_ : float
        The damping used.
    n_train_ : int
        Number of training rows.
    n_params_ : int
        Number of trainable parameters.
    train_index_ : pandas.Index
        Index of the training rows (named ``train``).
    device_ : torch.device
        Where the estimator computes.

    See Also
    --------
    ExactInfluence : All ``p`` eigenpairs, from the dense matrix.

    Notes
    -----
    A kept eigenvalue with ``eigenvalue + damping <= 0`` raises a
    :class:`~dataval.exceptions.NotPositiveDefiniteWarning`.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from dataval import ArnoldiInfluence
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = LogisticRegression(max_iter=1000).fit(X, y)
    >>> inf = ArnoldiInfluence(rank=5, random_state=0).fit(clf, X, y)
    >>> inf.eigenvalues_.shape
    torch.Size([5])
    >>> inf.score(X[:3], y[:3]).shape
    (3, 150)
    """

    _parameter_constraints = {
        **MatrixFreeInfluence._parameter_constraints,
        "rank": [Interval(Integral, 1, None, closed="left")],
        "complement": [StrOptions({"ignore", "damping"})],
        "max_iter": [None, Interval(Integral, 1, None, closed="left")],
    }
    _saved_state = MatrixFreeInfluence._saved_state + ("eigenvalues_", "eigenvectors_")

    def __init__(
        self,
        *,
        damping="auto",
        measurement="loss",
        loss="auto",
        batch_size=256,
        device="auto",
        dtype=None,
        random_state=None,
        verbose=0,
        n_jobs=None,
        curvature="auto",
        rank=50,
        complement="damping",
        max_iter=None,
    ):
        self.damping = damping
        self.measurement = measurement
        self.loss = loss
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose
        self.n_jobs = n_jobs
        self.curvature = curvature
        self.rank = rank
        self.complement = complement
        self.max_iter = max_iter

    def _fit_operator(self):
        p = self.n_params_
        if self.rank > p:
            raise ValueError(
                f"rank={self.rank} exceeds the model's {p} trainable parameters; "
                f"use a rank of at most {p}."
            )
        if self.complement == "damping" and not self.damping_ > 0:
            raise ValueError(
                "complement='damping' divides the complement by the damping, which "
                f"is {self.damping_:g}; use a positive damping or "
                "complement='ignore'."
            )
        n_iter = min(p, self.max_iter or 2 * self.rank + 20)
        if n_iter < self.rank:
            raise ValueError(
                f"max_iter={self.max_iter} is below rank={self.rank}: Lanczos finds at "
                "most max_iter eigenpairs. Use max_iter >= rank, or None."
            )
        values, vectors = self._ritz_pairs(n_iter)
        keep = values.abs().argsort(descending=True)[: self.rank]
        self.eigenvalues_ = values[keep]
        self.eigenvectors_ = vectors[:, keep]  # (p, rank)
        warn_if_not_positive_definite(
            self.eigenvalues_,
            self.damping_,
            self.curvature_,
            what="The kept eigenpairs of H + damping I",
        )

    def _curvature(self):
        complement = 1 / self.damping_ if self.complement == "damping" else 0.0
        return Eigenbasis(
            self.eigenvectors_, 1 / (self.eigenvalues_ + self.damping_), complement
        )
