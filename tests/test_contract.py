"""The contract of DESIGN.md, for every estimator of the catalogue.

Each test runs once per estimator listed in catalogue.py, on the user's module
of user_model.py trained on iris with pandas indexes of the user's own; the
trajectory estimators get the state dicts saved along that training.
"""

import copy
import inspect
import pickle

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from catalogue import (
    BAD_VALUES,
    CATALOGUE,
    assert_same_outputs,
    checkpoints,
    frames,
    influence_estimators,
    outputs,
    trained_user_module,
)
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from user_model import assert_unchanged, fingerprint

import dataval

# LiSSA runs 5 steps of its series here: fast, and warned as too short
pytestmark = pytest.mark.filterwarnings(
    "ignore:depth=5 is short:dataval.exceptions.ConvergenceWarning"
)


@pytest.fixture(scope="module", params=CATALOGUE, ids=lambda entry: entry.id)
def fitted(request):
    """``(entry, estimator)`` fitted once per module: tests only read it."""
    entry = request.param
    X, y, _, _ = frames()
    return entry, entry.make(checkpoints()).fit(trained_user_module(), X, y)


def _same(a, b):
    """Equal parameter values, tensors in state dicts included."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(_same, a, b))
    return type(a) is type(b) and a == b


def test_the_catalogue_lists_every_estimator():
    assert {entry.cls for entry in CATALOGUE} == set(influence_estimators())


# ------------------------------------------------------------ scikit-learn API
def test_constructor_only_stores_its_keyword_arguments(entry):
    estimator = entry.make(checkpoints())
    params = {"batch_size": 16, **entry.params}
    for name, value in params.items():
        assert getattr(estimator, name) is value, name
    assert sorted(vars(estimator)) == sorted(estimator.get_params())
    signature = inspect.signature(entry.cls.__init__)
    assert all(
        p.kind is p.KEYWORD_ONLY
        for name, p in signature.parameters.items()
        if name != "self"
    )
    with pytest.raises(TypeError):
        entry.cls(next(iter(entry.params.values())))


def test_get_params_and_set_params_round_trip(entry):
    estimator = entry.make(checkpoints())
    params = estimator.get_params()
    other = entry.cls().set_params(**params)
    assert other.get_params().keys() == params.keys()
    assert all(other.get_params()[k] is v for k, v in params.items())
    assert entry.cls(**params).get_params().keys() == params.keys()


def test_clone_copies_the_parameters_and_not_the_fit(fitted):
    entry, estimator = fitted
    cloned = clone(estimator)
    params = estimator.get_params()
    assert all(_same(cloned.get_params()[k], v) for k, v in params.items())
    assert not hasattr(cloned, "n_train_")
    X, y, X_test, y_test = frames()
    with pytest.raises(NotFittedError):
        cloned.score(X_test, y_test)


def test_scoring_changes_no_fitted_attribute(fitted):
    entry, estimator = fitted
    _, _, X_test, y_test = frames()
    before = {k: v for k, v in vars(estimator).items() if not k.startswith("_")}
    outputs(entry, estimator, X_test, y_test)
    after = {k: v for k, v in vars(estimator).items() if not k.startswith("_")}
    assert after.keys() == before.keys()
    assert all(after[k] is v for k, v in before.items())


# ------------------------------------------------------------- user's model
def test_user_model_is_left_unchanged(entry):
    X, y, X_test, y_test = frames()
    module, states = trained_user_module(), checkpoints()
    before, before_states = fingerprint(module), copy.deepcopy(states)
    estimator = entry.make(states).fit(module, X, y)
    assert_unchanged(before, module)
    first = estimator.score(X_test, y_test)
    estimator.score(X_test, y_test, by_layer=True)
    estimator.top_k(X_test, y_test, k=2)
    estimator.value(X_test, y_test)
    estimator.self_influence()
    assert_unchanged(before, module)
    assert _same(states, before_states)
    # dropout and batch norm ran in eval mode: the scores are deterministic
    pd.testing.assert_frame_equal(estimator.score(X_test, y_test), first)
    if entry.all_parameters:  # frozen parameters are not part of the influence
        trainable = [p for p in module.parameters() if p.requires_grad]
        assert estimator.n_params_ == sum(p.numel() for p in trainable)


def test_user_model_is_left_unchanged_by_a_fit_that_raises(entry):
    X, y, X_test, y_test = frames()
    module = trained_user_module()
    before = fingerprint(module)

    def broken_loss(output, target):
        if output.requires_grad:
            raise RuntimeError("boom")
        return torch.nn.functional.cross_entropy(output, target, reduction="none")

    params = {"loss": broken_loss}
    if "fisher" in entry.cls().get_params():
        params["fisher"] = "empirical"  # "true" samples targets of known losses
    estimator = entry.make(checkpoints(), **params)
    # at fit where fit takes gradients, else at the first score
    with pytest.raises(RuntimeError, match="boom"):
        estimator.fit(module, X, y)
        estimator.score(X_test, y_test)
    assert_unchanged(before, module)


def test_a_failed_refit_leaves_the_estimator_unfitted(fitted):
    entry, estimator = fitted
    X, y, X_test, y_test = frames()
    estimator = copy.deepcopy(estimator)
    with pytest.raises(ValueError, match="y has 59"):
        estimator.fit(trained_user_module(), X, y[:-1])
    assert not hasattr(estimator, "n_train_")
    with pytest.raises(NotFittedError):
        estimator.score(X_test, y_test)


# --------------------------------------------------------------- outputs
def test_outputs_keep_the_users_indexes(fitted):
    entry, estimator = fitted
    X, y, X_test, y_test = frames()
    scores = estimator.score(X_test, y_test)
    assert scores.shape == (len(X_test), len(X))
    assert (scores.dtypes == np.float32).all()
    assert scores.index.equals(X_test.index) and scores.index.name == "test"
    assert scores.columns.equals(X.index) and scores.columns.name == "train"
    layers = estimator.score(X_test, y_test, by_layer=True)
    assert layers.index.names == ["layer", "test"]
    assert layers.columns.equals(X.index)
    top = estimator.top_k(X_test, y_test, k=3)
    assert set(top["test"]) == set(X_test.index)
    assert set(top["train"]) <= set(X.index)
    for series in (estimator.value(X_test, y_test), estimator.self_influence()):
        assert series.index.equals(X.index) and series.dtype == np.float32


@pytest.mark.parametrize("kind", ["helpful", "harmful"])
def test_top_k_agrees_with_score(fitted, kind):
    entry, estimator = fitted
    _, _, X_test, y_test = frames()
    scores = estimator.score(X_test, y_test)
    top = estimator.top_k(X_test, y_test, k=4, kind=kind)
    assert list(top.columns) == ["test", "rank", "train", "influence"]
    assert len(top) == 4 * len(X_test)
    for test, rows in top.groupby("test", sort=False):
        expected = scores.loc[test].sort_values(ascending=kind == "harmful")[:4]
        assert list(rows["rank"]) == [1, 2, 3, 4]
        np.testing.assert_allclose(rows["influence"], expected.to_numpy(), rtol=1e-5)
        assert set(rows["train"]) == set(expected.index)


def test_value_is_the_mean_score(fitted):
    entry, estimator = fitted
    _, _, X_test, y_test = frames()
    scores = estimator.score(X_test, y_test)
    value = estimator.value(X_test, y_test)
    atol = 1e-5 * np.abs(scores.to_numpy()).max()
    np.testing.assert_allclose(value, scores.mean(axis=0), rtol=1e-4, atol=atol)


def test_self_influence_is_the_diagonal_of_the_training_scores(fitted):
    entry, estimator = fitted
    if entry.stochastic_solve:
        pytest.skip(f"{entry.id} solves with random batches")
    X, y, _, _ = frames()
    diagonal = np.diag(estimator.score(X, y).to_numpy())
    atol = 1e-5 * np.abs(diagonal).max()
    np.testing.assert_allclose(estimator.self_influence(), diagonal, atol=atol)


# ---------------------------------------------------------------- persistence
def _pickled(estimator, tmp_path):
    return pickle.loads(pickle.dumps(estimator))


def _joblib(estimator, tmp_path):
    joblib.dump(estimator, tmp_path / "estimator.joblib")
    return joblib.load(tmp_path / "estimator.joblib")


@pytest.mark.parametrize("round_trip", [_pickled, _joblib])
def test_round_trip_gives_the_same_scores(fitted, round_trip, tmp_path):
    entry, estimator = fitted
    _, _, X_test, y_test = frames()
    restored = round_trip(estimator, tmp_path)
    pd.testing.assert_frame_equal(
        restored.score(X_test, y_test), estimator.score(X_test, y_test)
    )
    pd.testing.assert_series_equal(
        restored.value(X_test, y_test), estimator.value(X_test, y_test)
    )


def test_save_and_load_restore_without_refitting(entry, tmp_path, monkeypatch):
    """Random estimators too: the state is stored, not recomputed from a seed."""
    X, y, X_test, y_test = frames()
    module, states = trained_user_module(), checkpoints()
    before = fingerprint(module)
    estimator = entry.make(states)
    if "random_state" in estimator.get_params():
        estimator.set_params(random_state=None)
    estimator.fit(module, X, y)
    dataval.save(estimator, tmp_path / "e.pt")

    def refit(self):
        raise AssertionError("load ran _fit_curvature")

    patched = [k for k in type(estimator).__mro__ if "_fit_curvature" in vars(k)]
    assert patched, "no _fit_curvature to forbid: the test would check nothing"
    for klass in patched:
        monkeypatch.setattr(klass, "_fit_curvature", refit)
    # state dicts are not saved: the user passes them again
    trajectory = entry.trajectory_params(states)
    restored = dataval.load(tmp_path / "e.pt", module, X, y, **trajectory)

    def fitted_attributes(estimator):
        return sorted(k for k in vars(estimator) if k.endswith("_") and k[0] != "_")

    assert fitted_attributes(restored) == fitted_attributes(estimator)
    pd.testing.assert_frame_equal(
        restored.score(X_test, y_test),
        estimator.score(X_test, y_test),
        check_exact=True,
    )
    pd.testing.assert_frame_equal(
        restored.top_k(X_test, y_test, k=3), estimator.top_k(X_test, y_test, k=3)
    )
    pd.testing.assert_series_equal(
        restored.value(X_test, y_test),
        estimator.value(X_test, y_test),
        check_exact=True,
    )
    assert_unchanged(before, module)


# ------------------------------------------------------------- bad parameters
def _bad_parameter_cases():
    return [
        pytest.param(entry, name, value, id=f"{entry.id}-{name}={value!r}")
        for entry in CATALOGUE
        for name in entry.cls().get_params()
        for value in BAD_VALUES.get(name, [])
    ]


def test_every_parameter_has_a_bad_value(entry):
    assert set(entry.cls().get_params()) <= set(BAD_VALUES)


@pytest.mark.parametrize("entry, name, value", _bad_parameter_cases())
def test_bad_parameter_is_named_at_fit(entry, name, value):
    X, y, _, _ = frames()
    module = trained_user_module()
    before = fingerprint(module)
    estimator = entry.make(checkpoints(), **{name: value})  # only stored
    with pytest.raises((ValueError, TypeError), match=rf"\b{name}\b"):
        estimator.fit(module, X, y)
    assert_unchanged(before, module)


# ------------------------------------------------------- progress, n_jobs, CUDA
def test_verbose_shows_progress_and_is_silent_by_default(entry, capsys):
    X, y, X_test, y_test = frames()
    module, states = trained_user_module(), checkpoints()
    quiet = entry.make(states).fit(module, X, y)
    outputs(entry, quiet, X_test, y_test)
    assert capsys.readouterr() == ("", "")
    entry.make(states, verbose=1).fit(module, X, y).score(X_test, y_test)
    shown = capsys.readouterr()
    assert shown.out == ""
    assert entry.progress in shown.err and "scoring" in shown.err


def test_n_jobs_gives_the_serial_results(fitted):
    entry, serial = fitted
    X, y, X_test, y_test = frames()
    expected = outputs(entry, serial, X_test, y_test)
    # fitted and scored by 2 workers (60 rows: slices of 32 and 28), on a
    # module that the threads must leave alone
    module = trained_user_module()
    before = fingerprint(module)
    parallel = clone(serial).set_params(n_jobs=2).fit(module, X, y)
    got = outputs(entry, parallel, X_test, y_test)
    assert_same_outputs(got, expected, rtol=1e-6, atol=1e-9)
    assert_unchanged(before, module)


@pytest.mark.cuda
def test_cuda_and_cpu_agree(fitted):
    entry, cpu = fitted
    X, y, X_test, y_test = frames()
    gpu = clone(cpu).set_params(device="cuda", n_jobs=2)
    gpu.fit(trained_user_module(), X, y)
    expected, got = (
        outputs(entry, cpu, X_test, y_test),
        outputs(entry, gpu, X_test, y_test),
    )
    for name in ("score", "value", "self_influence"):
        if name in expected:
            np.testing.assert_allclose(
                got[name].to_numpy(), expected[name].to_numpy(), rtol=1e-3, atol=1e-6
            )
