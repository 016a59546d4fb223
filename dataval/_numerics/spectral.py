"""Solves in an eigenbasis or by a dense factor, and the positive-definiteness checks.

A symmetric curvature ``C = V diag(lam) V^T`` turns any matrix function into a
scaling of coordinates: ``f(C) x = V (f(lam) * (V^T x))``. The low-rank
estimator (``ArnoldiInfluence``), the projected Gram of TRAK and the Kronecker
eigenbases of K-FAC and Source all solve this way. The dense estimator
(``ExactInfluence``) needs only ``(C + damping I)^{-1}``: a Cholesky (or
``L D L^T``) factor gives it at a fraction of an eigendecomposition's cost.
"""

import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch

from .._core.parts import Curvature
from ..exceptions import NotPositiveDefiniteWarning


@contextmanager
def one_thread(device):
    """Run a CPU LAPACK call (eigh, Cholesky, small batched solves) on one thread.

    On a small machine shared with other jobs, a multithreaded ``eigh`` of a
    few hundred columns waits on descheduled partner threads and can take many
    times its one-thread time (see the performance page); for these sizes one
    thread costs little. torch's thread count is shared by the threads of a
    process, so only the main thread changes it (and restores it on exit):
    calls from other threads, e.g. several threads scoring at once, run as
    they are.
    """
    if (
        torch.device(device).type != "cpu"
        or threading.current_thread() is not threading.main_thread()
    ):
        yield
        return
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n_threads)


def psd_eighs(matrices, dtype):
    """Eigenvalues (clipped at 0) and eigenvectors of PSD matrices, via float64.

    Each decomposition runs on one thread (:func:`one_thread`); from the
    main thread on a CPU, as many run side by side as torch had threads.
    Independent one-thread calls do not wait on each other, so this keeps
    the parallel speed-up without the cost of a multithreaded ``eigh`` on a
    shared machine.
    """
    matrices = list(matrices)
    if not matrices:
        return []
    device = matrices[0].device
    workers = 1
    if device.type == "cpu" and threading.current_thread() is threading.main_thread():
        workers = min(len(matrices), torch.get_num_threads())
    order = sorted(range(len(matrices)), key=lambda i: -matrices[i].shape[0])

    def decompose(i):
        return torch.linalg.eigh(matrices[i].double())

    with one_thread(device):
        if workers == 1:
            pairs = [decompose(i) for i in order]
        else:
            with ThreadPoolExecutor(workers) as pool:
                pairs = list(pool.map(decompose, order))
    found = dict(zip(order, pairs))
    return [
        (found[i][0].clamp(min=0).to(dtype), found[i][1].to(dtype))
        for i in range(len(matrices))
    ]


class Eigenbasis(Curvature):
    """``(H + damping I)^{-1}`` through eigenpairs: ``V diag(scale) V^T``.

    ``vectors`` V (p, r) are orthonormal columns (all of them for a dense
    ``H``, the top ``r`` for a low-rank one); ``scale`` (r,) is ``1 /
    (eigenvalue + damping)`` (or zero for a direction left out).
    ``complement``: the factor applied to the part of a row outside the
    span of V (``1 / damping``, or ``0`` to drop it).
    """

    def __init__(self, vectors, scale, complement=0.0):
        self.vectors, self.scale, self.complement = vectors, scale, complement

    def apply_inverse(self, G):
        V = self.vectors.to(G.dtype)
        projected = G @ V
        inverse = (projected * self.scale.to(G.dtype)) @ V.T
        if self.complement:
            inverse += (G - projected @ V.T) * self.complement
        return inverse


class DenseFactor(Curvature):
    """``(H + damping I)^{-1}`` through a factor of the damped matrix.

    ``factor`` (p, p) is the lower Cholesky factor ``L`` of ``H + damping I``
    (``pivots`` is ``None``), or the compact ``L D L^T`` (Bunch-Kaufman)
    factor of an indefinite one with its ``pivots``. A solve costs two
    triangular solves, ``2 p^2`` flop per row, as an eigenbasis does.
    """

    def __init__(self, factor, pivots=None):
        self.factor, self.pivots = factor, pivots

    def apply_inverse(self, G):
        rhs = G.T.to(self.factor.dtype)
        if self.pivots is None:
            solved = torch.cholesky_solve(rhs, self.factor)
        else:
            solved = torch.linalg.ldl_solve(self.factor, self.pivots, rhs)
        return solved.T.to(G.dtype)


def factor_damped(matrix, eigenvalues, damping):
    """A factor of ``(M + M^T) / 2 + damping I`` for :class:`DenseFactor`.

    Cholesky when ``eigenvalues + damping`` (those of the symmetric part, from
    ``eigvalsh``) are all positive and the factorization succeeds; otherwise
    the symmetric indefinite ``L D L^T`` factorization, which solves the
    same system as an eigendecomposition would at a sixth of its cost.
    Returns ``(factor, pivots)``, ``pivots`` ``None`` for Cholesky.
    """
    damped = (matrix + matrix.T) / 2
    damped.diagonal().add_(damping)
    if bool((eigenvalues + damping > 0).all()):
        factor, info = torch.linalg.cholesky_ex(damped)
        if int(info) == 0:
            return factor, None
    factor, pivots, _ = torch.linalg.ldl_factor_ex(damped)
    return factor, pivots


def kronecker_apply(V, Q_S, Q_A, scale):
    """Matrices ``V`` (m, d_out, d_in) times a function of ``A ⊗ S``.

    ``Q_S`` (d_out, d_out) and ``Q_A`` (d_in, d_in) are the factors'
    eigenvectors; ``scale`` (d_out, d_in) the function's values in the
    Kronecker eigenbasis.
    """
    rotated = Q_S.T @ V @ Q_A
    rotated *= scale
    return Q_S @ rotated @ Q_A.T


def warn_if_not_positive_definite(
    eigenvalues, damping, curvature, what="H + damping I"
):
    """Warn, naming the cure, when damped eigenvalues are not all positive."""
    damped = eigenvalues + damping
    n_bad = int((damped <= 0).sum())
    if n_bad:
        smallest = float(eigenvalues.min())
        warn_not_positive_definite(
            f"{n_bad} of {len(eigenvalues)} eigenvalues are <= 0 (smallest "
            f"curvature eigenvalue {smallest:.3g}",
            smallest,
            damping,
            curvature,
            what,
            stacklevel=5,
        )


def warn_not_positive_definite(
    finding, smallest, damping, curvature, what="H + damping I", stacklevel=4
):
    """Warn that ``what`` is not positive definite and name the cure.

    ``finding`` says what showed it, ending in an open parenthesis's content;
    ``smallest`` is the most negative curvature seen (an eigenvalue, or a
    Rayleigh quotient, which bounds the smallest eigenvalue from above).
    """
    cure = f"increase damping above {-smallest:.3g}" + (
        " or use curvature='ggn'" if curvature == "hessian" else ""
    )
    warnings.warn(
        f"{what} is not positive definite: {finding}, damping={damping:g}). "
        f"Influence scores are not meaningful; {cure}.",
        NotPositiveDefiniteWarning,
        stacklevel=stacklevel,
    )
