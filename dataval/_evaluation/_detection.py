"""How well a ranking of training rows finds the mislabeled ones."""

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from .._validation import to_numpy


def _check_detection_input(scores, is_mislabeled):
    """``scores`` (float64) and ``is_mislabeled`` (bool) as aligned 1-D arrays."""
    if isinstance(scores, pd.DataFrame):
        if scores.shape[1] != 1:
            raise ValueError(
                f"scores must be one score per training row (a Series or 1-D array), "
                f"got a DataFrame with {scores.shape[1]} columns; pass e.g. "
                "estimator.self_influence() or -estimator.value(X_val, y_val)."
            )
        scores = scores.iloc[:, 0]
    if isinstance(scores, pd.Series) and isinstance(is_mislabeled, pd.Series):
        missing = scores.index.difference(is_mislabeled.index)
        if len(missing):
            raise ValueError(
                f"is_mislabeled has no entry for {len(missing)} rows of scores "
                f"(e.g. {missing[:5].tolist()}); both Series must share their index."
            )
        is_mislabeled = is_mislabeled.loc[scores.index]
    values = np.asarray(to_numpy(scores), dtype=np.float64)
    flags = np.asarray(to_numpy(is_mislabeled))
    if values.ndim != 1 or flags.ndim != 1:
        raise ValueError(
            f"scores and is_mislabeled must be 1-D, got shapes {values.shape} and "
            f"{flags.shape}."
        )
    if len(values) != len(flags):
        raise ValueError(
            f"scores has {len(values)} rows but is_mislabeled has {len(flags)}; "
            "they must describe the same training rows."
        )
    if len(values) == 0:
        raise ValueError("scores and is_mislabeled are empty.")
    if not np.isfinite(values).all():
        raise ValueError(
            "scores contains NaN or infinity; every row needs a finite score."
        )
    if flags.dtype != bool and not np.isin(flags, (0, 1)).all():
        raise ValueError(
            "is_mislabeled must be boolean (True for a wrong label), got values "
            f"{np.unique(flags)[:5].tolist()}."
        )
    flags = flags.astype(bool)
    if not flags.any():
        raise ValueError(
            "is_mislabeled marks no row as mislabeled; detection needs at least one."
        )
    return values, flags


def detection_curve(scores, is_mislabeled):
    """Fraction of mislabeled rows found against the fraction of rows inspected.

    Rows are inspected from the most suspicious (highest score) down. Rows
    with tied scores are inspected together, so the curve has one point per
    distinct score and is the expected curve under random tie-breaking when
    drawn with straight lines.

    Parameters
    ----------
    scores : Series or array-like of shape (n_train,)
        Suspicion of each training row: higher = more likely mislabeled, e.g.
        ``estimator.self_influence()`` or ``-estimator.value(X_val, y_val)``.
    is_mislabeled : Series or array-like of bool of shape (n_train,)
        True for the rows whose label is wrong. When both arguments are
        Series they are aligned on the index, else matched by position.

    Returns
    -------
    curve : DataFrame
        One row per inspection threshold, starting at ``(0, 0)`` and ending
        at ``(1, 1)``, with columns ``fraction_inspected`` (share of all rows
        inspected so far), ``fraction_found`` (share of the mislabeled rows
        among them) and ``threshold`` (the lowest score inspected; ``inf``
        on the first row). Random inspection follows the diagonal.

    See Also
    --------
    mislabel_detection_auc : ROC AUC of the same ranking.

    Examples
    --------
    >>> from dataval.metrics import detection_curve
    >>> detection_curve([0.9, 0.1, 0.8, 0.3], [True, False, False, True])
       fraction_inspected  fraction_found  threshold
    0                0.00             0.0        inf
    1                0.25             0.5        0.9
    2                0.50             0.5        0.8
    3                0.75             1.0        0.3
    4                1.00             1.0        0.1
    """
    values, flags = _check_detection_input(scores, is_mislabeled)
    order = np.argsort(-values, kind="stable")
    values, flags = values[order], flags[order]
    # last position of each group of tied scores: a tie is inspected at once
    ends = np.r_[np.flatnonzero(np.diff(values)), len(values) - 1]
    found = np.cumsum(flags)[ends]
    return pd.DataFrame(
        {
            "fraction_inspected": np.r_[0, ends + 1] / len(values),
            "fraction_found": np.r_[0, found] / flags.sum(),
            "threshold": np.r_[np.inf, values[ends]],
        }
    )


def mislabel_detection_auc(scores, is_mislabeled):
    """ROC AUC of a suspicion score for finding mislabeled rows.

    The probability that a random mislabeled row scores higher than a random
    correctly labeled one (ties count one half): 1 is a perfect ranking, 0.5
    is chance.

    Parameters
    ----------
    scores : Series or array-like of shape (n_train,)
        Suspicion of each training row: higher = more likely mislabeled.
    is_mislabeled : Series or array-like of bool of shape (n_train,)
        True for the rows whose label is wrong; needs both kinds of rows.
        Aligned on the index when both arguments are Series.

    Returns
    -------
    auc : float

    See Also
    --------
    detection_curve : The fraction found as rows are inspected.

    Examples
    --------
    >>> from dataval.metrics import mislabel_detection_auc
    >>> mislabel_detection_auc([0.9, 0.1, 0.8, 0.3], [True, False, False, True])
    0.75
    """
    values, flags = _check_detection_input(scores, is_mislabeled)
    if flags.all():
        raise ValueError(
            "is_mislabeled marks every row as mislabeled; the AUC needs correctly "
            "labeled rows too."
        )
    return float(roc_auc_score(flags, values))
