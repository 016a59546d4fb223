"""Accuracy and time of CG, LiSSA and Arnoldi against the dense reference.

An sklearn ``MLPClassifier`` (64-32-10, 2410 parameters) is trained to
convergence on 1500 digits. Every estimator scores 50 held-out digits against
the 1500 training rows with the same damping as ``ExactInfluence``; the table
gives the mean over test rows of the Pearson correlation between a row of its
scores and the same row of the exact scores, and its time (fit + score)
relative to the exact one in the same run. The last line is the best a rank-r
method can do: the exact eigendecomposition cut to the same ``r`` eigenpairs
of largest magnitude, with the complement ignored (``complement="ignore"``)
or weighted ``1 / damping`` (as ``ArnoldiInfluence`` does by default).

The matrix-free estimators run in float64 here (their default is float32):
in float32, the per-sample gradients of rows the model predicts with a
probability within 1e-7 of 1 lose most of their digits to cancellation in
``p - 1``, which caps any float32 estimator, the dense one included (the
``ExactInfluence(dtype='float32')`` row), whatever its solver does.

Two more sections run on the noisy-digits MLP of ``benchmarks/_digits.py``
(64-64-10, 4,810 parameters, 1,497 rows with 10 % flipped labels, damping
1e-2), each in one run:

- ``--exact-routes``: ``ExactInfluence``'s fit by the route of commit
  c2edd84 (the curvature by blocks of curvature-vector products, then a
  full float64 eigendecomposition), by the previous route (the Hessian by
  the same products, the Gauss-Newton matrix from per-sample Jacobians,
  then ``eigvalsh`` and a Cholesky or ``L D L^T`` factor of
  ``H + damping I``) and by the current one (the curvature's block among
  linear layers from per-row products, ``dense/hessian.py``), for the
  Hessian and the Gauss-Newton matrix: curvature formation, the rest of the
  fit, their speed-ups over c2edd84, the largest difference of the scores
  and of the matrices. One run per ``--threads`` value (default 1).
- ``--pydvl``: ``LiSSAInfluence`` with its defaults (float32, ``depth="auto"``)
  against pyDVL's ``LissaInfluence`` (float32, ``maxiter=1000`` by default
  (``--pydvl-maxiter``), its default ``rtol``, mini-batches of 256 rows as
  ours, the scale ``1.1`` times the largest eigenvalue of ``H + damping I``
  (the classical choice) and the multiple of it ours uses), mean row Pearson
  correlation with ``ExactInfluence`` of the same curvature, seconds (fit +
  score), and the ratio of the times. Each runs twice, interleaved (pyDVL,
  ours, pyDVL, ours), so that both see the same load; the ratio is of the
  faster runs, with each round's. pyDVL's ``GAUSS_NEWTON`` mode is the
  empirical Fisher (the mean of the per-row gradients' outer products), not
  the Gauss-Newton matrix of the reference: part of its gap is that
  curvature, not the series. Needs pyDVL (``pip install pydvl``), e.g. in a
  separate environment.

Run from the repository root::

    PYTHONPATH=. python benchmarks/iterative_accuracy.py
    PYTHONPATH=. python benchmarks/iterative_accuracy.py --exact-routes --pydvl --no-table
    PYTHONPATH=. python benchmarks/iterative_accuracy.py --exact-routes --no-table --threads 2 1
"""

import argparse
import copy
import time
import warnings

import numpy as np
import torch
from _digits import DAMPING as NOISY_DAMPING
from _digits import as_torch, fitted, noisy_digits
from sklearn.datasets import load_digits
from sklearn.neural_network import MLPClassifier

from dataval import ArnoldiInfluence, CGInfluence, ExactInfluence, LiSSAInfluence
from dataval._estimators.krylov.lissa import AUTO_SCALE_MARGIN
from dataval._finite import check_finite
from dataval._numerics.curvature import resolve_curvature
from dataval._numerics.damping import resolve_damping
from dataval._numerics.spectral import Eigenbasis, warn_if_not_positive_definite

DAMPING = 1e-3
N_TRAIN, N_TEST = 1500, 50


def mean_row_pearson(scores, reference):
    a = scores - scores.mean(1, keepdims=True)
    b = reference - reference.mean(1, keepdims=True)
    return float(((a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))).mean())


