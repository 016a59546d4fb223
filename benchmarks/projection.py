"""Projection estimators (TRAK, LoGra), Source and TF-IDF candidates, measured.

1. Accuracy: an sklearn ``MLPClassifier`` (64-32-10, 2410 parameters) trained
   to convergence on 600 digits; each estimator scores 30 held-out digits
   against the training rows. The table gives the mean over test rows of the
   Pearson correlation of its scores with ``ExactInfluence(curvature="ggn")``
   (the curvature TRAK and the Kronecker-factored estimators approximate), all
   in float64 with the same damping.
2. Cost: TRAK and LoGra on a wider MLP (64-128-10, 9610 parameters, 500
   training rows, float32), fit and score of 20 test rows, as
   ``projection_dim`` grows. Each configuration runs in its own process;
   memory is the peak resident set size above that of a process that has
   only loaded the data and the model.
3. TF-IDF candidates (``examples/text_candidates.py``): the share of the 10
   most helpful training texts of the full score that are also the top 10 of
   the candidates, as the fraction of training texts kept grows, against
   random candidates.

Run from the repository root::

    PYTHONPATH=. python benchmarks/projection.py
"""

import json
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.neural_network import MLPClassifier

from dataval import (
    EKFACInfluence,
    ExactInfluence,
    LoGraInfluence,
    SourceInfluence,
    TRAKInfluence,
)

ROOT = Path(__file__).resolve().parents[1]
DAMPING = 1e-3


def mean_row_pearson(scores, reference):
    a = scores - scores.mean(1, keepdims=True)
    b = reference - reference.mean(1, keepdims=True)
    return float(((a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))).mean())


def digits_mlp(hidden, n_train, n_test):
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    rows = np.random.RandomState(0).permutation(len(X))
    train, test = rows[:n_train], rows[n_train : n_train + n_test]
    mlp = MLPClassifier((hidden,), alpha=1e-3, max_iter=3000, random_state=0)
    mlp.fit(X[train], y[train])
    return mlp, X[train], y[train], X[test], y[test]


def accuracy():
    mlp, X, y, X_test, y_test = digits_mlp(32, 600, 30)
    exact = ExactInfluence(curvature="ggn", damping=DAMPING).fit(mlp, X, y)
    reference = exact.score(X_test, y_test).to_numpy()
    common = dict(damping=DAMPING, dtype="float64")
    kronecker = dict(fisher="ggn", random_state=0, **common)
    rows = [
        (
            f"TRAKInfluence(projection_dim={d})",
            TRAKInfluence(projection_dim=d, random_state=0, **common),
        )
        for d in (128, 512, 2048, 4096)
    ]
    rows += [
        (f"LoGraInfluence(factor_dim={d})", LoGraInfluence(factor_dim=d, **kronecker))
        for d in (4, 8, 16, None)
    ]
    rows += [
        ("EKFACInfluence", EKFACInfluence(**kronecker)),
        (
            "SourceInfluence(1 segment, eta*K=1e6)",
            SourceInfluence(learning_rates=1.0, steps=1e6, **kronecker),
        ),
        (
            "SourceInfluence(1 segment, eta*K=100)",
            SourceInfluence(learning_rates=1.0, steps=100, **kronecker),
        ),
    ]
    print(
        f"p = {exact.n_params_} parameters, {len(X)} training rows, {len(X_test)} test rows"
    )
    print(f"{'estimator':45s} {'mean row Pearson vs exact GGN':>30s}")
    for name, estimator in rows:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores = estimator.fit(mlp, X, y).score(X_test, y_test).to_numpy()
        print(f"{name:45s} {mean_row_pearson(scores, reference):30.4f}")


def cost_child(kind, dim):
    """One configuration in this process: print time (s) and peak RSS (MiB)."""
    mlp, X, y, X_test, y_test = digits_mlp(128, 500, 20)
    start = time.perf_counter()
    if kind == "trak":
        estimator = TRAKInfluence(projection_dim=dim, random_state=0, batch_size=64)
    elif kind == "logra":
        estimator = LoGraInfluence(
            factor_dim=dim, fisher="ggn", random_state=0, batch_size=64
        )
    if kind != "baseline":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            estimator.fit(mlp, X, y).score(X_test, y_test)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": elapsed, "peak_mib": peak}))


def cost():
    def run(kind, dim):
        out = subprocess.run(
            [sys.executable, __file__, "cost", kind, str(dim)],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    base = run("baseline", 0)
    print(
        f"{'estimator':10s} {'projection_dim':>15s} {'seconds':>9s} {'extra MiB':>10s}"
    )
    for kind, dims in (("trak", (128, 512, 2048, 4096)), ("logra", (8, 16, 32, 64))):
        for dim in dims:
            result = run(kind, dim)
            extra = result["peak_mib"] - base["peak_mib"]
            print(f"{kind:10s} {dim:15d} {result['seconds']:9.1f} {extra:10.0f}")


def text():
    sys.path.insert(0, str(ROOT / "examples"))
    from text_candidates import top10_recovery

    print(f"{'fraction kept':>14s} {'top-10 recovery':>16s} {'random candidates':>18s}")
    for fraction in (0.05, 0.1, 0.2, 0.3):
        recovery, *_ = top10_recovery(fraction=fraction)
        print(f"{fraction:14.2f} {recovery:16.2f} {fraction:18.2f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "cost":
        cost_child(sys.argv[2], None if sys.argv[3] == "None" else int(sys.argv[3]))
    else:
        accuracy()
        cost()
        text()
