"""n_jobs: workers over training slices give the serial results, on any backend.

That every estimator's workers give its serial results is a contract test
(test_contract.py); here are a dask cluster and the slicing itself.
"""

import joblib
import numpy as np
import pytest
import torch
from catalogue import CATALOGUE, assert_same_outputs, outputs
from sklearn.linear_model import LogisticRegression

from dataval import ExactInfluence
from dataval._parallel import copy_sharing_tensors, shard_bounds

EXACT = next(entry for entry in CATALOGUE if entry.cls is ExactInfluence)


@pytest.fixture
def fitted(iris_frame):
    X, y, X_test, y_test = iris_frame
    clf = LogisticRegression(max_iter=1000).fit(X, y)
    return clf, X, y, X_test[:12], y_test[:12]


def test_dask_cluster_gives_the_serial_results(fitted):
    distributed = pytest.importorskip("dask.distributed")
    clf, X, y, X_test, y_test = fitted
    estimator = EXACT.make().fit(clf, X, y)
    expected = outputs(EXACT, estimator, X_test, y_test)
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
        got = outputs(EXACT, estimator.set_params(n_jobs=-1), X_test, y_test)
    assert_same_outputs(got, expected, rtol=1e-6, atol=1e-9)


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