def timed(estimator, model, data):
    X_train, y_train, X_test, y_test = data
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = estimator.fit(model, X_train, y_train).score(X_test, y_test)
    for warning in caught:
        if warning.category.__module__.startswith("dataval"):
            print(f"  {type(estimator).__name__}: {warning.message}")
    return scores.to_numpy(), time.perf_counter() - start


class TimedExact(ExactInfluence):
    """``ExactInfluence`` recording the seconds of its curvature's formation
    (``formed_in_``) and of its whole fit (``fit_in_``)."""

    def fit(self, *args, **kwargs):
        start = time.perf_counter()
        super().fit(*args, **kwargs)
        self.fit_in_ = time.perf_counter() - start
        return self

    def _hessian(self):
        return self._timed(super()._hessian)

    def _gauss_newton(self):
        return self._timed(super()._gauss_newton)

    def _timed(self, form):
        start = time.perf_counter()
        H = form()
        self.formed_in_ = time.perf_counter() - start
        return H


class EighExact(TimedExact):
    """``ExactInfluence`` solving through a full float64 eigendecomposition
    (its eigenvectors are kept: ``truncated`` cuts them)."""

    def _fit_curvature(self):
        self.curvature_ = resolve_curvature(self.curvature, self.model_)
        H = self._gauss_newton() if self.curvature_ == "ggn" else self._hessian()
        check_finite(self, H, "The curvature matrix")
        eigenvalues, self._eigenvectors = torch.linalg.eigh((H + H.T) / 2)
        self.eigenvalues_ = eigenvalues
        self.damping_ = resolve_damping(
            self.damping, lambda: eigenvalues.mean(), "trace(H) / p"
        )
        warn_if_not_positive_definite(eigenvalues, self.damping_, self.curvature_)

    def _curvature(self):
        return Eigenbasis(self._eigenvectors, 1 / (self.eigenvalues_ + self.damping_))


class FormerExact(EighExact):
    """``ExactInfluence`` as at commit c2edd84: the curvature by blocks of
    curvature-vector products, then a full float64 eigendecomposition."""

    def _hessian(self):
        return self._timed(lambda: self._by_products("hessian"))

    def _gauss_newton(self):
        return self._timed(lambda: self._by_products("ggn"))


class PreviousExact(TimedExact):
    """``ExactInfluence`` as before the block among linear layers: the Hessian
    by blocks of Hessian-vector products, the Gauss-Newton matrix from
    per-sample Jacobians, the current factorization."""

    def _hessian(self):
        return self._timed(lambda: self._by_products("hessian"))

    def _gauss_newton(self):
        return self._timed(self._gauss_newton_by_jacobians)


def truncated(exact, rank, complement):
    """The fitted exact estimator keeping only ``rank`` eigenpairs by magnitude.

    The others are set to inf (``complement="ignore"``: they contribute
    1 / inf = 0) or to 0 (``"damping"``: they contribute 1 / damping).
    ``exact`` is an ``EighExact``: it keeps its eigenvectors.
    """
    cut = copy.copy(exact)
    eigenvalues = exact.eigenvalues_.clone()
    dropped = eigenvalues.abs().argsort(descending=True)[rank:]
    eigenvalues[dropped] = torch.inf if complement == "ignore" else 0.0
    cut.eigenvalues_ = eigenvalues
    return cut


def exact_routes(model, data):
    """Former against current ``ExactInfluence`` fit, one run."""
    print(
        f"\nExactInfluence on the noisy-digits MLP, {torch.get_num_threads()} "
        "thread(s): former routes vs current"
    )
    print(
        f"{'curvature':<10} {'route':<9} {'formation s':>12} {'formation x':>12} "
        f"{'rest of fit s':>14} {'fit s':>7} {'fit x':>6} "
        f"{'max |diff| / max |score|':>25}"
    )
    classes = (
        ("c2edd84", FormerExact),
        ("previous", PreviousExact),
        ("current", TimedExact),
    )
    for curvature in ("hessian", "ggn"):
        runs = {}
        for route, cls in classes:
            estimator = cls(damping=NOISY_DAMPING, curvature=curvature)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # an indefinite Hessian warns
                estimator.fit(model, data[0], data[1])
            runs[route] = (estimator, estimator.score(data[2], data[3]).to_numpy())
        former, former_scores = runs[classes[0][0]]
        for route, (estimator, scores) in runs.items():
            rest = estimator.fit_in_ - estimator.formed_in_
            difference = np.abs(scores - former_scores).max()
            shown = f"{difference / np.abs(former_scores).max():.1e}"
            print(
                f"{curvature:<10} {route:<9} {estimator.formed_in_:>12.1f} "
                f"{former.formed_in_ / estimator.formed_in_:>12.2f} "
                f"{rest:>14.1f} {estimator.fit_in_:>7.1f} "
                f"{former.fit_in_ / estimator.fit_in_:>6.2f} "
                f"{shown if estimator is not former else '-':>25}"
            )
        current = runs["current"][0]
        kind = "Cholesky" if current._pivots is None else "L D L^T"
        H = current._hessian() if curvature == "hessian" else current._gauss_newton()
        H_products = current._by_products(curvature)
        gap = (H - H_products).abs().max() / H_products.abs().max()
        print(
            f"  {curvature}: damped matrix factored by {kind}; current matrix vs "
            f"products: max |diff| / max |entry| = {gap:.1e}"
        )


