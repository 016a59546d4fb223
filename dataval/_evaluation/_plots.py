"""Figures of evaluation results: detection curves and estimator comparisons."""

import numpy as np

from ._detection import detection_curve, mislabel_detection_auc

_BASELINE_GID = "dataval-baseline"


def pyplot(caller):
    """matplotlib.pyplot, or an ImportError that says how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            f"{caller} needs matplotlib; install it with "
            "pip install 'dataval[plot]' (or pip install matplotlib)."
        ) from error
    return plt


def plot_detection_curve(scores, is_mislabeled, *, ax=None, label="ranking"):
    """Draw the detection curve of a ranking with its random and perfect baselines.

    Needs matplotlib (``pip install "dataval[plot]"``). Call it again with the
    same ``ax`` to compare rankings; the baselines are drawn once.

    Parameters
    ----------
    scores : Series or array-like of shape (n_train,)
        Suspicion of each training row, higher = more likely mislabeled.
    is_mislabeled : Series or array-like of bool of shape (n_train,)
        True for the rows whose label is wrong.
    ax : matplotlib Axes, default=None
        Where to draw; ``None`` makes a new figure.
    label : str, default="ranking"
        Legend entry of the curve; its ROC AUC is appended.

    Returns
    -------
    ax : matplotlib Axes

    See Also
    --------
    detection_curve : The curve as a DataFrame.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from dataval.metrics import plot_detection_curve
    >>> ax = plot_detection_curve([0.9, 0.1, 0.8, 0.3], [True, False, False, True])
    >>> [line.get_label() for line in ax.get_lines()]
    ['random', 'perfect', 'ranking (AUC 0.750)']
    """
    plt = pyplot("plot_detection_curve")
    curve = detection_curve(scores, is_mislabeled)
    auc = mislabel_detection_auc(scores, is_mislabeled)
    if ax is None:
        ax = plt.figure(figsize=(4.5, 4), layout="constrained").add_subplot()
    if not any(line.get_gid() == _BASELINE_GID for line in ax.get_lines()):
        rate = float(np.mean(np.asarray(is_mislabeled, dtype=bool)))
        ax.plot([0, 1], [0, 1], ":", color="gray", label="random", gid=_BASELINE_GID)
        ax.plot(
            [0, rate, 1],
            [0, 1, 1],
            "--",
            color="black",
            linewidth=0.8,
            label="perfect",
            gid=_BASELINE_GID,
        )
        ax.set_xlabel("fraction of rows inspected (most suspicious first)")
        ax.set_ylabel("fraction of wrong labels found")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
    ax.plot(
        curve["fraction_inspected"],
        curve["fraction_found"],
        label=f"{label} (AUC {auc:.3f})",
    )
    ax.legend(loc="lower right", fontsize=8)
    return ax


def plot_comparison(results, *, metrics=None, time="fit_time"):
    """Bar chart of a :func:`compare_estimators` result, with error bars over folds.

    Needs matplotlib (``pip install "dataval[plot]"``). One panel per metric
    (mean over folds, the bar's line one standard deviation each way) and a
    last panel with the seconds per fold.

    Parameters
    ----------
    results : DataFrame
        The tidy result of :func:`~dataval.model_selection.compare_estimators`.
    metrics : list of str, default=None
        Metrics to show, in order; ``None`` shows every metric present.
    time : {"fit_time", "score_time", None}, default="fit_time"
        Which seconds the last panel shows; ``None`` leaves it out.

    Returns
    -------
    figure : matplotlib Figure

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import pandas as pd
    >>> from dataval.model_selection import plot_comparison
    >>> results = pd.DataFrame({
    ...     "estimator": ["exact", "exact", "tracin", "tracin"],
    ...     "fold": [0, 1, 0, 1], "metric": "lds", "value": [0.9, 0.8, 0.5, 0.4],
    ...     "fit_time": [0.1, 0.1, 0.02, 0.03], "score_time": 0.01})
    >>> len(plot_comparison(results).axes)
    2
    """
    plt = pyplot("plot_comparison")
    missing = {"estimator", "fold", "metric", "value"} - set(results.columns)
    if missing:
        raise ValueError(
            f"results lacks the columns {sorted(missing)}; pass the DataFrame "
            "compare_estimators returned."
        )
    metrics = list(dict.fromkeys(results["metric"])) if metrics is None else metrics
    names = list(dict.fromkeys(results["estimator"]))
    panels = [(metric, results[results["metric"] == metric]) for metric in metrics]
    if time is not None:
        # "lds" and "loo" share one fit: one time per estimator and fold
        per_fold = results.drop_duplicates(["estimator", "fold"])
        panels.append((f"{time} (s)", per_fold.assign(value=per_fold[time])))
    figure, axes = plt.subplots(
        1,
        len(panels),
        figsize=(2.2 + 2.6 * len(panels), 0.9 + 0.35 * len(names)),
        layout="constrained",
        sharey=True,
        squeeze=False,
    )
    positions = np.arange(len(names))
    for ax, (title, rows) in zip(axes[0], panels):
        summary = rows.groupby("estimator")["value"].agg(["mean", "std"])
        summary = summary.reindex(names)
        ax.barh(
            positions,
            summary["mean"],
            xerr=summary["std"].fillna(0),
            color="tab:blue",
            alpha=0.8,
            capsize=3,
        )
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(positions, names)
    axes[0][0].invert_yaxis()
    n_folds = results["fold"].nunique()
    figure.suptitle(f"mean ± std over {n_folds} folds", fontsize=9)
    return figure
