"""Influence by conjugate gradient on curvature-vector products."""

import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions

from ..._core.parts import Solver
from ..._layers import select_layers
from ..._numerics.spectral import kronecker_apply, warn_not_positive_definite
from ...exceptions import ConvergenceWarning
from ..kronecker.ekfac import EKFACInfluence
from ..kronecker.kfac import KFACInfluence
from .base import MatrixFreeInfluence


def kronecker_blocks(model, layers):
    """``[(layer, weight slice, bias slice or None)]`` in ``model``'s flat vector."""
    stops = dict(zip(model.names, np.cumsum(model.sizes).tolist()))
    sizes = dict(zip(model.names, model.sizes))
    blocks = []
    for layer in layers:
        weight, *bias = (
            slice(stops[name] - sizes[name], stops[name])
            for name in layer.parameter_names
        )
        blocks.append((layer, weight, bias[0] if bias else None))
    return blocks


def weight_columns(layer, bias):
    return layer.d_in - int(bias is not None)


def layer_matrices(R, blocks):
    """Each layer's gradient matrices (k, d_out, d_in) of flat vectors R (k, p).

    As :mod:`dataval._layers` lays them out: the weight, then the bias column.
    """
    for layer, weight, bias in blocks:
        W = R[:, weight].reshape(len(R), layer.d_out, weight_columns(layer, bias))
        yield W if bias is None else torch.cat([W, R[:, bias, None]], 2)


