"""One-call label audit: find_label_issues and label_report."""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._mislabel import MislabelFilter
from ._report import suspects


def find_label_issues(
    model,
    X,
    y,
    *,
    method="auto",
    frac="auto",
    cv=5,
    influence=None,
    random_state=None,
    verbose=0,
):
    """Rank every row by how likely its label is wrong, and flag the likely ones.

    One call of :class:`MislabelFilter`: scores every row, estimates how many
    labels are wrong (``frac="auto"``) and returns the rows as a table, most
    suspicious first. The model is never modified: refits use clones.

    Parameters
    ----------
    model : scikit-learn, skorch or torch model
        Fitted or not. A fitted one must have been trained on ``(X, y)``; it
        is used as it is for the in-sample scores. A scikit-learn
        ``Pipeline`` works; a plain ``torch.nn.Module`` is scored by
        self-influence, since it cannot be refitted on folds.
    X : array-like, DataFrame or tensor of shape (n_samples, ...)
    y : array-like or Series of shape (n_samples,)
        The labels to check.
    method : {"auto", "combined", "cross-fit", "loss", "self"}, default="auto"
        How rows are scored; see :class:`MislabelFilter`. ``"auto"`` sums
        each row's in-sample and cross-fitted losses (``cv + 1`` fits).
    frac : "auto" or float in [0, 1), default="auto"
        Fraction of rows flagged, or ``"auto"``: as many as the estimated
        number of wrong labels (from the confident joint of held-out class
        probabilities; see the user guide).
    cv : int, cross-validation generator or iterable, default=5
        Folds of the cross-fitting.
    influence : dataval estimator or None, default=None
        Self-influence estimator for ``method="self"``.
    random_state : int, RandomState instance or None, default=None
        Seed of a stochastic influence estimator.
    verbose : int, default=0
        1 shows one progress bar over the fits.

    Returns
    -------
    issues : DataFrame
        One row per row of ``X``, indexed like ``X`` (a RangeIndex for arrays)
        and sorted by decreasing suspicion, with columns ``label`` (given),
        ``predicted`` (out-of-fold when cross-fitted), ``score`` (higher =
        more suspicious), ``rank`` (1 = most suspicious) and ``is_issue``
        (the ``n_issues`` most suspicious rows). ``issues.attrs`` holds
        ``n_issues``, ``noise_rate`` and ``method``.

    See Also
    --------
    label_report : Noise rate, issues per class and confusions of the result.
    MislabelFilter : The same as a resampler that drops the flagged rows.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from dataval.datasets import load_mislabeled_digits
    >>> from dataval.filters import find_label_issues
    >>> X, y, is_flipped = load_mislabeled_digits(noise=0.1, as_frame=True)
    >>> X, y, is_flipped = X.iloc[:300], y.iloc[:300], is_flipped.iloc[:300]
    >>> issues = find_label_issues(LogisticRegression(C=0.1, max_iter=1000), X, y)
    >>> issues.columns.tolist()
    ['label', 'predicted', 'score', 'rank', 'is_issue']
    >>> int(issues["is_issue"].sum()) in range(20, 46)
    True
    >>> bool(is_flipped[issues.index[:20]].mean() > 0.8)
    True
    """
    filt = MislabelFilter(
        influence=influence,
        estimator=model,
        method=method,
        frac=frac,
        cv=cv,
        random_state=random_state,
        verbose=verbose,
    ).fit(X, y)
    return suspects(filt, n=None)


@dataclass(repr=False)
class LabelReport:
    """What :func:`label_report` returns: pandas objects a notebook renders.

    Attributes
    ----------
    summary : Series
        Rows, classes, estimated wrong labels and noise rate, scoring method.
    per_class : DataFrame
        Per given class: rows, flagged rows and their share.
    confusion : DataFrame
        Flagged rows counted by given label (index) and predicted label
        (columns): which classes are mixed up.
    top : DataFrame
        The most suspicious rows.
    """

    summary: pd.Series
    per_class: pd.DataFrame
    confusion: pd.DataFrame
    top: pd.DataFrame

    def _parts(self):
        return {
            "Summary": self.summary.to_frame("value"),
            "Issues per class": self.per_class,
            "Flagged rows: given x predicted": self.confusion,
            "Top suspects": self.top,
        }

    def __repr__(self):
        return "\n\n".join(
            f"{title}\n{frame.to_string()}" for title, frame in self._parts().items()
        )

    def _repr_html_(self):
        return "".join(
            f"<h4>{title}</h4>{frame.to_html()}"
            for title, frame in self._parts().items()
        )


def label_report(issues, n=10):
    """Summary of a label audit: noise rate, issues per class, confusions.

    Parameters
    ----------
    issues : DataFrame, MislabelFilter or FilteredEstimator
        The result of :func:`find_label_issues`, or a fitted filter.
    n : int, default=10
        Suspects listed in ``top``.

    Returns
    -------
    report : LabelReport
        ``summary`` (Series), ``per_class``, ``confusion`` and ``top``
        (DataFrames); renders as tables in a notebook.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from dataval.datasets import load_mislabeled_digits
    >>> from dataval.filters import find_label_issues, label_report
    >>> X, y, _ = load_mislabeled_digits(noise=0.1)
    >>> issues = find_label_issues(LogisticRegression(C=0.1, max_iter=1000),
    ...                            X[:300], y[:300])
    >>> report = label_report(issues, n=5)
    >>> report.per_class.columns.tolist()
    ['rows', 'issues', 'issue_rate']
    >>> len(report.top)
    5
    """
    if not isinstance(issues, pd.DataFrame):
        issues = suspects(issues, n=None)
    missing = {"label", "predicted", "score", "rank", "is_issue"} - set(issues)
    if missing:
        raise ValueError(
            f"issues lacks the columns {sorted(missing)}; pass the DataFrame "
            "find_label_issues returned, or a fitted MislabelFilter."
        )
    flagged = issues[issues["is_issue"]]
    per_class = issues.groupby("label")["is_issue"].agg(rows="size", issues="sum")
    per_class["issue_rate"] = per_class["issues"] / per_class["rows"]
    confusion = pd.crosstab(flagged["label"], flagged["predicted"]).rename_axis(
        index="given", columns="predicted"
    )
    summary = pd.Series(
        {
            "rows": len(issues),
            "classes": issues["label"].nunique(),
            "issues": int(issues["is_issue"].sum()),
            "noise_rate": float(np.mean(issues["is_issue"])),
            "method": issues.attrs.get("method", ""),
        },
        name="label audit",
    )
    return LabelReport(summary, per_class, confusion, issues.head(n))
