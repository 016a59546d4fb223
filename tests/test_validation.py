"""Hostile inputs: each gets a clear error before any computation, never a number.

Every case checks the error's type and that its message names the argument,
what was wrong and the cure; the user's model is left unchanged.
"""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from user_model import assert_unchanged, fingerprint

from dataval import CGInfluence, EKFACInfluence, ExactInfluence, TracIn


@pytest.fixture
def frame(iris_frame):
    X, y, X_test, y_test = iris_frame
    return X, y, X_test, y_test


@pytest.fixture
def net():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)
    ).double()


# ---------------------------------------------------------------- features
def test_reordered_columns_against_the_sklearn_model_are_refused(frame):
    X, y, X_test, y_test = frame
    clf = LogisticRegression(max_iter=1000).fit(X, y)
    with pytest.raises(ValueError, match="X must be the feature names.*another order"):
        ExactInfluence().fit(clf, X[["b", "a", "c", "d"]], y)
    estimator = ExactInfluence().fit(clf, X, y)
    with pytest.raises(ValueError, match="X_test must be.*another order"):
        estimator.score(X_test[["d", "c", "b", "a"]], y_test)
    renamed = X_test.rename(columns={"a": "z"})
    with pytest.raises(
        ValueError, match=r"not seen at fit: \['z'\].*missing now: \['a'\]"
    ):
        estimator.top_k(renamed, y_test)


def test_columns_seen_at_fit_are_checked_for_a_torch_model(frame, net):
    X, y, X_test, y_test = frame
    X, X_test = X.astype("float64"), X_test.astype("float64")
    estimator = ExactInfluence(curvature="ggn").fit(net, X, y)
    with pytest.raises(ValueError, match="X_test must be.*another order"):
        estimator.value(X_test[["b", "a", "c", "d"]], y_test)


def test_another_number_of_features_is_refused(iris, net):
    X, y, X_test, y_test = iris
    estimator = ExactInfluence(curvature="ggn").fit(net, torch.tensor(X), y)
    with pytest.raises(ValueError, match=r"X_test has rows of shape \(3,\).*\(4,\)"):
        estimator.score(torch.tensor(X_test[:, :3]), y_test)


@pytest.mark.parametrize(
    "column, match",
    [
        (pd.array([1.0, None] * 45, dtype="Float64"), r"missing values .* \['b'\]"),
        (np.array(["x", "y"] * 45, dtype=object), r"non-numeric columns \[\"'b'"),
        (pd.Series(["x", "y"] * 45, dtype="string"), r"non-numeric columns \[\"'b'"),
    ],
    ids=["pd.NA", "object strings", "string dtype"],
)
def test_bad_columns_are_named(frame, column, match):
    X, y, _, _ = frame
    clf = LogisticRegression(max_iter=1000).fit(X, y)
    X = X.copy()
    X["b"] = column.to_numpy() if isinstance(column, pd.Series) else column
    with pytest.raises(ValueError, match=match):
        ExactInfluence().fit(clf, X, y)


def test_none_in_an_object_array_names_the_rows(iris):
    X, y, _, _ = iris
    clf = LogisticRegression(max_iter=1000).fit(X, y)
    X = X.astype(object)
    X[[4, 7], 2] = None
    with pytest.raises(
        ValueError, match=r"X contains NaN or infinity in rows \[4, 7\]"
    ):
        ExactInfluence().fit(clf, X, y)


def test_missing_labels_are_named(frame):
    X, y, _, _ = frame
    clf = LogisticRegression(max_iter=1000).fit(X, y)
    y = y.astype("Int64")
    y.iloc[5] = pd.NA
    with pytest.raises(ValueError, match=r"y contains missing .* rows \['row5'\]"):
        ExactInfluence().fit(clf, X, y)


def test_integer_features_a_float_module_cannot_take_are_refused(iris, net):
    X, y, _, _ = iris
    pixels = torch.tensor(np.abs(X) * 50).to(torch.uint8)
    before = fingerprint(net)
    with pytest.raises(
        TypeError, match=r"integer dtype torch.uint8.*X.float\(\) / 255"
    ):
        ExactInfluence().fit(net, pixels, torch.tensor(y))
    assert_unchanged(before, net)


# ----------------------------------------------------------------- targets
def test_two_dimensional_labels_are_refused(frame, net):
    X, y, _, _ = frame
    clf = LogisticRegression(max_iter=1000).fit(X, y)
    with pytest.raises(ValueError, match=r"1-D array of class labels.*y.ravel\(\)"):
        ExactInfluence().fit(clf, X, y.to_numpy()[:, None])
    X_t, y_t = torch.tensor(X.to_numpy()), torch.tensor(y.to_numpy())
    with pytest.raises(ValueError, match=r"rows of shape \(1,\).*y.ravel\(\)"):
        ExactInfluence(curvature="ggn").fit(net, X_t, y_t[:, None])


def test_float_targets_that_do_not_match_the_outputs_are_refused(regression, net):
    X, y, _, _ = regression
    before = fingerprint(net)
    with pytest.raises(ValueError, match=r"1 value\(s\) per row.*outputs 3 per row"):
        ExactInfluence().fit(net, torch.tensor(X), torch.tensor(y))
    assert_unchanged(before, net)


def test_a_loss_that_is_not_one_value_per_row_is_refused(iris, net):
    X, y, _, _ = iris

    def mean_loss(output, target):
        return torch.nn.functional.cross_entropy(output, target).reshape(1)

    with pytest.raises(ValueError, match=r"one value per row.*shape \(1,\).*'none'"):
        ExactInfluence(loss=mean_loss).fit(net, torch.tensor(X), torch.tensor(y))