class CGInfluence(MatrixFreeInfluence):
    """Influence from ``(H + damping I)^{-1}`` applied by conjugate gradient.

    Solves ``(H + damping I) x = g`` for every test gradient ``g`` with
    conjugate gradient, all rows of a batch at once (one independent CG per
    row, vectorized: each iteration is one pass of Hessian-vector products
    over the training set for the rows not yet converged). ``H`` is never
    formed, so memory grows with ``p``, not ``p^2``.

    Parameters
    ----------
    damping : "auto" or float, default="auto"
        ``lambda`` added to the curvature's diagonal. ``"auto"`` uses
        ``0.1 * trace(H) / p`` (Hutchinson estimate, see :ref:`damping`); the
        value used is ``damping_``. A larger damping also makes CG converge
        in fewer iterations.
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
        Seeds the Hutchinson probes of ``damping="auto"``, the Lanczos start
        of the preconditioner and the Hessian subset.
    verbose : int, default=0
        Show progress bars (CG iterations, passes) when positive.
    n_jobs : int, default=None
        Workers scoring slices of the training set in parallel (joblib;
        threads unless a ``joblib.parallel_config`` picks another backend,
        e.g. ``"dask"``). ``None`` means 1 outside such a context, ``-1`` all
        processors. See :doc:`/scaling`.
    curvature : {"auto", "hessian", "ggn"}, default="auto"
        The Hessian of the objective, or its generalized Gauss-Newton matrix
        (positive semi-definite for convex losses). ``"auto"``: the Hessian for a model whose only parameters are one
        linear layer (scikit-learn's linear models, where the two coincide),
        the Gauss-Newton matrix for any other model (networks: their Hessian
        is indefinite where they fit noisy labels).
    max_iter : int, default=100
        Most CG iterations per row.
    tol : float, default=1e-5
        Stop a row when its residual ``||g - (H + damping I) x||`` is at most
        ``tol * ||g||``. Rows that do not get there raise a
        :class:`~dataval.exceptions.ConvergenceWarning`.
    preconditioner : {None, "lowrank", "kfac", "ekfac"}, default=None
        ``"kfac"``, ``"ekfac"``: the inverse of :class:`KFACInfluence`'s or
        :class:`EKFACInfluence`'s damped curvature (``fisher="ggn"``, fitted
        at the start of ``fit``: one pass per output over the data), applied
        layer by layer; parameters outside their Linear and Conv2d layers
        are scaled by ``1 / (mean eigenvalue + damping)``. Its block-diagonal
        Kronecker approximation is close to the Gauss-Newton matrix, so with
        ``curvature="ggn"`` a few iterations suffice where plain CG needs many
        (see :doc:`/performance`); it needs a positive damping.
        ``"lowrank"``: the ``preconditioner_rank`` largest eigenpairs
        ``(lambda_i, u_i)`` of ``H`` (Lanczos, ``2 * rank + 20`` products at
        fit) map the top of the spectrum onto its bottom, as in randomized
        Nystrom preconditioning (Frangella et al., 2023):
        ``P^{-1} = I + sum_i ((lambda_r + damping) / (lambda_i + damping) - 1)
        u_i u_i^T``. It pays off when a few large eigenvalues dominate (neural
        networks) and many rows are solved (``self_influence``). (A Jacobi
        preconditioner from a Hutchinson estimate of the diagonal was tried
        and dropped: the estimate's noise made CG take 3 times more
        iterations on small MLPs.)
    preconditioner_rank : int, default=50
        Eigenpairs of the ``"lowrank"`` preconditioner.
    hessian_batch_size : int, default=None
        ``None``: every product averages the curvature over the whole training
        set. An int: over a random subset of that many training rows, drawn
        once per fit with ``random_state`` (a sub-sampled Hessian; each
        product costs that many rows instead of ``n_train``).

    Attributes
    ----------
    curvature_ : str
        The curvature used: ``"hessian"`` or ``"ggn"``.
    damping_ : float
        The damping used (the estimate when ``damping="auto"``).
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
    ExactInfluence : The dense reference CG converges to.
    LiSSAInfluence : A stochastic series instead of CG.

    Notes
    -----
    CG needs ``H + damping I`` positive definite. When it meets a direction
    ``d`` with ``d^T (H + damping I) d <= 0`` it stops that row and raises a
    :class:`~dataval.exceptions.NotPositiveDefiniteWarning`.

    ``score``, ``top_k``, ``value`` and ``self_influence`` change no fitted
    attribute; each reports its solves on the returned object's ``attrs``:
    ``attrs["solver"] = {"n_solves": ..., "n_iter": ..., "max_residual":
    ...}``, the number of CG solves the call ran (one per test chunk), the
    most iterations one took and the largest relative residual
    ``||g - (H + damping I) x|| / ||g||`` left.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from dataval import CGInfluence
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = LogisticRegression(max_iter=1000).fit(X, y)
    >>> inf = CGInfluence(damping=1e-2, preconditioner="lowrank", random_state=0)
    >>> scores = inf.fit(clf, X, y).score(X[:3], y[:3])
    >>> scores.shape
    (3, 150)
    >>> sorted(scores.attrs["solver"])
    ['max_residual', 'n_iter', 'n_solves']
    """

    _parameter_constraints = {
        **MatrixFreeInfluence._parameter_constraints,
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "preconditioner": [None, StrOptions({"lowrank", "kfac", "ekfac"})],
        "preconditioner_rank": [Interval(Integral, 1, None, closed="left")],
        "hessian_batch_size": [None, Interval(Integral, 1, None, closed="left")],
    }
    _saved_state = MatrixFreeInfluence._saved_state + (
        "_low_rank",
        "_kronecker",
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
        curvature="auto",
        max_iter=100,
        tol=1e-5,
        preconditioner=None,
        preconditioner_rank=50,
        hessian_batch_size=None,
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
        self.max_iter = max_iter
        self.tol = tol
        self.preconditioner = preconditioner
        self.preconditioner_rank = preconditioner_rank
        self.hessian_batch_size = hessian_batch_size

    def _choose_curvature_rows(self):
        size = self.hessian_batch_size
        if size is None or size >= self.n_train_:
            return None
        return torch.randperm(self.n_train_, generator=self._generator())[:size]

    def _fit_operator(self):
        self._low_rank = self._kronecker = None
        if self.preconditioner == "lowrank":
            self._low_rank = self._low_rank_preconditioner()
        elif self.preconditioner is not None:
            self._kronecker = self._kronecker_preconditioner()

    def _kronecker_preconditioner(self):
        """``{"bases": {layer: (Q_S, Q_A)}, "damped": {layer: (d_out, d_in)},
        "rest": float}``: a K-FAC or EK-FAC fitted here, as tensors."""
        if not self.damping_ > 0:
            raise ValueError(
                f"preconditioner={self.preconditioner!r} inverts a damped Kronecker "
                f"curvature and needs a positive damping; got {self.damping_:g}. "
                "Pass a positive damping or use preconditioner=None."
            )
        kind = EKFACInfluence if self.preconditioner == "ekfac" else KFACInfluence
        fitted = kind(damping=self.damping_, fisher="ggn", batch_size=self.batch_size)
        fitted._set_training(
            self.model_,
            self._X_train,
            self._y_train,
            self.train_index_,
            self._sample_weight,
        )
        fitted._fit_curvature()
        eigenvalues = torch.cat([e.reshape(-1) for e in fitted.eigenvalues_.values()])
        return {
            "bases": fitted._bases,
            "damped": {name: fitted._damped(name) for name in fitted.eigenvalues_},
            "rest": 1.0 / (float(eigenvalues.mean()) + self.damping_),
        }

    def _kronecker_inverse(self, R):
        """``R`` (k, p) times the (E)K-FAC inverse, in the model's parameter layout."""
        bases, damped = self._kronecker["bases"], self._kronecker["damped"]
        layers = select_layers(self.model_.adapted.module, list(bases))
        blocks = kronecker_blocks(self.model_, layers)
        out = R * self._kronecker["rest"]
        for (layer, weight, bias), V in zip(blocks, layer_matrices(R, blocks)):
            Q_S, Q_A = bases[layer.name]
            V = kronecker_apply(V, Q_S, Q_A, 1 / damped[layer.name])
            out[:, weight] = V[..., : weight_columns(layer, bias)].flatten(1)
            if bias is not None:
                out[:, bias] = V[..., -1]
        return out

    def _low_rank_preconditioner(self):
        """``(U, w)``: ``P^{-1} r = r + ((r U) * w) U^T``, U (p, r) orthonormal."""
        rank = min(self.preconditioner_rank, self.n_params_)
        values, vectors = self._ritz_pairs(min(self.n_params_, 2 * rank + 20))
        damped = values[-rank:] + self.damping_  # the largest, ascending
        damped = damped.clamp(min=float(damped[-1]) * torch.finfo(damped.dtype).eps)
        weights = damped[0] / damped - 1
        return vectors[:, -rank:].to(self.dtype_), weights.to(self.dtype_)

    def _precondition(self, R):
        if self._kronecker is not None:
            return self._kronecker_inverse(R)
        if self._low_rank is None:
            return R
        U, weights = self._low_rank
        return R + ((R @ U) * weights) @ U.T

    def _curvature(self):
        return Solver(self._solve)

    def _solve(self, G):
        # one CG per row of G (m, p); `active` rows are still iterating
        X = torch.zeros_like(G)
        R = G.clone()
        g_norm = G.norm(dim=1)
        active = g_norm > 0  # a zero gradient is solved by x = 0
        residual = active.to(G.dtype)  # relative residual ||r|| / ||g||
        rejected = torch.zeros_like(active)
        Z = self._precondition(R)
        P = Z.clone()
        rz = (R * Z).sum(1)
        negative = []  # Rayleigh quotients d^T H d / d^T d of rejected directions
        n_iter = 0
        for _ in self._iterations(self.max_iter, "conjugate gradient"):
            rows = active.nonzero().squeeze(1)
            if len(rows) == 0:
                break
            n_iter += 1
            AP = self._product(P[rows])  # (k, p)
            curvature = (P[rows] * AP).sum(1)
            bad = curvature <= 0
            if bad.any():
                quotients = curvature[bad] / (P[rows[bad]] ** 2).sum(1)
                negative.extend((quotients - self.damping_).tolist())
                active[rows[bad]] = False
                rejected[rows[bad]] = True
                rows, AP, curvature = rows[~bad], AP[~bad], curvature[~bad]
            alpha = (rz[rows] / curvature)[:, None]
            X[rows] += alpha * P[rows]
            R[rows] -= alpha * AP
            residual[rows] = R[rows].norm(dim=1) / g_norm[rows]
            done = residual[rows] <= self.tol
            active[rows[done]] = False
            rows = rows[~done]
            Z = self._precondition(R[rows])
            rz_new = (R[rows] * Z).sum(1)
            P[rows] = Z + (rz_new / rz[rows])[:, None] * P[rows]
            rz[rows] = rz_new
        self._warn_unsolved((residual > self.tol) & ~rejected, residual, negative)
        max_residual = float(residual.max()) if len(residual) else 0.0
        return X, {"n_iter": n_iter, "max_residual": max_residual}

    def _warn_unsolved(self, stuck, residual, negative):
        n_rows = len(residual)
        if negative:
            warn_not_positive_definite(
                f"conjugate gradient met negative curvature on {len(negative)} of "
                f"{n_rows} rows (smallest Rayleigh quotient d^T H d / d^T d "
                f"{min(negative):.3g}",
                min(negative),
                self.damping_,
                self.curvature_,
                stacklevel=9,
            )
        stuck = stuck.nonzero().squeeze(1)
        if len(stuck):
            shown = ", ".join(
                f"{int(i)}: {float(residual[i]):.2g}" for i in stuck[:10]
            ) + (", ..." if len(stuck) > 10 else "")
            warnings.warn(
                f"CGInfluence did not reach tol={self.tol:g} within "
                f"max_iter={self.max_iter} for {len(stuck)} of {n_rows} rows of this "
                f"batch (row: relative residual) {{{shown}}}. Increase max_iter, "
                "use preconditioner='lowrank', or increase damping "
                f"(damping={self.damping_:g}).",
                ConvergenceWarning,
                stacklevel=8,
            )
