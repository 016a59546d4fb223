"""Notebook views of a fitted filter: a table of suspects and a figure."""

import math

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from .._evaluation._detection import detection_curve, mislabel_detection_auc
from .._validation import to_numpy


def _fitted_filter(fitted):
    """The fitted MislabelFilter of a filter or of a FilteredEstimator."""
    fitted = getattr(fitted, "filter_", fitted)
    check_is_fitted(fitted, ["scores_", "mask_"])
    return fitted


def suspects(fitted, y=None, n=20):
    """The most suspicious rows of a fitted filter, as a DataFrame.

    Parameters
    ----------
    fitted : MislabelFilter or FilteredEstimator
        Fitted on ``(X, y)``.
    y : array-like or Series of shape (n_samples,), default=None
        Labels to show instead of those the filter was fitted with (e.g.
        decoded class names), matched by position.
    n : int or None, default=20
        Rows to return, most suspicious first; ``None`` returns all.

    Returns
    -------
    suspects : DataFrame
        Indexed like the filter's ``X``, sorted by decreasing score, with
        columns ``label`` (given), ``predicted`` (the model's prediction:
        out-of-fold when cross-fitted), ``score`` (higher = more
        suspicious), ``rank`` (1 = most suspicious) and ``is_issue``
        (whether the filter removed the row). ``attrs`` holds ``n_issues``,
        ``noise_rate`` and ``method``.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from dataval.datasets import load_mislabeled_digits
    >>> from dataval.filters import MislabelFilter, suspects
    >>> X, y, _ = load_mislabeled_digits(noise=0.1)
    >>> filt = MislabelFilter(estimator=LogisticRegression(C=0.1, max_iter=1000))
    >>> table = suspects(filt.fit(X[:300], y[:300]), n=5)
    >>> table.columns.tolist()
    ['label', 'predicted', 'score', 'rank', 'is_issue']
    """
    filt = _fitted_filter(fitted)
    labels = filt.labels_.to_numpy() if y is None else to_numpy(y)
    if len(labels) != len(filt.scores_):
        raise ValueError(
            f"y has {len(labels)} rows but the filter was fitted on "
            f"{len(filt.scores_)}; pass the labels it was fitted with."
        )
    order = np.argsort(-filt.scores_.to_numpy(), kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(1, len(order) + 1)
    table = pd.DataFrame(
        {
            "label": labels,
            "predicted": filt.predictions_.to_numpy(),
            "score": filt.scores_.to_numpy(),
            "rank": rank,
            "is_issue": ~np.asarray(filt.mask_),
        },
        index=filt.scores_.index,
    ).iloc[order]
    table.attrs.update(
        n_issues=int(filt.n_issues_),
        noise_rate=float(filt.noise_rate_),
        method=filt.method_,
    )
    return table if n is None else table.head(n)


def _image_shape(X, image_shape):
    if image_shape is not None:
        return tuple(image_shape)
    shape = np.shape(X)[1:]
    if len(shape) >= 2:
        return shape
    side = math.isqrt(shape[0]) if len(shape) == 1 else 0
    return (side, side) if side > 1 and side * side == shape[0] else None


def plot_suspects(fitted, X, y, is_mislabeled=None, n=10, image_shape=None):
    """Figure of a fitted filter: its ranking and the most suspicious images.

    Needs matplotlib (``pip install "dataval[plot]"``).

    Parameters
    ----------
    fitted : MislabelFilter or FilteredEstimator
        Fitted on ``(X, y)``.
    X : array-like of shape (n_samples, ...)
        The rows the filter was fitted on.
    y : array-like of shape (n_samples,)
        Their (given) labels.
    is_mislabeled : array-like of bool of shape (n_samples,), default=None
        Known wrong labels (e.g. from :func:`dataval.datasets.flip_labels`).
        When given, the left panel is the detection curve (fraction of wrong
        labels found against fraction of rows inspected) with its AUC;
        otherwise it shows the sorted scores and where the filter cut.
    n : int, default=10
        Number of suspicious images to show (0 for none).
    image_shape : tuple of int, default=None
        Shape of one image, e.g. ``(8, 8)``. ``None`` infers it from ``X``
        (rows of a square number of features, or 3-d/4-d arrays); data that
        are not images get no image panel.

    Returns
    -------
    figure : matplotlib.figure.Figure
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            "plot_suspects needs matplotlib; install it with "
            "pip install 'dataval[plot]' (or pip install matplotlib)."
        ) from error
    filt = _fitted_filter(fitted)
    table = suspects(filt, y, n=None)
    shape = _image_shape(X, image_shape) if n else None
    n_images = min(n, len(table)) if shape is not None else 0
    columns = math.ceil(n_images / 2)
    figure = plt.figure(figsize=(4 + 1.3 * columns, 3.6), layout="constrained")
    grid = figure.add_gridspec(2, 3 + columns)
    _plot_ranking(figure.add_subplot(grid[:, :3]), filt, is_mislabeled)
    images = np.asarray(to_numpy(X))
    positions = filt.scores_.index.get_indexer(table.index[:n_images])
    for k, position in enumerate(positions):
        ax = figure.add_subplot(grid[k % 2, 3 + k // 2])
        ax.imshow(images[position].reshape(shape), cmap="gray_r")
        row = table.iloc[k]
        ax.set_title(f"{row['label']} → {row['predicted']}", fontsize=9)
        ax.set_axis_off()
    return figure


def _plot_ranking(ax, filt, is_mislabeled):
    fraction_removed = 1 - np.mean(filt.mask_)
    if is_mislabeled is None:
        scores = np.sort(filt.scores_.to_numpy())[::-1]
        ax.plot(np.arange(1, len(scores) + 1) / len(scores), scores)
        ax.set_ylabel(f"score ({filt.scores_.name})")
    else:
        flags = np.asarray(is_mislabeled, dtype=bool)
        curve = detection_curve(filt.scores_.to_numpy(), flags)
        auc = mislabel_detection_auc(filt.scores_.to_numpy(), flags)
        ax.plot(curve["fraction_inspected"], curve["fraction_found"], label="filter")
        ax.plot([0, 1], [0, 1], linestyle=":", color="gray", label="random")
        ax.set_ylabel("fraction of wrong labels found")
        ax.set_title(f"ROC AUC {auc:.3f}", fontsize=10)
        ax.legend(loc="lower right")
    ax.axvline(fraction_removed, color="red", linestyle="--", linewidth=1)
    ax.set_xlabel("fraction of rows inspected (red: removed)")
