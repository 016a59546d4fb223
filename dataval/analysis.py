"""Analysis across queries: does the same training data drive related queries?

A ``score`` frame has one row per query (test row) and one column per
training row. Comparing its rows asks whether different queries rely on the
same training rows: Ruis et al. (2024) found that the influence of a
pretraining document is correlated across different reasoning questions of
one task, but not across factual questions. These helpers take a score frame
and a grouping of its queries (task, query type, class):

- :func:`query_correlations`: the correlation of training-row influence for
  every pair of queries, with their groups (long format);
- :func:`group_correlations`: its mean within and across groups;
- :func:`group_influence`: the training rows that rank high for a whole
  group, by mean rank over its queries.
"""

import numpy as np
import pandas as pd
from scipy.stats import rankdata

_METHODS = ("pearson", "spearman")


def _check_scores(scores):
    if not isinstance(scores, pd.DataFrame):
        raise TypeError(
            f"scores must be the DataFrame returned by score(X_test, y_test), got "
            f"{type(scores).__name__}."
        )
    if isinstance(scores.index, pd.MultiIndex):
        raise ValueError(
            "scores has a MultiIndex (a by_layer=True frame); pass a plain score "
            "frame, or one layer's rows: scores.xs(layer, level='layer')."
        )
    values = scores.to_numpy(np.float64)
    if not np.isfinite(values).all():
        raise ValueError("scores contains NaN or infinity; pass finite scores.")
    return values


def _check_groups(groups, scores):
    """``groups`` as an array aligned with the rows of ``scores``."""
    if isinstance(groups, pd.Series):
        missing = scores.index.difference(groups.index)
        if len(missing):
            raise ValueError(
                f"groups (a Series) has no entry for the test rows "
                f"{missing[:10].tolist()}; index it by the score frame's test index, "
                "or pass a sequence with one group per row of scores."
            )
        return groups.reindex(scores.index).to_numpy()
    groups = np.asarray(groups)
    if groups.ndim != 1 or len(groups) != len(scores):
        raise ValueError(
            f"groups must give one group per row of scores ({len(scores)}), got "
            f"shape {groups.shape}."
        )
    return groups


def _row_correlations(values, method):
    """(n_test, n_test) correlation of the rows of ``values``."""
    if method not in _METHODS:
        raise ValueError(f"method must be one of {list(_METHODS)}, got {method!r}.")
    if method == "spearman":
        values = rankdata(values, axis=1)
    return np.corrcoef(values)


def _check_not_constant(values, index):
    constant = np.flatnonzero(values.std(1) == 0)
    if len(constant):
        raise ValueError(
            f"The test rows {index[constant][:10].tolist()} have the same influence "
            "for every training row (e.g. a zero query gradient), so their "
            "correlation with other queries is undefined; drop them."
        )


def query_correlations(scores, groups=None, *, method="pearson"):
    """Correlation of training-row influence between every pair of queries.

    Parameters
    ----------
    scores : DataFrame of shape (n_test, n_train)
        The output of an estimator's ``score``.
    groups : Series or sequence, default=None
        The group of each test row (task, query type): a Series indexed by
        the test index, or one label per row of ``scores``.
    method : {"pearson", "spearman"}, default="pearson"
        Correlation of the influence values, or of their ranks.

    Returns
    -------
    pairs : DataFrame
        One row per unordered pair of distinct queries, with columns
        ``test_a``, ``test_b``, ``correlation`` and, when ``groups`` is
        given, ``group_a`` and ``group_b``.

    See Also
    --------
    group_correlations : The mean within and across groups.

    Examples
    --------
    >>> import pandas as pd
    >>> from dataval.analysis import query_correlations
    >>> scores = pd.DataFrame(
    ...     [[1.0, 2.0, 3.0], [2.0, 4.0, 7.0], [3.0, 1.0, 2.0]],
    ...     index=pd.Index(["q1", "q2", "q3"], name="test"),
    ... )
    >>> query_correlations(scores, ["sum", "sum", "fact"]).round(2)
      test_a test_b  correlation group_a group_b
    0     q1     q2         0.99     sum     sum
    1     q1     q3        -0.50     sum    fact
    2     q2     q3        -0.40     sum    fact
    """
    values = _check_scores(scores)
    _check_not_constant(values, scores.index)
    correlations = _row_correlations(values, method)
    a, b = np.triu_indices(len(scores), 1)
    pairs = pd.DataFrame(
        {
            "test_a": scores.index[a],
            "test_b": scores.index[b],
            "correlation": correlations[a, b],
        }
    )
    if groups is not None:
        labels = _check_groups(groups, scores)
        pairs["group_a"], pairs["group_b"] = labels[a], labels[b]
    return pairs


