"""EK-FAC influence: dataval against kronfluence, the hardware floor, and the exact answer.

Trains an MLP classifier and, in one run, with the same model, data and damping:

- fits dataval's ``EKFACInfluence`` and ``KFACInfluence`` and kronfluence's
  EK-FAC and scores the test rows against the training rows, timing the fit
  (also in epochs: one forward+backward pass of the plain torch model over the
  training set, in the same batches) and the scoring (also divided by the
  GEMM floor: ``2 p n m`` flop at this machine's float32 matrix-product rate,
  measured in the same run on ``(m, p) @ (p, 512)`` blocks);
- scores again with ``query_rank`` = 1, 8, 32, 128 (dataval) and
  ``query_gradient_low_rank`` (kronfluence), giving time and the mean row
  Pearson correlation with the full-rank scores;
- when the model is small enough, compares each with the dense float64
  reference ``ExactInfluence`` (Gauss-Newton and Hessian versions) by the
  mean over test rows of the Pearson correlation of their score rows.

Two problems: scikit-learn's digits (64 inputs, ``--hidden`` sizes) or, with
``--synthetic N``, N rows of an MNIST-shaped synthetic task (784 uniform
inputs, 10 classes from a noisy random linear teacher) for the 784-512-512-10
MLP (670k parameters) with ``--hidden 512 512``.

kronfluence is not a dataval dependency; install it in a separate
environment with the same torch::

    python -m venv /work/peers-venv
    /work/peers-venv/bin/pip install torch==2.13.0 scikit-learn pandas tqdm
    /work/peers-venv/bin/pip install kronfluence

kronfluence wraps the model's modules and freezes its parameters
(``prepare_model``), so it gets a deep copy; its scores are compared by
correlation only (its convention has no ``1/n``). Both use the true Fisher
(sampled labels) and the summed cross-entropy of a row as its loss; the row
"dataval EK-FAC ggn" shows ``fisher="ggn"`` (the exact expectation over the
labels, one backward pass per class) for reference.

Usage::

    PYTHONPATH=. python benchmarks/kfac_vs_kronfluence.py     # 64-64-10, exact
    PYTHONPATH=. /work/peers-venv/bin/python benchmarks/kfac_vs_kronfluence.py \
        --synthetic 5000 --hidden 512 512 --no-exact --repeats 1
    # on a machine shared with other jobs: one thread, timed by CPU time
    PYTHONPATH=. python benchmarks/kfac_vs_kronfluence.py --synthetic 5000 \
        --hidden 512 512 --no-exact --no-kronfluence --threads 1 --cpu-time
"""

import argparse
import copy
import logging
import tempfile
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from dataval import EKFACInfluence, ExactInfluence, KFACInfluence

QUERY_RANKS = (1, 8, 32, 128)


def make_model(n_inputs, hidden, seed):
    torch.manual_seed(seed)
    sizes = [n_inputs, *hidden, 10]
    layers = []
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def train(model, X, y, epochs, lr=1e-2):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        for idx in torch.randperm(len(X)).split(128):
            optimizer.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            optimizer.step()
    return model.eval()


def digits_data(n_test, seed):
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X / 16.0, y, test_size=n_test, random_state=seed, stratify=y
    )
    return (
        torch.tensor(X_train, dtype=torch.float32),
        torch.tensor(y_train),
        torch.tensor(X_test, dtype=torch.float32),
        torch.tensor(y_test),
    )


def synthetic_data(n_train, n_test, seed):
    """MNIST-shaped rows: 784 uniform inputs, labels of a noisy linear teacher."""
    generator = torch.Generator().manual_seed(seed)
    X = torch.rand(n_train + n_test, 784, generator=generator)
    teacher = torch.randn(784, 10, generator=generator)
    noise = 2.0 * torch.randn(len(X), 10, generator=generator)
    y = ((X - 0.5) @ teacher + noise).argmax(1)
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


def mean_row_pearson(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    return float(((a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))).mean())


#: the clock every timing reads: wall time, or with ``--cpu-time`` the
#: process's CPU time (with ``--threads 1``, what the work costs, whatever else
#: runs on a shared machine)
clock = time.perf_counter


def timed(function):
    start = clock()
    result = function()
    return result, clock() - start


def epoch_seconds(model, X, y, batch_size):
    """One forward+backward pass of the plain model over (X, y), best of 3."""
    model = copy.deepcopy(model)
    seconds = []
    for _ in range(3):
        start = clock()
        for i in range(0, len(X), batch_size):
            model.zero_grad()
            F.cross_entropy(
                model(X[i : i + batch_size]), y[i : i + batch_size]
            ).backward()
        seconds.append(clock() - start)
    return min(seconds)


