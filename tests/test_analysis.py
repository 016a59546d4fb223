"""dataval.analysis against brute-force pandas computations."""

import itertools

import numpy as np
import pandas as pd
import pytest

from dataval.analysis import group_correlations, group_influence, query_correlations


@pytest.fixture
def frame():
    rng = np.random.RandomState(0)
    # two groups sharing a pattern over the training rows, one without
    shared = rng.randn(2, 30)
    rows = [shared[0] + 0.3 * rng.randn(30) for _ in range(3)]
    rows += [shared[1] + 0.3 * rng.randn(30) for _ in range(3)]
    rows += [rng.randn(30) for _ in range(3)]
    index = pd.Index([f"q{i}" for i in range(9)], name="test")
    columns = pd.Index(100 + np.arange(30), name="train")
    groups = pd.Series(["add"] * 3 + ["mul"] * 3 + ["fact"] * 3, index=index)
    return pd.DataFrame(rows, index=index, columns=columns), groups


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_pairs_are_the_correlations_of_the_rows(frame, method):
    scores, groups = frame
    pairs = query_correlations(scores, groups, method=method)
    expected = scores.T.corr(method=method)
    assert len(pairs) == 9 * 8 // 2
    for row in pairs.itertuples():
        assert row.correlation == pytest.approx(expected.loc[row.test_a, row.test_b])
        assert (row.group_a, row.group_b) == (groups[row.test_a], groups[row.test_b])


def test_group_means_by_brute_force(frame):
    scores, groups = frame
    # a Series is aligned by the test index, whatever its order
    table = group_correlations(scores, groups.iloc[::-1])
    corr = scores.T.corr()
    for a, b in itertools.product(["add", "fact", "mul"], repeat=2):
        values = [
            corr.loc[i, j]
            for i in groups.index[groups == a]
            for j in groups.index[groups == b]
            if i != j
        ]
        assert table.loc[a, b] == pytest.approx(np.mean(values))
    assert table.loc["add", "add"] > 0.8 and table.loc["fact", "fact"] < 0.5
    np.testing.assert_allclose(table.to_numpy(), table.to_numpy().T)


@pytest.mark.parametrize("kind", ["helpful", "harmful"])
def test_group_influence_is_the_mean_rank(frame, kind):
    scores, groups = frame
    result = group_influence(scores, groups.to_numpy(), kind=kind, k=5)
    ranks = scores.rank(axis=1, ascending=kind == "harmful")
    for name, part in result.groupby("group"):
        rows = groups.index[groups == name]
        expected = ranks.loc[rows].mean().sort_values(kind="stable").head(5)
        assert part["train"].tolist() == expected.index.tolist()
        np.testing.assert_allclose(part["mean_rank"], expected.to_numpy())
        np.testing.assert_allclose(
            part["mean_influence"], scores.loc[rows, expected.index].mean()
        )
        assert part["rank"].tolist() == [1, 2, 3, 4, 5]
        assert (part["n_queries"] == 3).all()
    assert len(group_influence(scores, groups)) == 3 * 30


def test_bad_input_is_named(frame):
    scores, groups = frame
    by_layer = pd.concat({"0": scores, "1": scores}, names=["layer"])
    with pytest.raises(ValueError, match="by_layer=True"):
        query_correlations(by_layer)
    with pytest.raises(ValueError, match="one group per row"):
        group_correlations(scores, ["a", "b"])
    with pytest.raises(ValueError, match=r"no entry for the test rows \['q8'\]"):
        group_correlations(scores, groups.iloc[:-1])
    with pytest.raises(ValueError, match=r"groups \['solo'\] have a single query"):
        group_correlations(scores, ["solo"] + groups.tolist()[1:])
    constant = scores.copy()
    constant.iloc[2] = 0.0
    with pytest.raises(ValueError, match=r"test rows \['q2'\] have the same"):
        query_correlations(constant)
    with pytest.raises(ValueError, match="method must be"):
        query_correlations(scores, method="kendall")
    with pytest.raises(ValueError, match="kind must be"):
        group_influence(scores, groups, kind="supporting")
    with pytest.raises(TypeError, match="DataFrame returned by score"):
        query_correlations(scores.to_numpy())
