"""One split of ``compare_estimators``: every estimator measured on one fold.

The fold's model is refitted on the training rows (by :class:`Retrainer` when
dataval reads its gradients, so that influence estimators and the ground truth
see the same model); the held-out rows are the test rows of every metric.
"""

from time import perf_counter

import numpy as np

from .._valuation._base import BaseValuation, seeded_clone
from .._valuation._knn import fit_valuation
from .._valuation._oob import DataOOB
from ..datasets import flip_labels
from ._detection import mislabel_detection_auc
from ._ground_truth import lds_per_test, loo_losses, subset_losses
from ._removal import point_removal_curve
from ._retrain import Retrainer, model_for_estimators, take_rows


def _timed(function, *args):
    start = perf_counter()
    result = function(*args)
    return result, perf_counter() - start


def _values(fitted, X_test, y_test):
    """Training-row values, higher = more valuable (Data-OOB needs no test rows)."""
    if isinstance(fitted, DataOOB):
        return fitted.value()
    return fitted.value(X_test, y_test)


def _reraise_with_key(error, name, fold):
    """Raise ``error`` again, its message naming the estimator and the fold."""
    message = f"estimators[{name!r}] failed on fold {fold}: {error}"
    try:
        renamed = type(error)(message)
    except Exception:  # an exception type that needs other arguments
        renamed = RuntimeError(f"{message} ({type(error).__name__})")
    raise renamed from error


def _failure_message(name, fold, error, error_score):
    return (
        f"estimators[{name!r}] failed on fold {fold} and its results were set to "
        f"error_score={error_score!r}: {type(error).__name__}: {error}"
    )


def _pearson(a, b):
    a, b = a - a.mean(), b - b.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        return float((a @ b) / np.sqrt((a @ a) * (b @ b)))


