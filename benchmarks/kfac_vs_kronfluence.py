"""EK-FAC influence: dataval against kronfluence, and both against the exact answer.

Trains a small MLP classifier on scikit-learn's digits and, in one run, with the
same model, data and damping:

- fits dataval's ``EKFACInfluence`` and kronfluence's EK-FAC and scores the
  test rows against the training rows, timing the fit and the scoring;
- when the model is small enough, compares each with the dense float64
  reference ``ExactInfluence`` (Gauss-Newton and Hessian versions) by the
  mean over test rows of the Pearson correlation of their score rows, and
  reports dataval's ``KFACInfluence`` too.

kronfluence is not a dataval dependency; install it in the benchmark
environment without touching torch::

    pip install --no-deps kronfluence accelerate einops einconv opt-einsum safetensors

kronfluence wraps the model's modules and freezes its parameters
(``prepare_model``), so it gets a deep copy; its scores are compared by
correlation only (its convention has no ``1/n``). Both use the true Fisher
(sampled labels) and the summed cross-entropy of a row as its loss; the row
"dataval EK-FAC ggn" shows ``fisher="ggn"`` (the exact expectation over the
labels, one backward pass per class) for reference.

Usage::

    python benchmarks/kfac_vs_kronfluence.py            # 64-64-10, with exact
    python benchmarks/kfac_vs_kronfluence.py --hidden 256 256 --no-exact
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


def make_model(hidden, seed):
    torch.manual_seed(seed)
    sizes = [64, *hidden, 10]
    layers = []
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def train(model, X, y, epochs=200, lr=1e-2):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        for idx in torch.randperm(len(X)).split(128):
            optimizer.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            optimizer.step()
    return model.eval()


def mean_row_pearson(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.mean([np.corrcoef(x, z)[0, 1] for x, z in zip(a, b)]))


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def run_dataval(estimator, model, data):
    X_train, y_train, X_test, y_test = data
    est, fit_s = timed(lambda: estimator.fit(model, X_train, y_train))
    scores, score_s = timed(lambda: est.score(X_test, y_test).to_numpy())
    return scores, fit_s, score_s


def run_kronfluence(model, data, damping, batch_size):
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
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

    X_train, y_train, X_test, y_test = data
    train_set = torch.utils.data.TensorDataset(X_train, y_train)
    test_set = torch.utils.data.TensorDataset(X_test, y_test)
    task = Classification()
    with tempfile.TemporaryDirectory() as output_dir:
        start = time.perf_counter()
        prepared = prepare_model(copy.deepcopy(model), task)
        analyzer = Analyzer(
            "bench", prepared, task, cpu=True, disable_tqdm=True, output_dir=output_dir
        )
        analyzer.fit_all_factors(
            "ekfac",
            train_set,
            per_device_batch_size=batch_size,
            factor_args=FactorArguments(strategy="ekfac"),
            overwrite_output_dir=True,
        )
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        scores = analyzer.compute_pairwise_scores(
            "scores",
            "ekfac",
            test_set,
            train_set,
            per_device_query_batch_size=len(test_set),
            per_device_train_batch_size=batch_size,
            score_args=ScoreArguments(damping_factor=damping),
            overwrite_output_dir=True,
        )
        # a fresh computation returns None: the scores are read back from disk
        scores = scores or analyzer.load_pairwise_scores("scores")
        score_s = time.perf_counter() - start
    return scores["all_modules"].numpy(), fit_s, score_s


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[64])
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--damping", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-exact", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X / 16.0, y, test_size=args.n_test, random_state=args.seed, stratify=y
    )
    data = (
        torch.tensor(X_train, dtype=torch.float32),
        torch.tensor(y_train),
        torch.tensor(X_test, dtype=torch.float32),
        torch.tensor(y_test),
    )
    model = train(make_model(args.hidden, args.seed), data[0], data[1])
    n_params = sum(p.numel() for p in model.parameters())
    accuracy = (model(data[2]).argmax(1) == data[3]).float().mean().item()
    print(
        f"MLP {[64, *args.hidden, 10]}: {n_params} parameters, "
        f"{len(X_train)} train / {args.n_test} test rows, test accuracy {accuracy:.3f}, "
        f"damping {args.damping:g}, torch threads {torch.get_num_threads()}"
    )

    estimators = {
        "dataval EK-FAC": lambda: EKFACInfluence(
            damping=args.damping, batch_size=args.batch_size, random_state=args.seed
        ),
        "dataval EK-FAC ggn": lambda: EKFACInfluence(
            damping=args.damping, fisher="ggn", batch_size=args.batch_size
        ),
        "dataval K-FAC": lambda: KFACInfluence(
            damping=args.damping, batch_size=args.batch_size, random_state=args.seed
        ),
    }
    print(f"\n{'method':<20}{'fit s':>9}{'score s':>9}{'total s':>9}", flush=True)
    results = {}
    for name, make in estimators.items():
        runs = [run_dataval(make(), model, data) for _ in range(args.repeats)]
        results[name] = report(name, runs)
    runs = [
        run_kronfluence(model, data, args.damping, args.batch_size)
        for _ in range(args.repeats)
    ]
    results["kronfluence EK-FAC"] = report("kronfluence EK-FAC", runs)
    ours, theirs = results["dataval EK-FAC"], results["kronfluence EK-FAC"]
    print(
        f"\nkronfluence / dataval EK-FAC time: fit {theirs[1] / ours[1]:.1f}x, "
        f"score {theirs[2] / ours[2]:.1f}x, "
        f"end to end {(theirs[1] + theirs[2]) / (ours[1] + ours[2]):.1f}x"
    )
    print(
        "dataval EK-FAC vs kronfluence EK-FAC: mean row Pearson "
        f"{mean_row_pearson(ours[0], theirs[0]):.4f}; median of kronfluence / "
        f"(n * dataval) {np.median(theirs[0] / (ours[0] * len(data[0]))):.3f}",
        flush=True,
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
    for name, (scores, _, _) in results.items():
        ggn, hessian = (mean_row_pearson(scores, r) for r in references)
        print(f"{name:<20}{ggn:>12.4f}{hessian:>15.4f}")
    print(f"{'exact ggn':<20}{1:>12.4f}{mean_row_pearson(*references):>15.4f}")


def report(name, runs):
    """Print the fastest fit and score times of repeated runs; return them."""
    fit_s, score_s = min(r[1] for r in runs), min(r[2] for r in runs)
    print(f"{name:<20}{fit_s:>9.2f}{score_s:>9.2f}{fit_s + score_s:>9.2f}", flush=True)
    return runs[-1][0], fit_s, score_s


if __name__ == "__main__":
    main()
