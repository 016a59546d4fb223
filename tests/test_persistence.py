"""Fitted estimators survive pickle, joblib and dataval.save / dataval.load.

That every estimator's round trips give its scores is a contract test
(test_contract.py); here are the file format and the checks of dataval.load.
"""

import io

import joblib
import pandas as pd
import pytest
import torch
from catalogue import CATALOGUE, checkpoints, frames, trained_user_module
from sklearn.linear_model import LogisticRegression
from user_model import assert_unchanged, fingerprint

import dataval


@pytest.fixture
def fitted(trained_mlp):
    module, X, y, X_test, y_test = trained_mlp
    return module, X, y, X_test[:10], y_test[:10]


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
        "_factor",
        "_pivots",
    }


@pytest.mark.filterwarnings("ignore:depth=5 is short")
def test_fitting_and_scoring_write_nothing(tmp_path, monkeypatch):
    X, y, X_test, y_test = frames()
    module, states = trained_user_module(), checkpoints()
    monkeypatch.chdir(tmp_path)
    for entry in CATALOGUE:
        estimator = entry.make(states, verbose=1).fit(module, X, y)
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
    before = fingerprint(module)
    dataval.save(dataval.KFACInfluence().fit(module, X, y), tmp_path / "e.pt")
    with pytest.raises(ValueError, match="differ from the training data"):
        dataval.load(tmp_path / "e.pt", *change(module, X, y))
    assert_unchanged(before, module)


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


@pytest.mark.cuda
def test_state_saved_on_cuda_loads_on_the_cpu(fitted, tmp_path):
    module, X, y, X_test, y_test = fitted
    gpu = dataval.ExactInfluence(device="cuda").fit(module, X, y)
    dataval.save(gpu, tmp_path / "e.pt")
    cpu = dataval.load(tmp_path / "e.pt", module, X, y, device="cpu")
    assert cpu._factor.device.type == "cpu"
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