class Fold:
    """One split: retrains the model and measures every estimator on it."""

    def __init__(self, fold, train, test, model, X, y, settings, seed):
        self.fold = fold
        self.model = model
        self.settings = settings
        self.seed = seed
        self.rng = np.random.RandomState(seed)
        n_test = settings["n_test"]
        if n_test is not None and len(test) > n_test:
            test = np.sort(self.rng.choice(test, size=n_test, replace=False))
        self.X_train, self.y_train = take_rows(X, train), take_rows(y, train)
        self.X_test, self.y_test = take_rows(X, test), take_rows(y, test)

    def _record(self, name, metric, value, fit_time, score_time):
        if self.settings["verbose"]:
            print(
                f"[fold {self.fold}] {name:>16} {metric:>12} = {value:8.4f}  "
                f"(fit {fit_time:.2f} s, score {score_time:.2f} s)"
            )
        return dict(
            estimator=name,
            fold=self.fold,
            metric=metric,
            value=value,
            fit_time=fit_time,
            score_time=score_time,
        )

    def _measure(self, name, metrics, evaluate, estimator):
        """Records of ``evaluate(estimator)`` -> ``({metric: value}, fit, score time)``.

        A failing estimator gets ``error_score`` for every metric (or the
        error is raised again, naming it, when ``error_score="raise"``).
        """
        error_score = self.settings["error_score"]
        try:
            values, fit_time, score_time = evaluate(estimator)
        except Exception as error:
            if error_score == "raise":
                _reraise_with_key(error, name, self.fold)
            failure = _failure_message(name, self.fold, error, error_score)
            return [
                {**self._record(name, m, error_score, np.nan, np.nan), "error": failure}
                for m in metrics
            ]
        return [self._record(name, m, values[m], fit_time, score_time) for m in metrics]

    def run(self, estimators, scoring):
        """Records (dicts) of every estimator on every metric of ``scoring``."""
        records = []
        clean = [metric for metric in scoring if metric in ("lds", "loo")]
        if clean:
            records += self._clean_metrics(estimators, clean)
        if "mislabel_auc" in scoring:
            records += self._mislabel_auc(estimators)
        if "removal" in scoring:
            records += self._removal(estimators)
        return records

    def _clean_metrics(self, estimators, metrics):
        """LDS and LOO agreement of each estimator's scores on the test rows."""
        s = self.settings
        retrainer = Retrainer(
            self.model, self.X_train, self.y_train, random_state=self.seed
        )
        X_test, y_test = self.X_test, self.y_test
        measure = {}
        if "lds" in metrics:
            masks, measured = subset_losses(
                retrainer, s["n_subsets"], s["frac"], X_test, y_test, self.rng
            )
            measure["lds"] = lambda tau: float(
                np.nanmean(lds_per_test(tau, masks, measured))
            )
        if "loo" in metrics:
            n_train = len(retrainer.y)
            rows = self.rng.choice(
                n_train, size=min(s["n_loo"], n_train), replace=False
            )
            loo = loo_losses(retrainer, rows, X_test, y_test)
            measure["loo"] = lambda tau: _pearson(tau[:, rows].ravel(), loo.ravel())

        def evaluate(estimator):
            fitted, fit_time = _timed(
                seeded_clone(estimator, self.seed).fit,
                retrainer.full_,
                self.X_train,
                self.y_train,
            )
            scores, score_time = _timed(fitted.score, X_test, y_test)
            tau = scores.to_numpy(np.float64)
            values = {metric: measure[metric](tau) for metric in metrics}
            return values, fit_time, score_time

        records = []
        for name, estimator in estimators.items():
            if isinstance(estimator, BaseValuation):
                continue  # values of rows, not per-test-row influences
            records += self._measure(name, metrics, evaluate, estimator)
        return records

    def _mislabel_auc(self, estimators):
        """AUC for the labels flipped in the training fold of a refitted model."""
        s = self.settings
        y_noisy, flipped = flip_labels(
            self.y_train, frac=s["noise"], random_state=self.rng
        )
        model = model_for_estimators(self.model, self.X_train, y_noisy, self.seed)

        def evaluate(estimator):
            fitted, fit_time = self._fit_timed(estimator, model, y_noisy)
            if isinstance(fitted, BaseValuation):
                value, score_time = _timed(_values, fitted, self.X_test, self.y_test)
                suspicion = -value
            elif s["detection"] == "self_influence":
                suspicion, score_time = _timed(fitted.self_influence)
            else:
                value, score_time = _timed(fitted.value, self.X_test, self.y_test)
                suspicion = -value
            auc = mislabel_detection_auc(suspicion.to_numpy(), flipped)
            return {"mislabel_auc": auc}, fit_time, score_time

        records = []
        for name, estimator in estimators.items():
            records += self._measure(name, ["mislabel_auc"], evaluate, estimator)
        return records

    def _fit_timed(self, estimator, model, y):
        """``(fitted, seconds)``: a seeded clone of ``estimator`` fitted on the fold."""
        estimator = seeded_clone(estimator, self.seed)
        return _timed(fit_valuation, estimator, model, self.X_train, y)

    def _removal(self, estimators):
        """Mean held-out score along the point-removal curve of each estimator."""
        model = model_for_estimators(self.model, self.X_train, self.y_train, self.seed)
        metrics = ["removal_highest", "removal_lowest"]

        def evaluate(estimator):
            fitted, fit_time = self._fit_timed(estimator, model, self.y_train)
            values, score_time = _timed(_values, fitted, self.X_test, self.y_test)
            curve = point_removal_curve(
                values,
                self.model,
                self.X_train,
                self.y_train,
                self.X_test,
                self.y_test,
                fractions=self.settings["removal_fractions"],
                random_state=self.seed,
            )
            curve = curve[curve["fraction"] > 0]
            scores = {
                f"removal_{order}": float(
                    curve.loc[curve["order"] == order, "score"].mean()
                )
                for order in ("highest", "lowest")
            }
            return scores, fit_time, score_time

        records = []
        for name, estimator in estimators.items():
            records += self._measure(name, metrics, evaluate, estimator)
        return records