def gemm_floor_seconds(n_test, n_train, p):
    """Seconds of ``2 p n m`` flop at the measured (m, p) @ (p, 512) rate."""
    Q, G = torch.randn(n_test, p), torch.randn(512, p)
    seconds = []
    for _ in range(4):  # the first warms up; the best of the rest
        start = clock()
        Q @ G.T
        seconds.append(clock() - start)
    return min(seconds[1:]) * n_train / 512


def run_dataval(estimator, model, data):
    X_train, y_train, X_test, y_test = data
    est, fit_s = timed(lambda: estimator.fit(model, X_train, y_train))
    scores, score_s = timed(lambda: est.score(X_test, y_test).to_numpy())
    return scores, fit_s, score_s, est


def kronfluence_analyzer(model, output_dir):
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.task import Task

    class Classification(Task):
        def compute_train_loss(self, batch, model, sample=False):
            inputs, labels = batch
            logits = model(inputs)
            if sample:
                with torch.no_grad():
                    probabilities = torch.softmax(logits.detach(), -1)
                    labels = torch.multinomial(probabilities, 1).flatten()
            return F.cross_entropy(logits, labels, reduction="sum")

        def compute_measurement(self, batch, model):
            inputs, labels = batch
            return F.cross_entropy(model(inputs), labels, reduction="sum")

    task = Classification()
    prepared = prepare_model(copy.deepcopy(model), task)
    return Analyzer(
        "bench", prepared, task, cpu=True, disable_tqdm=True, output_dir=output_dir
    )


def run_kronfluence(model, data, damping, batch_size, ranks=()):
    """Scores, fit and score seconds, and ``{rank: (scores, seconds)}``."""
    from kronfluence.arguments import FactorArguments, ScoreArguments

    X_train, y_train, X_test, y_test = data
    train_set = torch.utils.data.TensorDataset(X_train, y_train)
    test_set = torch.utils.data.TensorDataset(X_test, y_test)

    def score(analyzer, name, rank=None):
        arguments = ScoreArguments(damping_factor=damping, query_gradient_low_rank=rank)
        scores = analyzer.compute_pairwise_scores(
            name,
            "ekfac",
            test_set,
            train_set,
            per_device_query_batch_size=len(test_set),
            per_device_train_batch_size=batch_size,
            score_args=arguments,
            overwrite_output_dir=True,
        )
        # a fresh computation returns None: the scores are read back from disk
        return (scores or analyzer.load_pairwise_scores(name))["all_modules"].numpy()

    with tempfile.TemporaryDirectory() as output_dir:
        start = clock()
        analyzer = kronfluence_analyzer(model, output_dir)
        analyzer.fit_all_factors(
            "ekfac",
            train_set,
            per_device_batch_size=batch_size,
            factor_args=FactorArguments(strategy="ekfac"),
            overwrite_output_dir=True,
        )
        fit_s = clock() - start
        scores, score_s = timed(lambda: score(analyzer, "scores"))
        low_rank = {r: timed(lambda r=r: score(analyzer, f"r{r}", r)) for r in ranks}
    return scores, fit_s, score_s, low_rank


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[64])
    parser.add_argument("--synthetic", type=int, default=None, metavar="N")
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--damping", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time by the process's CPU time (use with --threads 1 on a shared machine)",
    )
    parser.add_argument("--no-exact", action="store_true")
    parser.add_argument("--no-kronfluence", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--query-ranks", type=int, nargs="*", default=list(QUERY_RANKS), metavar="R"
    )
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_time:
        global clock
        clock = time.process_time

    if args.synthetic:
        data = synthetic_data(args.synthetic, args.n_test, args.seed)
        model = train(make_model(784, args.hidden, args.seed), *data[:2], 3, 1e-3)
    else:
        data = digits_data(args.n_test, args.seed)
        model = train(make_model(64, args.hidden, args.seed), *data[:2], 200)
    n_train, p = len(data[0]), sum(t.numel() for t in model.parameters())
    accuracy = (model(data[2]).argmax(1) == data[3]).float().mean().item()
    epoch = epoch_seconds(model, data[0], data[1], args.batch_size)
    floor = gemm_floor_seconds(args.n_test, n_train, p)
    print(
        f"MLP {[data[0].shape[1], *args.hidden, 10]}: {p} parameters, {n_train} "
        f"train / {args.n_test} test rows, test accuracy {accuracy:.3f}, damping "
        f"{args.damping:g}, torch threads {torch.get_num_threads()}, "
        f"{'process CPU time' if args.cpu_time else 'wall time'}\n"
        f"one forward+backward epoch {epoch:.3f} s; GEMM floor of the score "
        f"(2 p n m flop at the measured rate) {floor:.2f} s"
    )

    common = {"damping": args.damping, "batch_size": args.batch_size}
    estimators = {
        "dataval EK-FAC": lambda: EKFACInfluence(**common, random_state=args.seed),
        "dataval EK-FAC ggn": lambda: EKFACInfluence(**common, fisher="ggn"),
        "dataval K-FAC": lambda: KFACInfluence(**common, random_state=args.seed),
    }
    header = f"{'method':<20}{'fit s':>9}{'epochs':>8}{'score s':>9}{'/ floor':>9}"
    print(f"\n{header}{'total s':>9}", flush=True)
    results = {}
    for name, make in estimators.items():
        runs = [run_dataval(make(), model, data) for _ in range(args.repeats)]
        results[name] = report(name, runs, epoch, floor)
    if not args.no_kronfluence:
        runs = [
            run_kronfluence(
                model, data, args.damping, args.batch_size, args.query_ranks
            )
            for _ in range(args.repeats)
        ]
        results["kronfluence EK-FAC"] = report("kronfluence EK-FAC", runs, epoch, floor)
        ours, theirs = results["dataval EK-FAC"], results["kronfluence EK-FAC"]
        print(
            f"\nkronfluence / dataval EK-FAC time: fit {theirs[1] / ours[1]:.1f}x, "
            f"score {theirs[2] / ours[2]:.1f}x, end to end "
            f"{(theirs[1] + theirs[2]) / (ours[1] + ours[2]):.1f}x"
        )
        print(
            "dataval EK-FAC vs kronfluence EK-FAC: mean row Pearson "
            f"{mean_row_pearson(ours[0], theirs[0]):.4f}",
            flush=True,
        )
    low_rank_table(
        results, runs if not args.no_kronfluence else None, data, args.query_ranks
    )
    if args.no_exact:
        return
    print("\nmean row Pearson with the exact influence (same damping):")
    print(f"{'method':<20}{'exact ggn':>12}{'exact hessian':>15}")
    references = []
    for curvature in ("ggn", "hessian"):
        exact = ExactInfluence(damping=args.damping, curvature=curvature)
        exact.fit(model, data[0], data[1])
        references.append(exact.score(data[2], data[3]).to_numpy())
    for name, (scores, *_) in results.items():
        ggn, hessian = (mean_row_pearson(scores, r) for r in references)
        print(f"{name:<20}{ggn:>12.4f}{hessian:>15.4f}")
    print(f"{'exact ggn':<20}{1:>12.4f}{mean_row_pearson(*references):>15.4f}")