def pydvl_lissa(model, data, curvature, scale, maxiter, batch_size=256):
    """pyDVL's LiSSA scores (n_test, n_train), proportional to ours."""
    from pydvl.influence import InfluenceMode
    from pydvl.influence.torch import LissaInfluence, SecondOrderMode
    from torch.utils.data import DataLoader, TensorDataset

    X, y, X_test, y_test = (torch.as_tensor(a) for a in data)
    X, X_test = X.float(), X_test.float()
    mode = {"hessian": SecondOrderMode.HESSIAN, "ggn": SecondOrderMode.GAUSS_NEWTON}
    influence = LissaInfluence(
        as_torch(model),
        torch.nn.functional.cross_entropy,
        regularization=NOISY_DAMPING,
        scale=scale,
        maxiter=maxiter,
        second_order_mode=mode[curvature],
        warn_on_max_iteration=False,
    )
    loader = DataLoader(TensorDataset(X, y), batch_size=batch_size)
    influence.fit(loader)
    # <H^-1 grad test loss, grad train loss>: our sign, without the 1 / n
    up = influence.influences(X_test, y_test, X, y, mode=InfluenceMode.Up)
    return up.detach().numpy()


def lissa_vs_pydvl(model, data, maxiter):
    """LiSSA defaults against pyDVL's LiSSA, one run."""
    reference = ExactInfluence(damping=NOISY_DAMPING).fit(model, data[0], data[1])
    exact = reference.score(data[2], data[3]).to_numpy()
    curvature = reference.curvature_
    largest = float(reference.eigenvalues_[-1] + NOISY_DAMPING)
    print(
        f"\nLiSSA on the noisy-digits MLP (curvature={curvature!r}, damping "
        f"{NOISY_DAMPING:g}), against ExactInfluence of the same curvature"
    )
    print(f"{'estimator':<58} {'Pearson':>8} {'seconds':>8}")
    theirs_seconds, ours_seconds = [], []
    # two rounds, each pyDVL then ours, so that both see the machine's load:
    # pyDVL at the classical scale (above the largest eigenvalue), then at ours
    for margin in (1.1, AUTO_SCALE_MARGIN):
        start = time.perf_counter()
        theirs = pydvl_lissa(model, data, curvature, margin * largest, maxiter)
        theirs_seconds.append(time.perf_counter() - start)
        name = f"pyDVL LissaInfluence(maxiter={maxiter}, scale={margin:g} x largest)"
        print(
            f"{name:<58} {mean_row_pearson(theirs, exact):>8.4f} "
            f"{theirs_seconds[-1]:>8.1f}"
        )
        ours = LiSSAInfluence(damping=NOISY_DAMPING, random_state=0)
        scores, seconds = timed(ours, model, data)
        ours_seconds.append(seconds)
        name = f"dataval LiSSAInfluence() (depth_={ours.depth_})"
        print(f"{name:<58} {mean_row_pearson(scores, exact):>8.4f} {seconds:>8.1f}")
    rounds = ", ".join(f"{a / b:.2f}" for a, b in zip(theirs_seconds, ours_seconds))
    print(
        f"pyDVL's time / dataval's: {min(theirs_seconds) / min(ours_seconds):.2f} "
        f"(fastest runs; per round {rounds})"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-table", action="store_true")
    parser.add_argument("--exact-routes", action="store_true")
    parser.add_argument("--pydvl", action="store_true")
    parser.add_argument("--pydvl-maxiter", type=int, default=1000)
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1],
        help="torch threads of the --exact-routes runs, one run each",
    )
    args = parser.parse_args()
    if args.exact_routes or args.pydvl:
        noisy = noisy_digits()
        model = fitted(noisy)
        if args.exact_routes:
            for threads in args.threads:
                torch.set_num_threads(threads)
                exact_routes(model, noisy)
        # the machine is shared: avoid oversubscription
        torch.set_num_threads(1)
        if args.pydvl:
            lissa_vs_pydvl(model, noisy, args.pydvl_maxiter)
    if not args.no_table:
        table()


