"""Cost of every estimator against the physical floor, and top_k's peak memory.

Prints, from one run on the same machine and settings:

(a) each estimator's ``fit`` time divided by the time of one forward+backward
    epoch of the plain torch model over the training set (batches of
    ``batch_size``, the way it was trained): the floor any method that reads
    the gradients of all training rows has to pay;
(b) each estimator's scoring throughput with ``top_k`` (pairs per second,
    test gradients and their solves included) divided by that of a plain
    ``(n_test, p) @ (p, n_train)`` matmul of the same sizes;
(c) the peak resident memory of ``TracIn.top_k`` at 10^5 training x 10^4
    test rows (the dense float32 frame would be 3.7 GiB), with and without
    the dense frame's budget, and that of ``value``.

The model is a small MLP (10-8-4 by default, 124 parameters) on synthetic
data. Run from the repository root::

    PYTHONPATH=. python benchmarks/scale.py            # a few minutes on CPU
    PYTHONPATH=. python benchmarks/scale.py --quick    # 10x fewer rows

Peak memory is the high-water mark of resident memory (Linux's VmHWM, reset
before each call); glibc is asked to return large freed blocks at once
(``MALLOC_MMAP_THRESHOLD_``, set by re-executing the script) so that the mark
measures what the call holds rather than what the allocator retains.
"""

import argparse
import gc
import os
import sys
import time
import warnings

import torch

import dataval

MIB = 2**20


def _peak_bytes():
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return int(fields["VmHWM"].split()[0]) * 1024


def _reset_peak():
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def peak_memory(function, *args):
    """``(result, seconds, extra peak bytes)`` of ``function(*args)``."""
    gc.collect()
    _reset_peak()
    before = _peak_bytes()
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start, _peak_bytes() - before


def make_problem(n_train, n_test, hidden, seed=0):
    """A trained 10-hidden-4 MLP and a 4-class synthetic data set."""
    generator = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    X = torch.randn(n, 10, generator=generator)
    W = torch.randn(10, 4, generator=generator)
    y = (X @ W + 0.5 * torch.randn(n, 4, generator=generator)).argmax(1)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(10, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 4)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02, weight_decay=1e-3)
    for _ in range(100):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(X[:n_train]), y[:n_train]).backward()
        optimizer.step()
    return model, X[:n_train], y[:n_train], X[n_train:], y[n_train:]


def epoch_seconds(model, X, y, batch_size):
    """One forward+backward pass over (X, y) in batches: the floor."""
    start = time.perf_counter()
    for i in range(0, len(X), batch_size):
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(
            model(X[i : i + batch_size]), y[i : i + batch_size]
        )
        loss.backward()
    model.zero_grad()
    return time.perf_counter() - start


def matmul_pairs_per_second(n_test, n_train, p):
    Q, G = torch.randn(n_test, p), torch.randn(n_train, p)
    seconds = []
    for _ in range(6):  # the first warms up; the best of the rest
        start = time.perf_counter()
        Q @ G.T
        seconds.append(time.perf_counter() - start)
    return n_test * n_train / min(seconds[1:])


ESTIMATORS = {
    "ExactInfluence": lambda: dataval.ExactInfluence(damping=0.01, curvature="ggn"),
    "CGInfluence": lambda: dataval.CGInfluence(damping=0.01, curvature="ggn"),
    "LiSSAInfluence": lambda: dataval.LiSSAInfluence(
        damping=0.01, curvature="ggn", depth=100, random_state=0
    ),
    "ArnoldiInfluence": lambda: dataval.ArnoldiInfluence(
        damping=0.01, curvature="ggn", rank=20, random_state=0
    ),
    "KFACInfluence": lambda: dataval.KFACInfluence(random_state=0),
    "EKFACInfluence": lambda: dataval.EKFACInfluence(random_state=0),
    "TRAKInfluence": lambda: dataval.TRAKInfluence(projection_dim=64, random_state=0),
    "TracIn": lambda: dataval.TracIn(),
}


def cost_table(n_train, n_test, hidden):
    model, X, y, X_test, y_test = make_problem(n_train, n_test, hidden)
    p = sum(t.numel() for t in model.parameters())
    floor = min(epoch_seconds(model, X, y, 256) for _ in range(3))
    matmul = matmul_pairs_per_second(n_test, n_train, p)
    print(
        f"(a), (b): {n_train} training x {n_test} test rows, p = {p}; one "
        f"forward+backward epoch = {floor * 1e3:.1f} ms; matmul = "
        f"{matmul:.3g} pairs/s"
    )
    print(f"{'estimator':<18}{'fit / epoch':>14}{'top_k pairs/s / matmul':>26}")
    for name, make in ESTIMATORS.items():
        estimator = make()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            estimator.fit(model, X, y)
            fit = time.perf_counter() - start
            start = time.perf_counter()
            estimator.top_k(X_test, y_test, k=10)
            scoring = n_test * n_train / (time.perf_counter() - start)
        print(f"{name:<18}{fit / floor:>14.1f}{scoring / matmul:>26.4f}")


def memory_table(n_train, n_test, hidden):
    model, X, y, X_test, y_test = make_problem(n_train, n_test, hidden)
    dense = n_train * n_test * 4 / MIB
    print(
        f"\n(c): TracIn at {n_train} training x {n_test} test rows; the dense "
        f"float32 frame would be {dense:,.0f} MiB; process resident before: "
        f"{_peak_bytes() / MIB:,.0f} MiB"
    )
    estimator = dataval.TracIn(batch_size=1024).fit(model, X, y)
    estimator.top_k(X_test[:10], y_test[:10])  # lazy initializations
    print(f"{'call':<42}{'seconds':>9}{'extra MiB':>11}{'process MiB':>13}")
    calls = [
        ("top_k(k=10), default working_memory=512", {}, estimator.top_k),
        ("top_k(k=10), working_memory=64", {"working_memory": 64}, estimator.top_k),
        ("value", {}, estimator.value),
    ]
    for label, config, method in calls:
        with dataval.config_context(**config):
            _, seconds, peak = peak_memory(method, X_test, y_test)
        # extra: above the resident memory before the call; process: peak
        print(
            f"{label:<42}{seconds:>9.1f}{peak / MIB:>11.1f}"
            f"{_peak_bytes() / MIB:>13,.0f}"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10x fewer rows")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--hidden", type=int, default=8, help="MLP hidden units")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    scale = 10 if args.quick else 1
    print(f"torch {torch.__version__}, {args.threads} thread(s), CPU")
    cost_table(2000 // scale, 200 // scale, args.hidden)
    memory_table(100_000 // scale, 10_000 // scale, args.hidden)


if __name__ == "__main__":
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(128 * 1024)
        os.execv(sys.executable, [sys.executable, *sys.argv])
    main()
