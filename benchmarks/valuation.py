"""Valuation by retraining: dataval against pyDVL, and Data-OOB on noisy labels.

Four measurements, printed as tables (one run, same machine):

1. KNN-Shapley on the digits (1437 training, 360 validation rows): largest
   absolute difference between dataval's and pyDVL's values, and the wall
   time of each.
2. Truncated Monte Carlo Shapley and 3. Banzhaf by maximum sample reuse on a
   logistic regression of the breast cancer data (``--n-train`` rows, 20 % of
   their labels flipped), without truncation, at equal utility evaluations:
   pyDVL runs to ``MaxUpdates(--permutations)`` or ``MaxUpdates(--subsets)``
   and dataval gets as many evaluations (``max_fits``). Both value the same
   utility of the same seeded model (see ``CountedLogistic``). The table
   shows the evaluations and the fits counted inside the model, wall and
   CPU seconds of seeds 0 and 1 run serially (interleaved), wall seconds of
   seed 0 with ``--n-jobs`` workers, and Spearman's rank correlation between
   the libraries and between two seeds of one library (the Monte Carlo noise
   floor at that budget).
4. Mislabel detection on the digits with 10 % flipped labels: ROC AUC of
   ``-value`` of Data-OOB (dataval; pyDVL on a BaggingClassifier with the
   same number of bags) and of KNN-Shapley (each row valued on the others),
   against dataval's influence filter (self-influence of a logistic
   regression), cross-fitted losses and cleanlab's label quality on
   cross-validated probabilities.

pyDVL and cleanlab are optional (not dependencies of dataval); without them
their rows are skipped. Run, e.g. with pyDVL in a separate environment:

    PYTHONPATH=. /work/peers-venv/bin/python benchmarks/valuation.py
"""

import argparse
import os
import time
import warnings

import numpy as np
from joblib import parallel_config
from scipy.stats import spearmanr
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.ensemble import BaggingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from dataval import BanzhafValuation, DataOOB, KNNShapley, ShapleyValuation
from dataval.datasets import flip_labels, load_mislabeled_digits
from dataval.filters import MislabelFilter
from dataval.metrics import mislabel_detection_auc

try:
    import pydvl.valuation as pv
except ImportError:
    pv = None


class CountedLogistic(LogisticRegression):
    """A logistic regression that counts its fits (serial runs only).

    Fitted on one class, it predicts that class: the utility dataval gives a
    single-class subset without fitting, where pyDVL would score the failed
    fit with its scorer's default. Both libraries then value the same
    utility. Both fit it with ``random_state=0``: dataval would otherwise seed
    a ``random_state`` left at None (a subset always gives one model), and
    pyDVL fit a different model, unseeded.
    """

    fits = 0

    def fit(self, X, y, sample_weight=None):
        CountedLogistic.fits += 1
        self.constant_ = None if (y != y[0]).any() else y[0]
        if self.constant_ is not None:
            self.classes_ = np.unique(y)
            return self
        return super().fit(X, y, sample_weight=sample_weight)

    def predict(self, X):
        if self.constant_ is not None:
            return np.full(len(X), self.constant_)
        return super().predict(X)


def timed(function):
    result, seconds, _, fits = clocked(function)
    return result, seconds, fits


def clocked(function):
    """Result, wall and CPU seconds of this process, and the fits counted."""
    CountedLogistic.fits = 0
    start, cpu = time.perf_counter(), time.process_time()
    result = function()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return result, wall, cpu, CountedLogistic.fits


def row(*cells):
    print(
        "  ".join(
            f"{c:>14}" if not isinstance(c, float) else f"{c:14.4g}" for c in cells
        )
    )


# --------------------------------------------------------------------- KNN-Shapley
def knn_shapley(k):
    X, y = load_digits(return_X_y=True)
    X_train, y_train, X_val, y_val = X[:1437], y[:1437], X[1437:], y[1437:]
    model = KNeighborsClassifier(n_neighbors=k)
    ours, t_ours, _ = timed(
        lambda: KNNShapley().fit(model, X_train, y_train).value(X_val, y_val)
    )
    print(f"\nKNN-Shapley, digits, K={k}: 1437 training x 360 validation rows")
    row("library", "seconds", "max |diff|")
    row("dataval", t_ours, 0.0)
    if pv is None:
        return
    train = pv.Dataset(X_train, y_train)
    test = pv.Dataset(X_val, y_val)
    valuation = pv.KNNShapleyValuation(model, test_data=test, progress=False)
    theirs, t_theirs, _ = timed(lambda: valuation.fit(train).result.values)
    row("pyDVL", t_theirs, float(np.abs(ours.to_numpy() - theirs).max()))
    print(f"pyDVL / dataval time: {t_theirs / t_ours:.1f}x")