def table():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    test = slice(N_TRAIN, N_TRAIN + N_TEST)
    data = (X[:N_TRAIN], y[:N_TRAIN], X[test], y[test])
    model = MLPClassifier(
        hidden_layer_sizes=(32,), alpha=1e-2, max_iter=3000, tol=1e-8, random_state=0
    ).fit(data[0], data[1])
    exact = EighExact(damping=DAMPING)
    reference, exact_time = timed(exact, model, data)
    p = exact.n_params_
    rank = p // 10
    eigenvalues = exact.eigenvalues_
    print(
        f"MLP 64-32-10 on digits: p={p}, n_train={N_TRAIN}, n_test={N_TEST}, "
        f"damping={DAMPING:g}, train accuracy {model.score(data[0], data[1]):.3f}"
    )
    print(
        f"Hessian eigenvalues: largest {float(eigenvalues[-1]):.3g}, smallest "
        f"{float(eigenvalues[0]):.3g}, {int((eigenvalues < 0).sum())} negative, "
        f"mean {float(eigenvalues.mean()):.3g}"
    )
    rows = [("ExactInfluence", 1.0, 1.0)]
    common = {"damping": DAMPING, "dtype": "float64", "random_state": 0}
    candidates = [
        (
            "ExactInfluence(dtype='float32')",
            ExactInfluence(damping=DAMPING, dtype="float32"),
        ),
        ("CGInfluence()", CGInfluence(**common)),
        (
            "CGInfluence(preconditioner='lowrank')",
            CGInfluence(**common, preconditioner="lowrank"),
        ),
        ("LiSSAInfluence(depth='auto')", LiSSAInfluence(**common)),
        (
            f"ArnoldiInfluence(rank={rank}, complement='ignore')",
            ArnoldiInfluence(rank=rank, complement="ignore", **common),
        ),
        (f"ArnoldiInfluence(rank={rank})", ArnoldiInfluence(rank=rank, **common)),
        (
            "CGInfluence(curvature='ggn', max_iter=5)",
            CGInfluence(**common, curvature="ggn", max_iter=5),
        ),
        (
            "CGInfluence(curvature='ggn', preconditioner='ekfac', max_iter=5)",
            CGInfluence(**common, curvature="ggn", preconditioner="ekfac", max_iter=5),
        ),
    ]
    for name, estimator in candidates:
        scores, seconds = timed(estimator, model, data)
        rows.append((name, mean_row_pearson(scores, reference), seconds / exact_time))
    for complement in ("ignore", "damping"):
        cut = truncated(exact, rank, complement).score(data[2], data[3]).to_numpy()
        name = f"exact eigenpairs cut to rank {rank}, {complement}"
        rows.append((name, mean_row_pearson(cut, reference), None))
    arnoldi = candidates[-3][1]
    dense = eigenvalues[eigenvalues.abs().argsort(descending=True)[:rank]]
    error = ((arnoldi.eigenvalues_ - dense).abs() / dense.abs()).numpy()
    print(
        f"Arnoldi's {rank} eigenvalues vs the dense ones (largest magnitude first): "
        f"relative error {error[0]:.1e} for the first, {error.max():.1e} at most; "
        f"{int((arnoldi.eigenvalues_ < 0).sum())} kept are negative."
    )
    print(f"\nExactInfluence fit + score: {exact_time:.1f} s")
    print(f"{'estimator':<64} {'mean row Pearson':>17} {'time / exact':>13}")
    for name, pearson, ratio in rows:
        shown = "-" if ratio is None else f"{ratio:.2f}"
        print(f"{name:<64} {pearson:>17.4f} {shown:>13}")


if __name__ == "__main__":
    main()
