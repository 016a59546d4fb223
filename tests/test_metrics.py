"""dataval.metrics: detection curves, leave-one-out ground truth, LDS."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from dataval.metrics import detection_curve, mislabel_detection_auc

# ----------------------------------------------------------------- detection

DETECTION_CASES = [
    dict(
        id="perfect",
        scores=[4.0, 3.0, 2.0, 1.0],
        flags=[True, True, False, False],
        inspected=[0, 0.25, 0.5, 0.75, 1],
        found=[0, 0.5, 1, 1, 1],
        auc=1.0,
    ),
    dict(
        id="worst",
        scores=[1.0, 2.0, 3.0, 4.0],
        flags=[True, False, False, False],
        inspected=[0, 0.25, 0.5, 0.75, 1],
        found=[0, 0, 0, 0, 1],
        auc=0.0,
    ),
    dict(
        id="ties-inspected-together",
        scores=[1.0, 1.0, 1.0, 0.0],
        flags=[True, False, False, True],
        inspected=[0, 0.75, 1],
        found=[0, 0.5, 1],
        auc=0.25,
    ),
]


@pytest.mark.parametrize("case", DETECTION_CASES, ids=lambda c: c["id"])
def test_detection_curve_on_known_rankings(case):
    curve = detection_curve(case["scores"], case["flags"])
    assert curve.columns.tolist() == [
        "fraction_inspected",
        "fraction_found",
        "threshold",
    ]
    np.testing.assert_allclose(curve["fraction_inspected"], case["inspected"])
    np.testing.assert_allclose(curve["fraction_found"], case["found"])
    assert curve["threshold"].iloc[0] == np.inf
    assert mislabel_detection_auc(case["scores"], case["flags"]) == case["auc"]


def test_detection_matches_sklearn_auc_and_random_ranking_follows_diagonal():
    rng = np.random.RandomState(0)
    flags = rng.rand(2000) < 0.1
    scores = rng.rand(2000) + flags * rng.rand(2000)
    assert mislabel_detection_auc(scores, flags) == pytest.approx(
        roc_auc_score(flags, scores)
    )
    curve = detection_curve(rng.rand(2000), flags)
    gap = (curve["fraction_found"] - curve["fraction_inspected"]).abs().max()
    assert gap < 0.15


def test_detection_aligns_series_on_their_index():
    scores = pd.Series([0.9, 0.1, 0.8], index=["a", "b", "c"])
    flags = pd.Series([False, True, True], index=["c", "a", "b"])
    assert mislabel_detection_auc(scores, flags) == 0.5
    curve = detection_curve(scores, flags)
    assert curve["fraction_found"].tolist() == [0, 0.5, 0.5, 1]


@pytest.mark.parametrize(
    "scores, flags, message",
    [
        ([0.1, 0.2], [True], "scores has 2 rows but is_mislabeled has 1"),
        ([0.1, np.nan], [True, False], "NaN or infinity"),
        ([0.1, 0.2], [False, False], "marks no row as mislabeled"),
        ([0.1, 0.2], [0, 2], "must be boolean"),
        ([[0.1, 0.2]], [True], "must be 1-D"),
        ([], [], "empty"),
        (
            pd.DataFrame({"a": [0.1], "b": [0.2]}),
            [True],
            "got a DataFrame with 2 columns",
        ),
        (
            pd.Series([0.1, 0.2], index=[0, 1]),
            pd.Series([True, False], index=[0, 5]),
            "no entry for 1 rows",
        ),
    ],
)
def test_detection_bad_input(scores, flags, message):
    with pytest.raises(ValueError, match=message):
        detection_curve(scores, flags)
    with pytest.raises(ValueError, match=message):
        mislabel_detection_auc(scores, flags)


def test_auc_needs_correct_rows_too():
    with pytest.raises(ValueError, match="every row as mislabeled"):
        mislabel_detection_auc([0.1, 0.2], [True, True])