# ------------------------------------------------------------- Shapley, Banzhaf
def breast_cancer(n_train):
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    rows = np.random.RandomState(0).permutation(len(X))
    train, val = rows[:n_train], rows[n_train : n_train + 200]
    # flipped labels give the values a clear signal above the Monte Carlo noise
    y_train, _ = flip_labels(y[train], frac=0.2, random_state=0)
    return X[train], y_train, X[val], y[val]


def ours_sampled(kind, data, budget, seed, n_jobs):
    """dataval's values, and its utility evaluations (Shapley: U(all rows) too)."""
    X, y, X_val, y_val = data
    if kind == "shapley":
        estimator = ShapleyValuation(truncation_tol=None, batch_size=8)
    else:
        estimator = BanzhafValuation(batch_size=64)
    estimator.set_params(
        max_fits=budget, tol=None, random_state=seed, n_jobs=n_jobs, scoring="accuracy"
    )
    model = CountedLogistic(solver="liblinear", random_state=0)
    values = estimator.fit(model, X, y).value(X_val, y_val).to_numpy()
    return values, estimator.n_fits_ + (kind == "shapley")


def pydvl_sampled(kind, data, n_samples, seed, n_jobs):
    """pyDVL's values, and its utility evaluations (every one is a fit)."""
    X, y, X_val, y_val = data
    train, test = pv.Dataset(X, y), pv.Dataset(X_val, y_val)
    # U(empty set) as dataval defines it: predict the most frequent class
    empty = float(np.mean(y_val == np.bincount(y).argmax()))
    scorer = pv.SupervisedScorer("accuracy", test, default=empty, range=(0, 1))
    model = CountedLogistic(solver="liblinear", random_state=0)
    utility = pv.ModelUtility(model, scorer)
    if kind == "shapley":
        valuation = pv.TMCShapleyValuation(
            utility,
            truncation=pv.NoTruncation(),
            is_done=pv.MaxUpdates(n_samples),
            seed=seed,
            show_warnings=False,
        )
    else:
        valuation = pv.MSRBanzhafValuation(
            utility,
            is_done=pv.MaxUpdates(n_samples),
            batch_size=64,
            seed=seed,
            show_warnings=False,
        )
    fits = CountedLogistic.fits
    with parallel_config(n_jobs=n_jobs or 1):
        values = valuation.fit(train).result.values
    return values, CountedLogistic.fits - fits


def serial_runs(libraries, kind, data, n_samples):
    """``{library: [(values, evaluations, wall, cpu, fits) per seed]}``, and
    dataval's budget: seeds 0 and 1, interleaved, pyDVL first (dataval gets the
    evaluations pyDVL made)."""
    n_train = len(data[1])
    # dataval's Shapley evaluates U(all rows) once, not once per permutation
    budget = n_samples * n_train - 1 if kind == "shapley" else n_samples
    runs = {name: [] for name in libraries}
    for seed in (0, 1):
        for name, function in libraries.items():
            size = n_samples if name == "pyDVL" else budget
            (values, evaluations), *clock = clocked(
                lambda f=function, z=size, s=seed: f(kind, data, z, s, 1)
            )
            runs[name].append((values, evaluations, *clock))
            if name == "pyDVL" and seed == 0 and kind == "shapley":
                # whole permutations of n_train - 1 evaluations, plus U(all rows)
                budget = (evaluations - 1) // (n_train - 1) * (n_train - 1)
            elif name == "pyDVL" and seed == 0:
                budget = evaluations
    return runs, budget


def print_agreement(runs):
    print("Spearman rank correlation of the values:")
    for name, results in runs.items():
        noise = spearmanr(results[0][0], results[1][0]).statistic
        print(f"  {name}, seed 0 vs seed 1: {noise:.3f}")
    if "pyDVL" in runs:
        pairs = [(a[0], b[0]) for a in runs["dataval"] for b in runs["pyDVL"]]
        across = np.mean([spearmanr(a, b).statistic for a, b in pairs])
        print(f"  dataval vs pyDVL, mean over the 4 pairs of seeds: {across:.3f}")


