"""TRAK: influence in a randomly projected gradient space."""

from numbers import Integral

import numpy as np
import torch
from sklearn.utils._param_validation import Interval

from ..._base import BaseInfluence
from ..._core.parts import BlockDiagonal, FlatGradients, Stacked
from ..._finite import check_finite
from ..._numerics.checkpoints import checkpoint_models
from ..._numerics.damping import resolve_damping
from ..._numerics.seeding import draw_seed
from ..._numerics.spectral import Eigenbasis, warn_if_not_positive_definite
from .random import Projected, RandomProjection


class TRAKInfluence(BaseInfluence):
    """TRAK: the Gauss-Newton influence in a random projection of gradient space.

    Gradients are projected to ``projection_dim`` dimensions by a seeded
    Gaussian matrix ``P`` (Johnson-Lindenstrauss; generated block by block,
    never stored whole when large), and the influence equation is solved there
    (Park et al., 2023)::

        influence[i, j] = (1/n) (P g_i)^T (P (G + damping I) P^T)^{-1} (P g_j)

    with ``g`` the loss gradients and ``G`` the generalized Gauss-Newton matrix
    of the training objective, projected as::

        P G P^T = (1/n) sum_j Phi_j^T H_j Phi_j + P diag(l2) P^T

    where ``Phi_j = J_j P^T`` (k, projection_dim) is the projected Jacobian of
    row ``j``'s k outputs, ``H_j`` (k, k) the Hessian of its loss with respect
    to those outputs and ``l2`` the model's L2 term. Time and memory grow with
    ``projection_dim`` (a ``projection_dim^2`` matrix, one pass over the
    training data), not with the squared parameter count.

    The damping is that of parameter space, projected: ``damping P P^T``. For
    ``projection_dim`` much smaller than the parameter count p,
    ``P P^T ~ (p / projection_dim) I``, so this is TRAK's
    ``(Phi^T Phi + lambda I)^{-1}`` with ``lambda = damping * p /
    projection_dim``; for ``projection_dim >= p`` (the inverse is then a
    pseudo-inverse on the p-dimensional range of ``P``) and for
    ``projection_dim=None`` (no projection) the result is exactly
    :class:`ExactInfluence` with ``curvature="ggn"`` and the same damping.

    TRAK's paper builds ``Phi^T Phi`` from gradients of the *margin*
    ``f = log(p / (1 - p))`` (p the probability of the true class): the
    Gauss-Newton matrix with the loss's output Hessian replaced by one. This
    estimator keeps the output Hessian and uses loss gradients on both sides,
    so the scores follow the package's sign and scale: positive = helpful, in
    units of the test loss. For cross-entropy ``grad loss = -(1 - p) grad f``,
    so TRAK's margin score of a pair is this one (with TRAK's curvature) times
    ``n / (1 - p_i)``: a positive factor per test row, the same ranking.

    Parameters
    ----------
    damping : "auto" or float, default="auto"
        ``lambda`` added to the curvature's diagonal before projection.
        ``"auto"`` uses 0.1 times the mean eigenvalue ``trace(G) / p``,
        estimated in the projected space as ``trace(P G P^T) / trace(P P^T)``
        (exact without projection; averaged over the ``ensemble``). The value
        used is ``damping_``.
    measurement : {"loss", "margin", "log_prob"} or callable, default="loss"
        As in :class:`ExactInfluence`.
    loss : "auto" or callable, default="auto"
        As in :class:`ExactInfluence`.
    batch_size : int, default=256
        Rows per vectorized gradient pass. The curvature pass holds the
        Jacobians of ``batch_size`` rows, ``k`` times a gradient each.
    device : "auto", str or torch.device, default="auto"
        Where to compute; ``"auto"`` picks CUDA when available.
    dtype : None, str or torch.dtype, default=None
        Floating dtype of the computation; ``None`` means float32.
    random_state : int, RandomState or None, default=None
        Seeds the projection.
    verbose : int, default=0
        Show progress bars when positive.
    n_jobs : int, default=None
        Workers scoring slices of the training set in parallel (joblib;
        threads unless a ``joblib.parallel_config`` picks another backend,
        e.g. ``"dask"``). ``None`` means 1 outside such a context, ``-1`` all
        processors. See :doc:`/scaling`.
    projection_dim : int or None, default=2048
        Dimension of the projected gradients. ``None`` disables the projection
        (only sensible for small models).
    ensemble : list of dict or path, default=None
        State dicts of independently trained models (or checkpoints of one
        run), as in :class:`TracIn`; the scores are averaged over them, each
        with its own projected curvature (TRAK's ensemble). ``None`` uses the
        fitted model only.

    Attributes
    ----------
    damping_ : float
        The ``lambda`` used: ``damping``, or the ``"auto"`` value.
    eigenvalues_ : torch.Tensor of shape (n_models, projection_dim)
        Eigenvalues of each checkpoint's ``P (G + damping I) P^T``, ascending
        (the first ``projection_dim_ - n_params_`` are zero up to rounding
        when the projection has more dimensions than parameters).
    projection_dim_ : int
        Dimension of the space the influence is computed in.
    n_models_ : int
        Number of models in the ensemble.
    n_train_ : int
        Number of training rows.
    n_params_ : int
        Number of trainable parameters.
    train_index_ : pandas.Index
        Index of the training rows (named ``train``).

    Notes
    -----
    The projection mixes the layers, so ``score(..., by_layer=True)`` has a
    single layer, ``"projected"``.

    See Also
    --------
    ExactInfluence : The unprojected Gauss-Newton influence (``curvature="ggn"``).
    TracIn : Gradient similarity along checkpoints, without curvature.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.neural_network import MLPClassifier
    >>> from dataval import TRAKInfluence
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = MLPClassifier(
    ...     (8,), solver="lbfgs", alpha=1.0, max_iter=2000, random_state=0
    ... ).fit(X, y)
    >>> trak = TRAKInfluence(projection_dim=32, random_state=0).fit(clf, X, y)
    >>> trak.score(X[:3], y[:3]).shape
    (3, 150)
    >>> trak.projection_dim_
    32
    """

    _parameter_constraints = {
        **BaseInfluence._parameter_constraints,
        "projection_dim": [None, Interval(Integral, 1, None, closed="left")],
        "ensemble": [None, list, tuple],
        "random_state": ["random_state"],
    }
    _saved_state = (
        "_seed",
        "damping_",
        "n_models_",
        "projection_dim_",
        "eigenvalues_",
        "_inverse_eigenvalues",
        "_eigenvectors",
    )

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
        projection_dim=2048,
        ensemble=None,
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
        self.projection_dim = projection_dim
        self.ensemble = ensemble

    def _fit_curvature(self):
        self._seed = draw_seed(self.random_state)
        self._set_projection_and_models()
        self.n_models_ = len(self._models)
        self.projection_dim_ = dim = self._projection.out_dim
        # P (G + damping I) P^T has rank p < dim: its dim - p null directions
        # (the smallest eigenvalues) are left out of the inverse
        null = max(0, dim - self.n_params_)
        curvatures = [self._projected_curvature(model) for model in self._models]
        for curvature in curvatures:
            check_finite(self, curvature, "The projected curvature")
        # P P^T: the identity of parameter space, projected
        identity = self._projection.gram(
            torch.ones(self.n_params_, device=self.device_)
        )
        self.damping_ = resolve_damping(
            self.damping,
            # trace(P C P^T) / trace(P P^T) estimates trace(C) / p
            lambda: np.mean([float(c.trace() / identity.trace()) for c in curvatures]),
            "trace(P G P^T) / trace(P P^T)",
        )
        eigenvalues, self._inverse_eigenvalues, self._eigenvectors = [], [], []
        for curvature in curvatures:
            curvature = curvature + self.damping_ * identity
            values, vectors = torch.linalg.eigh(curvature)
            eigenvalues.append(values)
            self._inverse_eigenvalues.append(
                torch.cat([torch.zeros_like(values[:null]), 1 / values[null:]])
            )
            self._eigenvectors.append(vectors)  # (dim, dim), columns
        self.eigenvalues_ = torch.stack(eigenvalues)
        warn_if_not_positive_definite(
            self.eigenvalues_[:, null:].ravel(), 0.0, "ggn", "P (G + damping I) P^T"
        )

    def _set_projection_and_models(self):
        """The seeded projection and the checkpoint models: no pass over the data."""
        self._projection = RandomProjection(
            self.n_params_, self.projection_dim, self._seed, self.device_, self.dtype_
        )
        self._models = checkpoint_models(self.model_, self.ensemble, "ensemble")

    def _restore_state(self, state):
        super()._restore_state(state)
        self._set_projection_and_models()

    def _projected_curvature(self, model):
        """``P G P^T`` (dim, dim) of one model, undamped, symmetric."""
        dim = self.projection_dim_
        total = torch.zeros(dim, dim, dtype=self.dtype_, device=self.device_)
        for _, X_b, y_b, w_b in self._data().passes("curvature"):
            Phi = self._projection(model.per_sample_jacobians(X_b))  # (b, k, dim)
            H = model.output_hessians(X_b, y_b).to(self.dtype_)  # (b, k, k)
            if w_b is not None:
                H = H * w_b[:, None, None]
            total += Phi.flatten(0, 1).T @ (H @ Phi).flatten(0, 1)
        total = total / self.n_train_ + self._projection.gram(model.l2)
        return (total + total.T) / 2

    def _featurizer(self):
        # (b, K * dim): projected gradients at every checkpoint side by side
        return Stacked(
            [
                Projected(FlatGradients(m, m.dtype), self._projection)
                for m in self._models
            ]
        )

    def _curvature(self):
        # one eigenbasis per model; the ensemble averages their scores
        dim, K = self.projection_dim_, self.n_models_
        return BlockDiagonal(
            [
                (slice(k * dim, (k + 1) * dim), Eigenbasis(vectors, inverse / K))
                for k, (inverse, vectors) in enumerate(
                    zip(self._inverse_eigenvalues, self._eigenvectors)
                )
            ]
        )
