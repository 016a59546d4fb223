"""What the estimators that only multiply by the curvature share.

:class:`CGInfluence`, :class:`LiSSAInfluence` and :class:`ArnoldiInfluence`
never form ``H``: they multiply blocks of vectors by it. This module holds the
rest they have in common: the ``damping="auto"`` heuristic, random probes, a
Hutchinson estimate of the curvature's trace, a power iteration for its
largest eigenvalue, and Lanczos for its dominant eigenpairs.
"""

from abc import abstractmethod

import torch
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import StrOptions

from ..._base import BaseInfluence
from ..._finite import check_finite
from ..._numerics.curvature import resolve_curvature
from ..._numerics.damping import DAMPING_CONSTRAINT, resolve_damping
from ..._numerics.operator import curvature_product, output_hessians
from ..._numerics.seeding import draw_seed, torch_generator
from ..._progress import tracked

#: Rademacher probes of the Hutchinson trace estimate
HUTCHINSON_PROBES = 32
#: power iterations for the largest eigenvalue
POWER_ITERATIONS = 30
#: the Gauss-Newton products keep every training row's loss Hessian in its
#: outputs (n * outputs^2 numbers) up to this many numbers
MAX_KEPT_OUTPUT_HESSIANS = 2**24


class MatrixFreeInfluence(BaseInfluence):
    """Base of the estimators that use only curvature-vector products.

    Subclasses define ``__init__`` with ``damping``, ``curvature`` and
    ``random_state`` among their parameters, and implement ``_fit_operator``
    and ``_curvature``. ``_fit_curvature`` resolves ``damping_`` first.
    """

    _parameter_constraints = {
        **BaseInfluence._parameter_constraints,
        "damping": DAMPING_CONSTRAINT,
        "curvature": [StrOptions({"auto", "hessian", "ggn"})],
        "random_state": ["random_state"],
    }
    _saved_state = ("curvature_", "damping_", "_curvature_rows", "_output_hessians")

    def _fit_curvature(self):
        self.curvature_ = resolve_curvature(self.curvature, self.model_)
        self._random = check_random_state(self.random_state)
        self._curvature_rows = self._choose_curvature_rows()
        # a Gauss-Newton product then multiplies by the rows' small loss
        # Hessians instead of differentiating the loss once per vector
        self._output_hessians = None
        if self.curvature_ == "ggn":
            self._output_hessians = output_hessians(
                self.model_, self._data(), MAX_KEPT_OUTPUT_HESSIANS
            )
        self.damping_ = self._resolve_damping()
        self._fit_operator()

    @abstractmethod
    def _fit_operator(self):
        """Learn what ``_curvature`` needs, once ``damping_`` is known."""

    def _choose_curvature_rows(self):
        """Positions of the training rows whose mean curvature the products use.

        ``None``: all rows.
        """
        return None

    def _generator(self):
        """A CPU torch generator, seeded by the next draw from ``random_state``."""
        return torch_generator(draw_seed(self._random))

    def _product(self, V, damped=True, rows=None):
        """``V @ (H + damping_ I)`` (or ``V @ H``) for ``V`` of shape (k, p).

        ``rows``: positions of the training rows the curvature averages over
        (default: the estimator's curvature rows).
        """
        # a mini-batch is one pass: batch_size is for the gradient passes
        batch_size = None if rows is None else len(rows)
        out = curvature_product(
            self.model_,
            self._data(batch_size),
            V,
            self.curvature_,
            self._curvature_rows if rows is None else rows,
            output_hessians=self._output_hessians,
        )
        # out is a fresh tensor: damped in place
        return out.add_(V, alpha=self.damping_) if damped else out

    def _random_vectors(self, k, generator, rademacher=False):
        """(k, p) random vectors on the device: Gaussian or Rademacher (+-1)."""
        shape = (k, self.n_params_)
        if rademacher:
            V = torch.randint(0, 2, shape, generator=generator) * 2.0 - 1.0
        else:
            V = torch.randn(shape, generator=generator, dtype=torch.float64)
        return V.to(self.device_, self.dtype_)

    def _iterations(self, n, desc):
        return tracked(range(n), n, desc, self.verbose)

    def _mean_eigenvalue(self):
        """Hutchinson estimate of ``trace(H) / p``: ``mean_z z^T H z / p``."""
        Z = self._random_vectors(HUTCHINSON_PROBES, self._generator(), rademacher=True)
        quadratic_forms = (Z * self._product(Z, damped=False)).sum(1)  # (probes,)
        check_finite(self, quadratic_forms, "The Hutchinson trace estimate")
        return float(quadratic_forms.mean()) / self.n_params_

    def _resolve_damping(self):
        return resolve_damping(
            self.damping,
            self._mean_eigenvalue,
            f"the Hutchinson estimate of trace(H) / p for curvature={self.curvature_!r}",
            ", or use curvature='ggn' (positive semi-definite)",
        )

    def _largest_eigenvalue(self):
        """Largest ``|eigenvalue|`` of ``H + damping_ I`` by power iteration."""
        v = self._random_vectors(1, self._generator())
        estimate = 0.0
        for _ in self._iterations(POWER_ITERATIONS, "power iteration"):
            v = v / v.norm()
            v = self._product(v)
            # ||A v|| for a unit v: at most, and converging to, the largest |eigenvalue|
            estimate = float(v.norm())
        return estimate

    def _ritz_pairs(self, n_iter):
        """Ritz values (n_iter,) and vectors (p, n_iter) of ``H``, float64.

        From ``n_iter`` Lanczos steps; the extreme ones converge first.
        """
        basis, tridiagonal = self._lanczos(n_iter)
        check_finite(self, tridiagonal, "The Lanczos tridiagonal matrix")
        values, vectors = torch.linalg.eigh(tridiagonal)
        return values, basis.T @ vectors

    def _lanczos(self, n_iter):
        """Orthonormal Krylov basis (n_iter, p) and the tridiagonal ``Q H Q^T``."""
        generator = self._generator()
        basis = self._random_vectors(n_iter, generator)  # rows; replaced in order
        alpha = torch.zeros(n_iter, dtype=self.dtype_, device=self.device_)
        beta = torch.zeros(max(n_iter - 1, 0), dtype=self.dtype_, device=self.device_)
        q = basis[0] / basis[0].norm()
        # below this residual norm the Krylov space is invariant: restart
        breakdown = torch.finfo(self.dtype_).eps ** 0.5
        for j in self._iterations(n_iter, "Lanczos"):
            basis[j] = q
            w = self._product(q[None], damped=False)[0]
            alpha[j] = w @ q
            for _ in range(2):  # full re-orthogonalization, twice is enough
                w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
            if j + 1 == n_iter:
                break
            size = float(w.norm())
            if size > breakdown * float(alpha[: j + 1].abs().max()):
                beta[j] = size
                q = w / size
            else:
                q = self._orthogonal_to(basis[: j + 1], basis[j + 1])
        tridiagonal = (
            torch.diag(alpha) + torch.diag(beta, 1) + torch.diag(beta, -1)
        ).to(torch.float64)
        return basis.to(torch.float64), tridiagonal

    @staticmethod
    def _orthogonal_to(basis, v):
        for _ in range(2):
            v = v - basis.T @ (basis @ v)
        return v / v.norm()