def sampled(kind, n_train, n_samples, n_jobs):
    """Both libraries at equal utility evaluations: seeds 0 and 1 of each,
    serially, then seed 0 with ``n_jobs`` workers."""
    data = breast_cancer(n_train)
    print(
        f"\n{kind}: LogisticRegression(liblinear), breast cancer (20 % of the training "
        f"labels flipped), {n_train} training x 200 validation rows, accuracy, "
        f"no truncation; pyDVL: MaxUpdates({n_samples}), dataval: as many "
        "utility evaluations"
    )
    libraries = {"dataval": ours_sampled}
    if pv is not None:
        libraries = {"pyDVL": pydvl_sampled, **libraries}
    runs, budget = serial_runs(libraries, kind, data, n_samples)
    row("library", "n_jobs", "evaluations", "fits", "seconds", "CPU seconds")
    for name, results in runs.items():
        row(name, "1", *(sum(r[i] for r in results) for i in (1, 4, 2, 3)))
    seconds = {(name, 1): sum(r[2] for r in runs[name]) / 2 for name in runs}
    for name, function in libraries.items() if n_jobs > 1 else ():
        # (re)start the workers in this library's joblib configuration
        function(kind, data, 2 if name == "pyDVL" else 2 * n_train, 0, n_jobs)
        size = n_samples if name == "pyDVL" else budget
        _, seconds[name, n_jobs], _ = timed(
            lambda f=function, z=size: f(kind, data, z, 0, n_jobs)
        )
        row(name, str(n_jobs), "(seed 0)", "-", seconds[name, n_jobs], "-")
    print_agreement(runs)
    if pv is None:
        return
    cpu = [sum(r[3] for r in runs[name]) for name in ("pyDVL", "dataval")]
    print(
        f"pyDVL / dataval at equal evaluations, CPU, n_jobs=1: {cpu[0] / cpu[1]:.2f}x"
    )
    for jobs in dict.fromkeys([1, n_jobs]):
        ratio = seconds["pyDVL", jobs] / seconds["dataval", jobs]
        print(
            f"pyDVL / dataval at equal evaluations, wall, n_jobs={jobs}: {ratio:.2f}x"
        )


# --------------------------------------------------------------- mislabel AUC
def mislabel(n_estimators, seed):
    X, y, flipped = load_mislabeled_digits(noise=0.1, random_state=seed)
    print(
        f"\nMislabel detection: digits, 1797 rows, 10 % flipped (seed {seed}); "
        f"ROC AUC of the suspicion score, Data-OOB with {n_estimators} bags"
    )
    row("method", "model", "AUC", "seconds")
    models = {
        "tree": DecisionTreeClassifier(random_state=0),
        "knn5": KNeighborsClassifier(5),
        "logistic": LogisticRegression(C=0.1, max_iter=2000),
    }
    for name, model in models.items():
        oob = DataOOB(n_estimators=n_estimators, random_state=0)
        values, seconds, _ = timed(lambda m=model, o=oob: o.fit(m, X, y).value())
        row("Data-OOB", name, mislabel_detection_auc(-values, flipped), seconds)
        if pv is not None:
            bagging = BaggingClassifier(
                model, n_estimators=n_estimators, random_state=0
            )

            def pydvl_oob(b=bagging):
                b.fit(X, y)
                return pv.DataOOBValuation(b).fit(pv.Dataset(X, y)).result.values

            theirs, seconds, _ = timed(pydvl_oob)
            row(
                "pyDVL Data-OOB",
                name,
                mislabel_detection_auc(-theirs, flipped),
                seconds,
            )
    knn = KNNShapley()
    values, seconds, _ = timed(lambda: knn.fit(models["knn5"], X, y).value())
    row("KNN-Shapley", "knn5", mislabel_detection_auc(-values, flipped), seconds)
    logistic = models["logistic"]
    for method in ("self", "cross-fit"):
        filt = MislabelFilter(estimator=logistic, method=method)
        scores, seconds, _ = timed(lambda f=filt: f.fit(X, y).scores_)
        label = "self-influence" if method == "self" else "cross-fit loss"
        row(label, "logistic", mislabel_detection_auc(scores, flipped), seconds)
    try:
        from cleanlab.rank import get_label_quality_scores
    except ImportError:
        return

    def cleanlab_scores():
        proba = cross_val_predict(logistic, X, y, cv=5, method="predict_proba")
        return 1 - get_label_quality_scores(y, proba)

    scores, seconds, _ = timed(cleanlab_scores)
    row("cleanlab", "logistic", mislabel_detection_auc(scores, flipped), seconds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=30)
    parser.add_argument("--permutations", type=int, default=60)
    parser.add_argument("--subsets", type=int, default=2000)
    parser.add_argument("--n-estimators", type=int, default=50)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="label flips")
    parser.add_argument(
        "--only", default="knn,shapley,banzhaf,mislabel", help="comma-separated parts"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    parts = args.only.split(",")
    print(f"pyDVL: {'installed' if pv is not None else 'not installed, skipped'}")
    print(f"CPU cores: {os.cpu_count()}")
    if "knn" in parts:
        knn_shapley(5)
    if "shapley" in parts:
        sampled("shapley", args.n_train, args.permutations, args.n_jobs)
    if "banzhaf" in parts:
        sampled("banzhaf", args.n_train, args.subsets, args.n_jobs)
    if "mislabel" in parts:
        mislabel(args.n_estimators, args.seed)