def group_correlations(scores, groups, *, method="pearson"):
    """Mean correlation of training-row influence within and across groups.

    Entry ``(a, b)`` is the mean, over pairs of distinct queries from group
    ``a`` and group ``b``, of the correlation of their influence over the
    training rows. The diagonal answers "do the queries of one group rely on
    the same training rows?"; off the diagonal is the baseline between
    groups.

    Parameters
    ----------
    scores : DataFrame of shape (n_test, n_train)
        The output of an estimator's ``score``.
    groups : Series or sequence
        The group of each test row, as in :func:`query_correlations`. Every
        group needs at least two queries.
    method : {"pearson", "spearman"}, default="pearson"
        As in :func:`query_correlations`.

    Returns
    -------
    correlations : DataFrame of shape (n_groups, n_groups)
        Symmetric, indexed by the sorted group labels on both axes.

    Examples
    --------
    >>> import pandas as pd
    >>> from dataval.analysis import group_correlations
    >>> scores = pd.DataFrame(
    ...     [[1.0, 2.0, 3.0], [2.0, 4.0, 7.0], [3.0, 1.0, 2.0], [1.0, 3.0, 1.0]]
    ... )
    >>> group_correlations(scores, ["sum", "sum", "fact", "fact"]).round(2)
          fact   sum
    fact -0.87 -0.25
    sum  -0.25  0.99
    """
    pairs = query_correlations(scores, groups, method=method)
    labels = _check_groups(groups, scores)
    names, counts = np.unique(labels, return_counts=True)
    single = names[counts < 2]
    if len(single):
        raise ValueError(
            f"The groups {single.tolist()} have a single query: a correlation "
            "within a group needs two. Give each group at least two test rows."
        )
    # both orders of each pair, so that (a, b) and (b, a) average the same pairs
    both = pd.concat(
        [
            pairs[["group_a", "group_b", "correlation"]],
            pairs.rename(columns={"group_a": "group_b", "group_b": "group_a"})[
                ["group_a", "group_b", "correlation"]
            ],
        ]
    )
    table = both.pivot_table(
        index="group_a", columns="group_b", values="correlation", aggfunc="mean"
    )
    return table.reindex(index=names, columns=names).rename_axis(
        index=None, columns=None
    )


def group_influence(scores, groups, *, kind="helpful", k=None):
    """The training rows that rank high for every query of a group.

    For each query the training rows are ranked by influence (1 = strongest,
    as in ``top_k``); a row's ``mean_rank`` over the queries of a group says
    how consistently the whole group relies on it, where a large mean
    influence may come from one query alone.

    Parameters
    ----------
    scores : DataFrame of shape (n_test, n_train)
        The output of an estimator's ``score``.
    groups : Series or sequence
        The group of each test row, as in :func:`query_correlations`.
    kind : {"helpful", "harmful"}, default="helpful"
        Rank the largest influences first (``"helpful"``) or the most
        negative (``"harmful"``). With a measurement you want high
        (``measurement="log_prob"`` or ``"margin"``) the training rows that
        support it have negative influence: use ``"harmful"`` for them
        (see :ref:`measurements`).
    k : int, default=None
        Rows kept per group, best mean rank first; ``None`` keeps all.

    Returns
    -------
    influence : DataFrame
        Long format with columns ``group``, ``rank`` (1 = best mean rank in
        the group), ``train``, ``mean_rank``, ``mean_influence`` and
        ``n_queries``.

    Examples
    --------
    >>> import pandas as pd
    >>> from dataval.analysis import group_influence
    >>> scores = pd.DataFrame(
    ...     [[1.0, 2.0, 3.0], [2.0, 4.0, 7.0], [3.0, 1.0, 2.0]],
    ...     columns=pd.Index(["a", "b", "c"], name="train"),
    ... )
    >>> group_influence(scores, ["sum", "sum", "fact"], k=1)
      group  rank train  mean_rank  mean_influence  n_queries
    0  fact     1     a        1.0             3.0          1
    1   sum     1     c        1.0             5.0          2
    """
    if kind not in ("helpful", "harmful"):
        raise ValueError(f"kind must be 'helpful' or 'harmful', got {kind!r}.")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"k must be a positive integer or None, got {k!r}.")
    values = _check_scores(scores)
    labels = _check_groups(groups, scores)
    sign = -1.0 if kind == "helpful" else 1.0
    ranks = rankdata(sign * values, axis=1)  # (n_test, n_train), 1 = strongest
    frames = []
    for name in np.unique(labels):
        rows = labels == name
        mean_rank = ranks[rows].mean(0)
        order = np.argsort(mean_rank, kind="stable")[:k]
        frames.append(
            pd.DataFrame(
                {
                    "group": name,
                    "rank": np.arange(1, len(order) + 1),
                    "train": scores.columns[order],
                    "mean_rank": mean_rank[order],
                    "mean_influence": values[rows].mean(0)[order],
                    "n_queries": int(rows.sum()),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)
