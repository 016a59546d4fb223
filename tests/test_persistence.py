"""Fitted estimators survive pickle, joblib and dataval.save / dataval.load."""

import io
import pickle

import joblib
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from test_base import _assert_same_state, _module_state
from test_parallel import ESTIMATORS, _estimator

import dataval


def _pickle(estimator, tmp_path):
    return pickle.loads(pickle.dumps(estimator))


def _joblib(estimator, tmp_path):
    joblib.dump(estimator, tmp_path / "estimator.joblib")
    return joblib.load(tmp_path / "estimator.joblib")


def _save_load(estimator, tmp_path, model, X, y):
    dataval.save(estimator, tmp_path / "estimator.pt")
    return dataval.load(tmp_path / "estimator.pt", model, X, y)


@pytest.fixture
def fitted(trained_mlp):
    module, X, y, X_test, y_test = trained_mlp
    return module, X, y, X_test[:10], y_test[:10]


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("round_trip", [_pickle, _joblib, _save_load])
def test_round_trip_gives_the_same_scores(cls, round_trip, fitted, tmp_path):
    module, X, y, X_test, y_test = fitted
    estimator = _estimator(cls).fit(module, X, y)
    if round_trip is _save_load:
        restored = round_trip(estimator, tmp_path, module, X, y)
    else:
        restored = round_trip(estimator, tmp_path)
    pd.testing.assert_frame_equal(
        restored.score(X_test, y_test), estimator.score(X_test, y_test)
    )
    pd.testing.assert_series_equal(
        restored.value(X_test, y_test), estimator.value(X_test, y_test)
    )


def test_saved_file_loads_without_code(fitted):
    module, X, y, *_ = fitted
    buffer = io.BytesIO()
    dataval.save(dataval.ExactInfluence(damping=0.5).fit(module, X, y), buffer)
    buffer.seek(0)
    payload = torch.load(buffer, weights_only=True)
    assert payload["estimator"] == "ExactInfluence"
    assert payload["params"]["damping"] == 0.5
    assert set(payload["state"]) == {
        "curvature_",
        "damping_",
        "eigenvalues_",
        "_eigenvectors",
    }


def test_fitting_and_scoring_write_nothing(fitted, tmp_path, monkeypatch):
    module, X, y, X_test, y_test = fitted
    monkeypatch.chdir(tmp_path)
    for cls in ESTIMATORS:
        estimator = _estimator(cls, verbose=1).fit(module, X, y)
        estimator.top_k(X_test, y_test, k=2)
    assert list(tmp_path.iterdir()) == []


def _two_rows_fewer(module, X, y):
    return module, X[:-2], y[:-2]


def _other_model(module, X, y):
    other = LogisticRegression(max_iter=200).fit(X.numpy(), y.numpy())
    return other, X, y


@pytest.mark.parametrize(
    "change, match",
    [
        (_two_rows_fewer, "X has 88 rows but the file was fitted on 90"),
        (_other_model, "parameters differ"),
    ],
)
def test_load_checks_the_model_and_data(change, match, fitted, tmp_path):
    module, X, y, *_ = fitted
    estimator = dataval.ExactInfluence(curvature="ggn").fit(module, X, y)
    dataval.save(estimator, tmp_path / "e.pt")
    with pytest.raises(ValueError, match=match):
        dataval.load(tmp_path / "e.pt", *change(module, X, y))


def test_load_asks_for_parameters_it_could_not_save(fitted, tmp_path):
    module, X, y, X_test, y_test = fitted

    def loss(output, target):
        return torch.nn.functional.cross_entropy(output, target, reduction="none")

    estimator = dataval.ExactInfluence(loss=loss, curvature="ggn").fit(module, X, y)
    dataval.save(estimator, tmp_path / "e.pt")
    with pytest.raises(ValueError, match=r"\['loss'\].*loss=\.\.\."):
        dataval.load(tmp_path / "e.pt", module, X, y)
    restored = dataval.load(tmp_path / "e.pt", module, X, y, loss=loss)
    pd.testing.assert_frame_equal(
        restored.score(X_test, y_test), estimator.score(X_test, y_test)
    )


def _user_model_state(module):
    """Parameters (values and the same objects), requires_grad, modes, hooks."""
    return _module_state(module), [(id(p), p.dtype) for p in module.parameters()]


def _assert_user_model_unchanged(before, module):
    after = _user_model_state(module)
    _assert_same_state(before[0], after[0])
    assert before[1] == after[1]


