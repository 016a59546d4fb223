"""n_jobs: workers over training slices give the serial results, on any backend."""

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.utils._param_validation import InvalidParameterError
from test_base import _assert_same_state, _module_state, _user_module

import dataval
from dataval._base import BaseInfluence
from dataval._parallel import copy_sharing_tensors, shard_bounds

# every estimator of the package; parameters that some take, making them
# deterministic and their curvature positive semi-definite
COMMON = {
    "random_state": 0,
    "curvature": "ggn",
    "rank": 8,
    "depth": 5,
    "max_iter": 10,
    "projection_dim": 32,
    "factor_dim": 32,
}
# LiSSA draws random batches in every solve; self_influence solves in the
# workers, which draw different ones than a serial run (same distribution)
STOCHASTIC_SOLVES = {"LiSSAInfluence"}
ESTIMATORS = [
    getattr(dataval, name)
    for name in dataval.__all__
    if isinstance(getattr(dataval, name), type)
    and issubclass(getattr(dataval, name), BaseInfluence)
]


def _estimator(cls, **params):
    valid = cls().get_params()
    extra = {k: v for k, v in COMMON.items() if k in valid}
    return cls(batch_size=16, **extra, **params)


def _outputs(estimator, X_test, y_test):
    outputs = {
        "score": estimator.score(X_test, y_test),
        "top_k": estimator.top_k(X_test, y_test, k=5, kind="harmful"),
        "value": estimator.value(X_test, y_test),
    }
    if type(estimator).__name__ not in STOCHASTIC_SOLVES:
        outputs["self_influence"] = estimator.self_influence()
    return outputs


def _assert_same_outputs(expected, got):
    for name, frame in expected.items():
        if isinstance(frame, pd.Series):
            pd.testing.assert_series_equal(got[name], frame, rtol=1e-6, atol=1e-9)
        else:
            pd.testing.assert_frame_equal(got[name], frame, rtol=1e-6, atol=1e-9)


@pytest.fixture
def fitted(iris_frame):
    X, y, X_test, y_test = iris_frame
    clf = LogisticRegression(max_iter=1000).fit(X, y)
    return clf, X, y, X_test[:12], y_test[:12]


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_threads_give_the_serial_results(cls, fitted):
    clf, X, y, X_test, y_test = fitted
    serial = _estimator(cls).fit(clf, X, y)
    expected = _outputs(serial, X_test, y_test)
    # same fitted state, scored by 3 workers (90 rows: slices of 32, 32, 26)
    parallel = serial.set_params(n_jobs=3)
    _assert_same_outputs(expected, _outputs(parallel, X_test, y_test))


def test_dask_cluster_gives_the_serial_results(fitted):
    distributed = pytest.importorskip("dask.distributed")
    clf, X, y, X_test, y_test = fitted
    estimator = _estimator(dataval.ExactInfluence).fit(clf, X, y)
    expected = _outputs(estimator, X_test, y_test)
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=False,
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster),
        joblib.parallel_config(backend="dask"),
    ):
        assert joblib.effective_n_jobs(-1) == 2
        got = _outputs(estimator.set_params(n_jobs=-1), X_test, y_test)
    _assert_same_outputs(expected, got)


# what threads could break: a plain gradient pass, forward-mode AD in the
# solves (CG), forward hooks (K-FAC)
@pytest.mark.parametrize(
    "cls",
    [c for c in ESTIMATORS if c.__name__ in ("TracIn", "CGInfluence", "KFACInfluence")],
    ids=lambda c: c.__name__,
)
def test_threads_leave_the_user_module_unchanged(cls, iris):
    X, y, X_test, y_test = iris
    module = _user_module()
    before = _module_state(module)
    X, X_test = (torch.tensor(a, dtype=torch.float32) for a in (X, X_test[:8]))
    y, y_test = torch.tensor(y), torch.tensor(y_test[:8])
    serial = _estimator(cls).fit(module, X, y)
    expected = serial.top_k(X_test, y_test, k=3)
    parallel = clone(serial).set_params(n_jobs=2).fit(module, X, y)
    pd.testing.assert_frame_equal(parallel.top_k(X_test, y_test, k=3), expected)
    parallel.self_influence()
    _assert_same_state(before, _module_state(module))


@pytest.mark.parametrize(
    "n_rows, batch_size, n_jobs, bounds",
    [
        (90, 16, 3, [(0, 32), (32, 64), (64, 90)]),
        (90, 16, None, [(0, 90)]),
        (10, 16, 4, [(0, 10)]),  # one batch: one worker
        (40, 10, 8, [(0, 10), (10, 20), (20, 30), (30, 40)]),
    ],
)
def test_shards_are_cut_at_batch_boundaries(n_rows, batch_size, n_jobs, bounds):
    assert shard_bounds(n_rows, batch_size, n_jobs) == bounds


def test_worker_copies_share_tensors_but_not_modules():
    module = torch.nn.Sequential(torch.nn.Linear(3, 2))
    data = {"module": module, "X": torch.ones(4, 3), "arrays": [np.zeros(2)]}
    copied = copy_sharing_tensors(data)
    assert copied["module"] is not module
    assert copied["module"][0].weight is module[0].weight
    assert copied["X"] is data["X"] and copied["arrays"][0] is data["arrays"][0]


@pytest.mark.parametrize("n_jobs", [0, 1.5, "two"])
def test_bad_n_jobs(n_jobs, fitted):
    clf, X, y, *_ = fitted
    with pytest.raises(InvalidParameterError, match="n_jobs"):
        dataval.ExactInfluence(n_jobs=n_jobs).fit(clf, X, y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_cuda_and_cpu_agree(cls, fitted):
    clf, X, y, X_test, y_test = fitted
    cpu = _estimator(cls, device="cpu").fit(clf, X, y)
    gpu = _estimator(cls, device="cuda", n_jobs=2).fit(clf, X, y)
    expected, got = _outputs(cpu, X_test, y_test), _outputs(gpu, X_test, y_test)
    for name in ("score", "value", "self_influence"):
        np.testing.assert_allclose(
            got[name].to_numpy(), expected[name].to_numpy(), rtol=1e-3, atol=1e-6
        )
