"""Label-issue detection: dataval's default against the usual baselines.

Grid: six data sets and models (iris, wine, breast cancer and digits with a
logistic regression; a generated table with scikit-learn's MLP; a generated
table with a torch MLP through skorch, when skorch is installed) x noise
rates 5/10/20 % x uniform and class-conditional flips
(``flip_labels(kind=...)``). Each setting splits the rows 70/30; labels of
the 70 % are flipped, and every method ranks those rows:

* ``default``: ``find_label_issues`` as shipped (``method="auto"``: each
  row's in-sample loss plus its cross-fitted loss; ``cv + 1`` fits);
* ``loss``: in-sample loss of the model fitted on all rows (1 fit);
* ``cv-margin``: normalized margin of 5-fold cross-validated probabilities,
  ``max_other p - p(given)`` (5 fits);
* ``cross-fit``: the held-out loss alone, ``MislabelFilter(method="cross-fit")``
  (5 fits; the ranking of cleanlab's self-confidence);
* ``self-influence``: ``MislabelFilter(method="self")`` (1 fit + influence);
* ``cleanlab``: ``cleanlab.rank.get_label_quality_scores`` on the same
  cross-validated probabilities, and ``cleanlab.filter.find_label_issues``
  for its count, when cleanlab is installed (not a dependency of dataval).

Per method it reports the ROC AUC of the ranking, the precision among the
top ``true number of flips`` rows, the test accuracy (true labels) of the
model refitted without the rows the method flags (its own count for
``default`` and ``cleanlab``, the default's count for the rankings without
one; measured for default, loss, cv-margin and cleanlab), the fits and
seconds it took. Then the mean over the grid and, for the
count, the ratio estimated / true flips of dataval's and cleanlab's counts.

Run: ``python benchmarks/label_detection.py [--seed 0] [--out table.csv]``
(about five minutes on two CPU cores).
"""

import argparse
import time
import warnings

import numpy as np
import pandas as pd
import torch
from sklearn.base import clone
from sklearn.datasets import (
    load_breast_cancer,
    load_digits,
    load_iris,
    load_wine,
    make_classification,
)
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict, train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dataval.datasets import flip_labels
from dataval.filters import MislabelFilter, find_label_issues

CV = 5
#: methods whose filtered refit is measured (each costs one fit per setting)
ACCURACY_OF = ("default", "loss", "cv-margin", "cleanlab")


def _logistic():
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def _skorch_mlp(n_features, n_classes):
    try:
        from skorch import NeuralNetClassifier
    except ImportError:
        return None

    class MLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden = torch.nn.Linear(n_features, 32)
            self.out = torch.nn.Linear(32, n_classes)

        def forward(self, X):
            return self.out(torch.relu(self.hidden(X)))

    return NeuralNetClassifier(
        MLP,
        criterion=torch.nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=0.01,
        max_epochs=60,
        batch_size=128,
        optimizer__weight_decay=1e-4,
        train_split=None,
        verbose=0,
    )


def datasets():
    """``(name, X, y, model)``: float32 features, int64 labels."""
    for name, loader in [
        ("iris", load_iris),
        ("wine", load_wine),
        ("breast_cancer", load_breast_cancer),
        ("digits", load_digits),
    ]:
        X, y = loader(return_X_y=True)
        X, y = X[:1000], y[:1000]  # digits: 1000 of 1797 rows keep the run short
        yield name, X.astype(np.float32), y.astype(np.int64), _logistic()
    X, y = make_classification(
        1000,
        12,
        n_informative=8,
        n_classes=4,
        class_sep=1.5,
        flip_y=0,
        random_state=1,
    )
    mlp = make_pipeline(
        StandardScaler(),
        MLPClassifier((32,), alpha=1e-2, max_iter=600, random_state=0),
    )
    yield "generated_mlp", X.astype(np.float32), y, mlp
    X, y = make_classification(
        1000,
        12,
        n_informative=8,
        n_classes=3,
        class_sep=1.5,
        flip_y=0,
        random_state=2,
    )
    X = StandardScaler().fit_transform(X).astype(np.float32)
    net = _skorch_mlp(X.shape[1], 3)
    if net is not None:
        yield "generated_torch_mlp", X, y.astype(np.int64), net


def _timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def _given_proba(proba, y):
    return proba[np.arange(len(y)), y]


def _margin(proba, y):
    other = proba.copy()
    other[np.arange(len(y)), y] = -np.inf
    return other.max(1) - _given_proba(proba, y)