# ------------------------------------------------------------- non-finite
def _fragile_loss(output, target):
    """Squared error, NaN where the target is below -1 (sqrt of it)."""
    return (output[:, 0] - target) ** 2 * torch.sqrt(target + 1)


@pytest.fixture
def fragile(regression):
    X, y, X_test, y_test = regression
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 1)).double()
    y = np.abs(y)
    y[[3, 11, 20]] = -5.0  # three rows with a NaN loss
    return module, torch.tensor(X), torch.tensor(y), torch.tensor(X_test), y_test


@pytest.mark.parametrize(
    "estimator",
    [ExactInfluence(), CGInfluence(), EKFACInfluence(fisher="empirical")],
    ids=lambda e: type(e).__name__,
)
def test_a_nan_loss_names_the_training_rows(estimator, fragile):
    module, X, y, X_test, y_test = fragile
    before = fingerprint(module)
    # at fit where the curvature is formed there (Exact, EK-FAC), else at score
    with pytest.raises(FloatingPointError, match=r"training rows \[3, 11, 20\]"):
        estimator.set_params(loss=_fragile_loss).fit(module, X, y)
        estimator.score(X_test, torch.tensor(np.abs(y_test)))
    assert_unchanged(before, module)


def test_a_nan_test_loss_names_the_test_rows(fragile):
    module, X, y, X_test, y_test = fragile
    keep = np.setdiff1d(np.arange(len(y)), [3, 11, 20])
    estimator = ExactInfluence(loss=_fragile_loss).fit(module, X[keep], y[keep])
    y_test = torch.tensor(np.abs(y_test))
    y_test[2] = -4.0
    with pytest.raises(FloatingPointError, match=r"test rows \[2\]"):
        estimator.score(X_test, y_test)
    with pytest.raises(FloatingPointError, match=r"test rows \[2\]"):
        estimator.value(X_test, y_test)


def test_a_nan_checkpoint_is_named(trained_mlp):
    module, X, y, _, _ = trained_mlp
    good = {k: v.clone() for k, v in module.state_dict().items()}
    bad = {k: v.clone() for k, v in good.items()}
    bad["2.weight"][0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"checkpoints\[1\].*'2.weight'"):
        TracIn(checkpoints=[good, bad]).fit(module, X, y)


def test_a_nan_model_parameter_is_named(trained_mlp):
    module, X, y, _, _ = trained_mlp
    with torch.no_grad():
        module[0].bias[1] = float("inf")
    with pytest.raises(FloatingPointError, match=r"model's tensor '0.bias'"):
        ExactInfluence().fit(module, X, y)


def test_float16_overflow_names_the_cure(regression, matmul_supported):
    X, y, _, _ = regression
    torch.manual_seed(0)
    module = torch.nn.Linear(4, 1)
    with torch.no_grad():
        module.weight.fill_(2000.0)  # outputs ~1e4: squared errors overflow float16
    X, y = torch.tensor(X * 5, dtype=torch.float32), torch.tensor(y).float()
    assert torch.isfinite(module(X)).all()  # finite in float32
    if not matmul_supported("float16"):
        pytest.skip("this torch has no float16 matrix products on this device")
    with pytest.raises(FloatingPointError, match=r"float16.*dtype='float32'"):
        ExactInfluence(dtype="float16", damping=1.0).fit(module, X, y)


# ----------------------------------------------------------- more inputs
def test_string_labels_for_a_torch_classifier_are_refused(iris, net):
    X, y, _, _ = iris
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    with pytest.raises(ValueError, match="strings or objects.*LabelEncoder"):
        ExactInfluence().fit(net, torch.tensor(X), labels)


def test_complex_features_are_refused(iris):
    X, y, _, _ = iris
    clf = LogisticRegression(max_iter=1000).fit(X, y)
    with pytest.raises(ValueError, match="complex numbers.*separate columns"):
        ExactInfluence().fit(clf, X.astype(complex), y)


def test_regression_targets_must_match_the_sklearn_outputs(regression):
    from sklearn.linear_model import Ridge

    X, y, _, _ = regression
    two = np.c_[y, -y]
    model = Ridge().fit(X, two)
    with pytest.raises(ValueError, match=r"1 value\(s\) per row.*Ridge outputs 2"):
        ExactInfluence().fit(model, X, y)


def test_one_dimensional_features_for_sklearn_are_refused(iris):
    X, y, _, _ = iris
    clf = LogisticRegression(max_iter=1000).fit(X, y)
    with pytest.raises(ValueError, match=r"X must be 2-D.*reshape\(-1, 1\)"):
        ExactInfluence().fit(clf, X[:, 0], y)


def test_misaligned_pandas_indexes_are_refused(frame):
    X, y, X_test, y_test = frame
    clf = LogisticRegression(max_iter=1000).fit(X, y)
    with pytest.raises(ValueError, match=r"X and y have different indexes.*\.loc"):
        ExactInfluence().fit(clf, X, y.sample(frac=1.0, random_state=0))
    estimator = ExactInfluence().fit(clf, X, y)
    shifted = y_test.set_axis(y_test.index + 1000)
    with pytest.raises(ValueError, match="X_test and y_test have different indexes"):
        estimator.score(X_test, shifted)
    # without an index, y pairs with X by position
    assert estimator.score(X_test, y_test.to_numpy()).shape == (len(X_test), len(X))
