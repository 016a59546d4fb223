"""How many labels are wrong, and which rows to drop.

The count is the confident joint of given and likely labels, after the
confident learning of Northcutt et al. (2021, the method behind cleanlab):
with held-out class probabilities ``P`` (n, K),

1. each class ``k`` gets a threshold ``t_k``: the mean ``P[:, k]`` over the
   rows labelled ``k`` (how confident the model is on its own class);
2. a row's *likely* class is the most probable of the classes whose
   probability reaches their threshold (rows reaching none are not counted);
3. the confident joint ``C[given, likely]`` counts rows by both;
4. the estimated number of wrong labels is the sum off the diagonal
   (cleanlab's ``num_label_issues`` default).

The joint is not calibrated (rescaled so that each given class's row sums to
its size): calibration also counts in proportion the rows that reach no
threshold, and over a grid of six data sets x 2-20 % uniform and
class-conditional flips (``benchmarks/label_detection.py``'s settings) it
put 27 of 48 estimates within 1.5 times the true count, against 41 of 48
without. Ambiguous rows of overlapping classes make both over-count.

Held-out probabilities matter: a model scoring the rows it was trained on has
memorized part of the noise and under-counts it.
"""

import numpy as np

from ._scores import is_classification, residuals

# threshold of a class never seen in the given labels: above any probability
_UNREACHABLE = 2.0
# |residual - median| above this many robust standard deviations is an outlier
_OUTLIER_Z = 3.5
# median absolute deviation -> standard deviation of a normal distribution
_MAD_TO_STD = 1.4826


def confident_joint(codes, proba):
    """The confident joint ``C[given, likely]``: counts of rows, int (K, K).

    ``codes`` are the given labels as column positions of ``proba`` (n,);
    ``proba`` holds held-out class probabilities (n, K). Rows whose
    probabilities reach no class's threshold are not counted.
    """
    n_classes = proba.shape[1]
    counts = np.bincount(codes, minlength=n_classes)
    thresholds = np.array(
        [
            proba[codes == k, k].mean() if counts[k] else _UNREACHABLE
            for k in range(n_classes)
        ]
    )
    reached = proba >= thresholds  # (n, K)
    likely = np.where(reached, proba, -1.0).argmax(1)
    counted = reached.any(1)
    joint = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(joint, (codes[counted], likely[counted]), 1)
    return joint


def estimate_n_issues(codes, proba):
    """Estimated number of wrong labels: the confident joint off its diagonal."""
    joint = confident_joint(codes, proba)
    return int(joint.sum() - np.trace(joint))


def estimate_from_predictions(labels, predicted, proba, classes):
    """Estimated number of wrong ``labels`` (n,) from a model's predictions.

    Class labels: the confident joint of ``proba`` (n, K), whose columns are
    ``classes``; other targets: the rows whose residual ``predicted - labels``
    is an outlier.
    """
    if not is_classification(labels):
        return count_outliers(residuals(predicted, labels))
    return estimate_n_issues(np.searchsorted(classes, labels), proba)


def count_outliers(residuals):
    """Rows with an outlying residual: beyond 3.5 robust standard deviations.

    The regression counterpart of the confident joint. ``residuals`` (n,) or
    (n, n_outputs); a row counts when any output is an outlier. The spread is
    the median absolute deviation, which a minority of corrupted targets
    barely moves.
    """
    residuals = np.asarray(residuals, dtype=np.float64).reshape(len(residuals), -1)
    deviation = np.abs(residuals - np.median(residuals, axis=0))  # (n, outputs)
    spread = _MAD_TO_STD * np.median(deviation, axis=0)  # (outputs,)
    outlying = deviation > _OUTLIER_Z * spread
    return int(outlying.any(1).sum())


def keep_mask(scores, labels, n_issues, threshold=None):
    """Rows kept, bool (n,): all but the ``n_issues`` highest ``scores``.

    With a ``threshold``, all but the scores above it. For class labels, a
    class never loses all its rows: its least suspicious row is kept.
    """
    if threshold is not None:
        remove = scores > threshold
    else:
        order = np.argsort(-scores, kind="stable")
        remove = np.zeros(len(scores), dtype=bool)
        remove[order[:n_issues]] = True
    if is_classification(labels):
        for label in np.unique(labels):
            rows = np.flatnonzero(labels == label)
            if remove[rows].all():
                remove[rows[np.argmin(scores[rows])]] = False
    return ~remove