def rankings(model, X, y, folds):
    """``{method: (scores, n_flagged or None, fits, seconds)}`` for one setting."""
    torch.manual_seed(0)
    out = {}
    issues, seconds = _timed(find_label_issues, model, X, y, cv=folds)
    scores = issues["score"].sort_index().to_numpy()
    out["default"] = (scores, issues.attrs["n_issues"], CV + 1, seconds)
    fitted, fit_seconds = _timed(clone(model).fit, X, y)
    loss, seconds = _timed(
        lambda: -np.log(np.maximum(_given_proba(fitted.predict_proba(X), y), 1e-12))
    )
    out["loss"] = (loss, None, 1, fit_seconds + seconds)
    proba, cv_seconds = _timed(
        cross_val_predict, clone(model), X, y, cv=folds, method="predict_proba"
    )
    out["cv-margin"] = (_margin(proba, y), None, CV, cv_seconds)
    out["cross-fit"] = (
        -np.log(np.maximum(_given_proba(proba, y), 1e-12)),
        None,
        CV,
        cv_seconds,
    )
    filt, seconds = _timed(
        MislabelFilter(estimator=model, method="self", frac=0.0).fit, X, y
    )
    out["self-influence"] = (filt.scores_.to_numpy(), None, 1, seconds)
    try:
        from cleanlab.filter import find_label_issues as cleanlab_issues
        from cleanlab.rank import get_label_quality_scores
    except ImportError:
        return out
    quality, seconds = _timed(get_label_quality_scores, y, proba)
    flagged = cleanlab_issues(y, proba)
    out["cleanlab"] = (1 - quality, int(flagged.sum()), CV, cv_seconds + seconds)
    return out


def clean_accuracy(model, X, y, scores, n_removed, X_test, y_test):
    """Test accuracy of ``model`` refitted without the ``n_removed`` top rows."""
    kept = np.argsort(-scores, kind="stable")[n_removed:]
    torch.manual_seed(0)
    return clone(model).fit(X[kept], y[kept]).score(X_test, y_test)


def _warm_up():
    """Pay torch's one-time set-up before anything is timed."""
    X, y = load_iris(return_X_y=True)
    MislabelFilter(estimator=_logistic(), method="self", frac=0.0).fit(X, y)


def run(seed):
    _warm_up()
    rows = []
    for name, X_all, y_all, model in datasets():
        X, X_test, y_clean, y_test = train_test_split(
            X_all, y_all, test_size=0.3, stratify=y_all, random_state=seed
        )
        for kind in ("uniform", "class-conditional"):
            for noise in (0.05, 0.1, 0.2):
                y, flipped = flip_labels(y_clean, noise, random_state=seed, kind=kind)
                folds = StratifiedKFold(CV, shuffle=True, random_state=seed + 1)
                found = rankings(model, X, y, folds)
                n_true = int(flipped.sum())
                n_default = found["default"][1]
                for method, (scores, n_flagged, fits, seconds) in found.items():
                    top = np.argsort(-scores, kind="stable")[:n_true]
                    n_removed = n_default if n_flagged is None else n_flagged
                    refit = method in ACCURACY_OF
                    rows.append(
                        {
                            "data": name,
                            "noise": noise,
                            "kind": kind,
                            "method": method,
                            "auc": roc_auc_score(flipped, scores),
                            "precision_at_true": flipped[top].mean(),
                            "clean_accuracy": (
                                clean_accuracy(
                                    model, X, y, scores, n_removed, X_test, y_test
                                )
                                if refit
                                else np.nan
                            ),
                            "count_ratio": (
                                np.nan if n_flagged is None else n_flagged / n_true
                            ),
                            "fits": fits,
                            "seconds": seconds,
                        }
                    )
                rows.append(
                    {
                        "data": name,
                        "noise": noise,
                        "kind": kind,
                        "method": "unfiltered",
                        "clean_accuracy": clean_accuracy(
                            model, X, y, np.zeros(len(y)), 0, X_test, y_test
                        ),
                    }
                )
                print(f"done {name} {kind} {noise}", flush=True)
    return pd.DataFrame(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the full table (csv)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    table = run(args.seed)
    if args.out:
        table.to_csv(args.out, index=False)
    pd.set_option("display.width", 160)
    metrics = ["auc", "precision_at_true", "clean_accuracy", "fits", "seconds"]
    print("\nMean over the grid")
    print(table.groupby("method")[metrics].mean().sort_values("auc").round(4))
    print("\nMean AUC by data set")
    print(table.pivot_table("auc", "data", "method").round(4))
    print("\nMean AUC by noise kind and rate")
    print(table.pivot_table("auc", ["kind", "noise"], "method").round(4))
    print("\nEstimated / true number of flipped labels")
    counts = table.dropna(subset=["count_ratio"])
    print(counts.pivot_table("count_ratio", ["data"], ["method", "kind"]).round(2))
    print(counts.groupby("method")["count_ratio"].describe().round(2))


if __name__ == "__main__":
    main()