def low_rank_table(results, kronfluence_runs, data, ranks):
    """Time and accuracy (Pearson with full rank) of low-rank queries."""
    scores, _, full_s, estimator = results["dataval EK-FAC"]
    print("\nlow-rank queries: score seconds, / full rank, Pearson with full rank")
    print(f"{'rank':<6}{'dataval s':>10}{'ratio':>7}{'Pearson':>9}", end="")
    print(
        f"{'kronfluence s':>15}{'ratio':>7}{'Pearson':>9}" if kronfluence_runs else ""
    )
    for rank in ranks:
        estimator.set_params(query_rank=rank)
        low, seconds = timed(lambda: estimator.score(data[2], data[3]).to_numpy())
        line = (
            f"{rank:<6}{seconds:>10.2f}{full_s / seconds:>7.1f}"
            f"{mean_row_pearson(low, scores):>9.4f}"
        )
        if kronfluence_runs:
            theirs, _, their_full_s, low_rank = kronfluence_runs[-1]
            their_low, their_s = low_rank[rank]
            line += (
                f"{their_s:>15.2f}{their_full_s / their_s:>7.1f}"
                f"{mean_row_pearson(their_low, theirs):>9.4f}"
            )
        print(line, flush=True)
    estimator.set_params(query_rank=None)


def report(name, runs, epoch, floor):
    """Print the fastest fit and score times of repeated runs; return them."""
    fit_s, score_s = min(r[1] for r in runs), min(r[2] for r in runs)
    print(
        f"{name:<20}{fit_s:>9.2f}{fit_s / epoch:>8.1f}{score_s:>9.2f}"
        f"{score_s / floor:>9.2f}{fit_s + score_s:>9.2f}",
        flush=True,
    )
    return runs[-1][0], fit_s, score_s, runs[-1][-1]


if __name__ == "__main__":
    main()
