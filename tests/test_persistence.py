"""Fitted estimators survive pickle, joblib and dataval.save / dataval.load."""

import io
import pickle

import joblib
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression
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
    assert set(payload["state"]) == {"eigenvalues_", "_eigenvectors"}


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


def test_load_rejects_other_files(tmp_path):
    torch.save({"weight": torch.ones(2)}, tmp_path / "weights.pt")
    with pytest.raises(ValueError, match="not a file written by dataval.save"):
        dataval.load(tmp_path / "weights.pt", None, None, None)
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
