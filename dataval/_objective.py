"""Per-row training weights, and a check that the model minimizes its objective.

With weights ``w`` (``sample_weight`` times any class weights) the training
objective every estimator describes is

    R(theta) = (1/n) sum_j w_j loss_j(theta) + regularizer(theta),

so the influence of row ``j`` is that of removing ``w_j loss_j``: its training
gradient enters the influence equation as ``w_j g_j`` and the curvature is the
weighted mean ``(1/n) sum_j w_j H_j`` plus the L2 term.

Influence functions assume ``theta`` minimizes ``R``. For a scikit-learn model
the objective is rebuilt from the model's settings, and nothing guarantees
that the fitted parameters minimize it (weights used in the model's ``fit``
but not given here, constraints, a solver stopped early): ``fit`` measures
its gradient and warns.
"""

import warnings

import numpy as np
import pandas as pd
import torch

from ._functional import FunctionalModel
from ._validation import to_numpy
from .exceptions import ObjectiveWarning

#: stationarity above which ``fit`` warns: ``max |grad R|`` over the mean
#: per-row ``|w_j g_j|``. Between what converged fits (also scikit-learn's
#: default tolerances) and fits whose weights were not given measure, see
#: benchmarks/stationarity.py
STATIONARITY_TOLERANCE = 3e-2


def check_sample_weight(sample_weight, n_rows):
    """``sample_weight`` as a float64 array of shape (n_rows,), or ``None``."""
    if sample_weight is None:
        return None
    if isinstance(sample_weight, (pd.Series, pd.DataFrame)):
        sample_weight = sample_weight.to_numpy()
    try:
        weights = np.asarray(to_numpy(sample_weight), dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            "sample_weight must be numbers, one per training row; got "
            f"{type(sample_weight).__name__} that is not numeric."
        ) from None
    if weights.ndim == 0:
        weights = np.full(n_rows, float(weights))
    if weights.shape != (n_rows,):
        raise ValueError(
            f"sample_weight must have shape ({n_rows},), one weight per row of X; "
            f"got shape {weights.shape}."
        )
    bad = np.flatnonzero(~np.isfinite(weights) | (weights < 0))
    if len(bad):
        raise ValueError(
            f"sample_weight must be finite and non-negative; rows (positions) "
            f"{bad[:10].tolist()} have {weights[bad[:10]].tolist()}."
        )
    if not weights.sum() > 0:
        raise ValueError(
            "sample_weight is zero for every row; at least one row must count."
        )
    return weights


def training_weights(adapted, y, sample_weight):
    """Per-row weights (n,) of the training objective, or ``None`` for all ones.

    ``y`` is the prepared target (class positions for scikit-learn
    classifiers); ``sample_weight`` a checked array or ``None``.
    """
    weights = sample_weight
    if adapted.class_weights is not None:
        weights = adapted.class_weights(y, sample_weight)
    if weights is None or np.all(weights == 1.0):
        return None
    return weights


def stationarity(adapted, X, y, weights, batch_size):
    """``max |grad R(theta)|`` over the mean ``|w_j g_j|``, in float64 on the CPU.

    Zero at an exact minimum of the objective ``R`` the estimators describe;
    the scale makes it independent of the loss's units and of ``n``.
    """
    model = FunctionalModel(adapted, torch.device("cpu"), torch.float64)
    total = torch.zeros_like(model.theta)
    size = 0.0
    for start in range(0, len(X), batch_size):
        X_b, y_b = model.prepare(
            X[start : start + batch_size], y[start : start + batch_size]
        )
        G = model.per_sample_grads(X_b, y_b)  # (b, p)
        if weights is not None:
            G = G * torch.as_tensor(weights[start : start + batch_size])[:, None]
        total += G.sum(0)
        size += float(G.abs().sum())
    gradient = total / len(X) + model.l2 * model.theta  # (p,)
    scale = size / (len(X) * model.n_params)
    return float(gradient.abs().max()) / scale if scale > 0 else 0.0


def warn_if_not_stationary(adapted, X, y, weights, batch_size, given_weights):
    """Warn, naming the likely causes, when ``theta`` does not minimize ``R``."""
    value = stationarity(adapted, X, y, weights, batch_size)
    if value <= STATIONARITY_TOLERANCE:
        return value
    causes = []
    if not given_weights:
        causes.append(
            "the model was fitted with sample_weight, which must be passed to fit "
            "too: fit(model, X, y, sample_weight=w)"
        )
    causes += [
        "X, y are not the data the model was fitted on",
        "the solver stopped before converging: refit the model with a larger "
        "max_iter and a smaller tol",
    ]
    warnings.warn(
        f"The fitted {adapted.description} is not at a minimum of its training "
        f"objective: the objective's gradient is {value:.2g} of the per-row "
        f"gradients' size (above {STATIONARITY_TOLERANCE:g}), so influence "
        "estimates (which assume a minimum) can be far from retraining. Likely "
        "causes: " + "; ".join(causes) + ".",
        ObjectiveWarning,
        stacklevel=4,
    )
    return value
