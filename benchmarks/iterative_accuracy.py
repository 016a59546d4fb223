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

Run from the repository root::

    PYTHONPATH=. python benchmarks/iterative_accuracy.py
"""

import copy
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.neural_network import MLPClassifier

from dataval import ArnoldiInfluence, CGInfluence, ExactInfluence, LiSSAInfluence

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


def truncated(exact, rank, complement):
    """The fitted exact estimator keeping only ``rank`` eigenpairs by magnitude.

    The others are set to inf (``complement="ignore"``: they contribute
    1 / inf = 0) or to 0 (``"damping"``: they contribute 1 / damping).
    """
    cut = copy.copy(exact)
    eigenvalues = exact.eigenvalues_.clone()
    dropped = eigenvalues.abs().argsort(descending=True)[rank:]
    eigenvalues[dropped] = torch.inf if complement == "ignore" else 0.0
    cut.eigenvalues_ = eigenvalues
    return cut


def main():
    torch.set_num_threads(1)  # the machine is shared: avoid oversubscription
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    test = slice(N_TRAIN, N_TRAIN + N_TEST)
    data = (X[:N_TRAIN], y[:N_TRAIN], X[test], y[test])
    model = MLPClassifier(
        hidden_layer_sizes=(32,), alpha=1e-2, max_iter=3000, tol=1e-8, random_state=0
    ).fit(data[0], data[1])
    exact = ExactInfluence(damping=DAMPING)
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