def _fitted_attributes(estimator):
    return sorted(k for k in vars(estimator) if k.endswith("_") and k[0] != "_")


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_load_restores_every_estimator_without_refitting(
    cls, fitted, tmp_path, monkeypatch
):
    """Random estimators too: the state is stored, not recomputed from a seed."""
    module, X, y, X_test, y_test = fitted
    before = _user_model_state(module)
    estimator = _estimator(cls)
    if "random_state" in estimator.get_params():
        estimator.set_params(random_state=None)
    estimator.fit(module, X, y)
    dataval.save(estimator, tmp_path / "e.pt")

    def refit(self):
        raise AssertionError("load ran _fit_curvature")

    for klass in type(estimator).__mro__:
        if "_fit_curvature" in vars(klass):
            monkeypatch.setattr(klass, "_fit_curvature", refit)
    restored = dataval.load(tmp_path / "e.pt", module, X, y)
    assert _fitted_attributes(restored) == _fitted_attributes(estimator)
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
    _assert_user_model_unchanged(before, module)


def _changed_value(module, X, y):
    X = X.clone()
    X[3, 1] += 1e-3
    return module, X, y


def _reordered_rows(module, X, y):
    order = torch.arange(len(X)).roll(1)
    return module, X[order], y[order]


def _changed_label(module, X, y):
    y = y.clone()
    y[0] = (y[0] + 1) % 3
    return module, X, y


@pytest.mark.parametrize("change", [_changed_value, _reordered_rows, _changed_label])
def test_load_checks_a_fingerprint_of_the_data(change, fitted, tmp_path):
    module, X, y, *_ = fitted
    before = _user_model_state(module)
    dataval.save(dataval.KFACInfluence().fit(module, X, y), tmp_path / "e.pt")
    with pytest.raises(ValueError, match="differ from the training data"):
        dataval.load(tmp_path / "e.pt", *change(module, X, y))
    _assert_user_model_unchanged(before, module)


def _write_text(path):
    path.write_text("influence scores\n")


def _write_bytes(path):
    path.write_bytes(bytes(range(256)) * 4)


def _write_pickled_estimator(path):
    X, y = torch.randn(20, 3).numpy(), (torch.arange(20) % 2).numpy()
    clf = LogisticRegression().fit(X, y)
    joblib.dump(dataval.ExactInfluence().fit(clf, X, y), path)


def _write_tensor_list(path):
    torch.save([torch.ones(2)], path)


def _write_weights(path):
    torch.save({"weight": torch.ones(2)}, path)


def _write_other_version(path):
    torch.save({"format": "dataval-estimator-1", "state": {}}, path)


@pytest.mark.parametrize(
    "write, cure",
    [
        (_write_text, "cannot read it"),
        (_write_bytes, "cannot read it"),
        (_write_pickled_estimator, "joblib.dump is read back"),
        (_write_tensor_list, "holds no dataval estimator"),
        (_write_weights, "holds no dataval estimator"),
        (_write_other_version, "another version of dataval"),
    ],
)
def test_load_rejects_other_files(write, cure, tmp_path):
    write(tmp_path / "file.pt")
    with pytest.raises(ValueError, match="not a file written by dataval.save") as info:
        dataval.load(tmp_path / "file.pt", None, None, None)
    assert cure in str(info.value)
    assert "weights_only=False" not in str(info.value)
    assert info.value.__cause__ is None


def test_load_reports_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        dataval.load(tmp_path / "missing.pt", None, None, None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_state_saved_on_cuda_loads_on_the_cpu(fitted, tmp_path):
    module, X, y, X_test, y_test = fitted
    gpu = dataval.ExactInfluence(device="cuda").fit(module, X, y)
    dataval.save(gpu, tmp_path / "e.pt")
    cpu = dataval.load(tmp_path / "e.pt", module, X, y, device="cpu")
    assert cpu._eigenvectors.device.type == "cpu"
    pd.testing.assert_frame_equal(
        cpu.score(X_test, y_test), gpu.score(X_test, y_test), rtol=1e-4
    )


def test_load_refuses_a_non_finite_state(fitted, tmp_path):
    module, X, y, *_ = fitted
    dataval.save(dataval.ExactInfluence().fit(module, X, y), tmp_path / "e.pt")
    payload = torch.load(tmp_path / "e.pt", weights_only=True)
    payload["state"]["eigenvalues_"][0] = float("nan")
    torch.save(payload, tmp_path / "e.pt")
    with pytest.raises(FloatingPointError, match="eigenvalues_"):
        dataval.load(tmp_path / "e.pt", module, X, y)
