"""Notebook views of a fitted filter: a table of suspects and a figure."""

import math

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from .._evaluation._plots import plot_detection_curve, pyplot
from .._validation import row_index, to_numpy


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


def _table_and_rows(fitted, X):
    """The suspects table (all rows) and the rows it describes (or None)."""
    if isinstance(fitted, pd.DataFrame):
        return fitted.sort_values("rank"), X
    filt = _fitted_filter(fitted)
    return suspects(filt, n=None), getattr(filt, "_X_seen", None) if X is None else X


def plot_suspects(fitted, X=None, *, is_mislabeled=None, n=10, image_shape=None):
    """Figure of a label audit: the ranking and the most suspicious rows.

    Needs matplotlib (``pip install "dataval[plot]"``). Left: the detection
    curve against its random and perfect baselines when the wrong labels are
    known, else the sorted scores with the cut. Right, for images: the ``n``
    most suspicious images in rank order, each titled with its row id, rank,
    given → predicted label and score; for other data: a bar chart of their
    scores labelled the same way (flagged rows in red).

    Parameters
    ----------
    fitted : MislabelFilter, FilteredEstimator or DataFrame
        A fitted filter, or the result of :func:`find_label_issues`.
    X : array-like of shape (n_samples, ...), default=None
        The rows scored; ``None`` uses those the filter saw in ``fit`` (a
        DataFrame result needs ``X`` for images).
    is_mislabeled : array-like of bool of shape (n_samples,), default=None
        Known wrong labels (e.g. from :func:`dataval.datasets.flip_labels`),
        in the order of ``X``, or a Series on its index.
    n : int, default=10
        Rows to show (0 for the ranking panel only).
    image_shape : tuple of int, default=None
        Shape of one image, e.g. ``(8, 8)``. ``None`` infers it from ``X``
        (rows of a square number of features, or 3-d/4-d arrays); other data
        are drawn as a bar chart.

    Returns
    -------
    figure : matplotlib.figure.Figure

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn.linear_model import LogisticRegression
    >>> from dataval.datasets import load_mislabeled_digits
    >>> from dataval.filters import MislabelFilter, plot_suspects
    >>> X, y, is_flipped = load_mislabeled_digits(noise=0.1)
    >>> filt = MislabelFilter(estimator=LogisticRegression(C=0.1, max_iter=1000))
    >>> figure = plot_suspects(filt.fit(X[:300], y[:300]), n=6,
    ...                        is_mislabeled=is_flipped[:300])
    >>> len(figure.axes)
    7
    """
    plt = pyplot("plot_suspects")
    table, rows = _table_and_rows(fitted, X)
    top = table.head(n)
    shape = _image_shape(rows, image_shape) if n and rows is not None else None
    columns = min(5, len(top)) if shape is not None else 0
    lines = math.ceil(len(top) / columns) if columns else 1
    width = 4.4 + (1.6 * columns if columns else 4.6 if n else 0)
    figure = plt.figure(figsize=(width, max(3.6, 1.9 * lines)), layout="constrained")
    grid = figure.add_gridspec(lines, 3 + max(columns, 3 if n else 0))
    _plot_ranking(figure.add_subplot(grid[:, :3]), table, is_mislabeled)
    if shape is not None:
        positions = row_index(rows).get_indexer(top.index)
        images = np.asarray(to_numpy(rows))
        for k, (row_id, row) in enumerate(top.iterrows()):
            ax = figure.add_subplot(grid[k // columns, 3 + k % columns])
            ax.imshow(images[positions[k]].reshape(shape), cmap="gray_r")
            ax.set_title(
                f"id {row_id} · #{row['rank']}\n{row['label']} → {row['predicted']}"
                f"  ({row['score']:.3g})",
                fontsize=8,
                color="tab:red" if row["is_issue"] else "black",
            )
            ax.set_axis_off()
    elif n:
        _plot_top_scores(figure.add_subplot(grid[:, 3:]), top)
    return figure


def _plot_ranking(ax, table, is_mislabeled):
    scores = table.sort_index()["score"] if is_mislabeled is not None else None
    n_issues = int(table["is_issue"].sum())
    if is_mislabeled is None:
        ranked = table["score"].to_numpy()
        ax.plot(np.arange(1, len(ranked) + 1), ranked)
        ax.axvline(n_issues + 0.5, color="tab:red", linestyle="--", linewidth=1)
        ax.set_xlabel(f"rank (red: the {n_issues} flagged)")
        ax.set_ylabel("score (higher = more suspicious)")
        ax.set_xscale("log")
        ax.set_title("scores by rank", fontsize=10)
        return
    flags = is_mislabeled
    if isinstance(flags, pd.Series):
        flags = flags.reindex(scores.index)
    plot_detection_curve(
        scores.to_numpy(), np.asarray(flags, dtype=bool), ax=ax, label="audit"
    )
    ax.axvline(n_issues / len(table), color="tab:red", linestyle="--", linewidth=1)
    ax.set_title("wrong labels found vs rows inspected (red: flagged)", fontsize=9)


def _plot_top_scores(ax, top):
    labels = [
        f"{row_id}: {row['label']} → {row['predicted']}"
        for row_id, row in top.iterrows()
    ]
    positions = np.arange(len(top))
    colors = np.where(top["is_issue"], "tab:red", "tab:gray")
    ax.barh(positions, top["score"], color=colors)
    ax.set_yticks(positions, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("score (red: flagged)")
    ax.set_title(f"top {len(top)} suspects: id: given → predicted", fontsize=9)
