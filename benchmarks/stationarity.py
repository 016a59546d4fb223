"""Stationarity of the rebuilt objective: converged fits against broken ones.

dataval rebuilds a scikit-learn model's training objective
``R = (1/n) sum_j w_j loss_j + L2 term`` and warns at ``fit`` when the
fitted parameters are not at its minimum: when ``max |grad R|`` exceeds
``STATIONARITY_TOLERANCE`` times the mean per-row gradient ``|w_j g_j|``.
This script prints that figure for fits that are at the minimum (tight
tolerances; scikit-learn's default tolerances) and for fits that are not
(``sample_weight`` used in the model's fit but not given to dataval, a
solver stopped after a few iterations), so that the tolerance sits between
them, and the Pearson correlation of ``ExactInfluence`` with leave-one-out
retraining (tight refits) for a logistic regression stopped at each point.

Run from the repository root::

    PYTHONPATH=. python benchmarks/stationarity.py
"""

import warnings

import numpy as np
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_digits, load_iris
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.preprocessing import StandardScaler

from dataval import ExactInfluence
from dataval._adapters import adapt_model
from dataval._objective import STATIONARITY_TOLERANCE, stationarity
from dataval.metrics import loo_influence

TIGHT = dict(tol=1e-12, max_iter=10_000)


def measured(model, X, y, weights=None):
    adapted = adapt_model(model, "auto", X, y)
    X_t, y_t = adapted.prepare_X(X), adapted.prepare_y(y)
    return stationarity(adapted, X_t, y_t, weights, 256)


def main():
    warnings.simplefilter("ignore")
    X_iris, y_iris = load_iris(return_X_y=True)
    X_iris = StandardScaler().fit_transform(X_iris)
    X_bc, y_bc = load_breast_cancer(return_X_y=True)
    X_bc = StandardScaler().fit_transform(X_bc)
    X_digits, y_digits = load_digits(return_X_y=True)
    X_digits = X_digits / 16
    rng = np.random.RandomState(0)
    X_reg = rng.randn(50, 3)
    y_reg = X_reg @ [1.0, -2.0, 0.5] + 0.1 * rng.randn(50)
    weights = rng.uniform(0.2, 3.0, len(y_bc))
    mlp = dict(solver="lbfgs", random_state=0, **TIGHT)

    at_minimum = {
        "LogisticRegression tight, iris": (LogisticRegression(**TIGHT), X_iris, y_iris),
        "LogisticRegression default, iris": (LogisticRegression(), X_iris, y_iris),
        "LogisticRegression default, breast cancer": (LogisticRegression(), X_bc, y_bc),
        "LogisticRegression max_iter=1000, digits": (
            LogisticRegression(max_iter=1000),
            X_digits,
            y_digits,
        ),
        "Ridge solver='sag' default tol, breast cancer": (
            Ridge(solver="sag", random_state=0),
            X_bc,
            y_bc.astype(float),
        ),
        "MLPClassifier (5,) alpha=1 lbfgs tight, iris": (
            MLPClassifier(hidden_layer_sizes=(5,), activation="tanh", alpha=1.0, **mlp),
            X_iris,
            y_iris,
        ),
        "MLPRegressor (4,) alpha=10 lbfgs tight": (
            MLPRegressor(hidden_layer_sizes=(4,), activation="tanh", alpha=10.0, **mlp),
            X_reg,
            y_reg,
        ),
        "MLPRegressor (4,) alpha=1 relu lbfgs tight": (
            MLPRegressor(hidden_layer_sizes=(4,), activation="relu", alpha=1.0, **mlp),
            X_reg,
            y_reg,
        ),
    }
    print(f"STATIONARITY_TOLERANCE = {STATIONARITY_TOLERANCE:g}\n")
    print("fits that should pass")
    for name, (model, X, y) in at_minimum.items():
        print(f"  {measured(model.fit(X, y), X, y):9.2e}  {name}")

    print("fits that should warn")
    for name, model in {
        "LogisticRegression": LogisticRegression(**TIGHT),
        "Ridge": Ridge(alpha=10.0),
    }.items():
        y = y_bc.astype(float) if name == "Ridge" else y_bc
        model.fit(X_bc, y, sample_weight=weights)
        print(
            f"  {measured(model, X_bc, y):9.2e}  {name} fitted with sample_weight, "
            f"not given (given: {measured(model, X_bc, y, weights):.2e})"
        )
    for max_iter in (5, 10, 20):
        model = LogisticRegression(max_iter=max_iter).fit(X_digits, y_digits)
        print(
            f"  {measured(model, X_digits, y_digits):9.2e}  LogisticRegression "
            f"max_iter={max_iter}, digits"
        )
    model = MLPClassifier(random_state=0).fit(X_iris, y_iris)
    print(
        f"  {measured(model, X_iris, y_iris):9.2e}  MLPClassifier default (adam), iris"
    )

    print("\nExactInfluence against leave-one-out retraining (tight refits)")
    X, y = X_bc[:300], y_bc[:300]
    X_train, y_train, X_test, y_test = X[:240], y[:240], X[240:], y[240:]
    rows = np.random.RandomState(1).choice(240, 30, replace=False)
    tight = LogisticRegression(**TIGHT)
    loo = loo_influence(tight, X_train, y_train, X_test, y_test, indices=rows)
    loo = loo.to_numpy().ravel()
    for settings in [TIGHT, {}, dict(max_iter=10), dict(max_iter=5)]:
        model = LogisticRegression(**settings).fit(X_train, y_train)
        scores = ExactInfluence(damping=0).fit(model, X_train, y_train)
        scores = scores.score(X_test, y_test).iloc[:, rows].to_numpy().ravel()
        print(
            f"  stationarity {measured(model, X_train, y_train):9.2e}  Pearson "
            f"{np.corrcoef(scores, loo)[0, 1]:.3f}  LogisticRegression({settings})"
        )
    model = LogisticRegression(**TIGHT).fit(
        X_train, y_train, sample_weight=weights[:240]
    )
    reference = _weighted_loo(
        model, weights[:240], X_train, y_train, X_test, y_test, rows
    )
    for given in (False, True):
        w = weights[:240] if given else None
        scores = ExactInfluence(damping=0).fit(model, X_train, y_train, sample_weight=w)
        scores = scores.score(X_test, y_test).iloc[:, rows].to_numpy().ravel()
        print(
            f"  stationarity {measured(model, X_train, y_train, w):9.2e}  Pearson "
            f"{np.corrcoef(scores, reference)[0, 1]:.3f}  weighted fit, "
            f"sample_weight {'given' if given else 'not given'}"
        )


def _weighted_loo(model, weights, X, y, X_test, y_test, rows):
    """Leave-one-out of a weighted classifier: refit without row j."""

    def losses(keep):
        refit = clone(model).fit(X[keep], y[keep], sample_weight=weights[keep])
        p = refit.predict_proba(X_test)[np.arange(len(y_test)), y_test]
        return -np.log(p)

    everything = np.arange(len(y))
    full = losses(everything)
    return np.stack([losses(np.delete(everything, j)) - full for j in rows], 1).ravel()


if __name__ == "__main__":
    main()
