"""Shared fixtures: tiny data sets and models."""

import numpy as np
import pandas as pd
import pytest
import torch
from catalogue import CATALOGUE
from sklearn.datasets import load_iris, make_regression
from sklearn.preprocessing import StandardScaler

# The test models are tiny: thread start-up costs more than it saves, and on a
# shared 2-core machine two threads per process oversubscribe (3-4x slower).
torch.set_num_threads(1)


def pytest_runtest_setup(item):
    if item.get_closest_marker("cuda") and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")


@pytest.fixture(params=CATALOGUE, ids=lambda entry: entry.id)
def entry(request):
    """Each influence estimator of the catalogue in turn (catalogue.py)."""
    return request.param


def _matmul_supported(dtype):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ones = torch.ones(2, 2, dtype=getattr(torch, dtype), device=device)
    try:
        ones @ ones
    except RuntimeError:
        return False
    return True


@pytest.fixture
def matmul_supported():
    """``supported(dtype)``: whether torch multiplies such matrices here.

    torch 2.1 has no float16 matrix products on the CPU; dataval refuses such a
    ``dtype`` at ``fit`` with a ValueError.
    """
    return _matmul_supported


@pytest.fixture
def iris():
    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    rows = np.random.RandomState(0).permutation(len(X))
    return X[rows[:90]], y[rows[:90]], X[rows[90:]], y[rows[90:]]


@pytest.fixture
def iris_frame(iris):
    X, y, X_test, y_test = iris
    columns = ["a", "b", "c", "d"]
    X = pd.DataFrame(X, columns=columns, index=[f"row{i}" for i in range(len(X))])
    X_test = pd.DataFrame(X_test, columns=columns, index=100 + np.arange(len(X_test)))
    return X, pd.Series(y, index=X.index), X_test, pd.Series(y_test, index=X_test.index)


@pytest.fixture
def regression():
    X, y = make_regression(n_samples=60, n_features=4, noise=5.0, random_state=0)
    return X[:45], y[:45] / 50, X[45:], y[45:] / 50


def tiny_mlp(n_in=4, n_hidden=6, n_out=3, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(n_in, n_hidden),
        torch.nn.Tanh(),
        torch.nn.Linear(n_hidden, n_out),
    ).to(dtype)


def train(module, X, y, loss_fn, steps=150, lr=0.05, weight_decay=0.0):
    """A few full-batch Adam steps so that the module is near a minimum."""
    optimizer = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(module(X), y).backward()
        optimizer.step()
    return module


@pytest.fixture
def trained_mlp(iris):
    X, y, X_test, y_test = iris
    X, X_test = torch.tensor(X), torch.tensor(X_test)
    y, y_test = torch.tensor(y), torch.tensor(y_test)
    module = train(tiny_mlp(), X, y, torch.nn.functional.cross_entropy)
    return module, X, y, X_test, y_test


@pytest.fixture
def confident_net():
    """``(net, X, y)``: a net that predicts its own labels with probability ~1 - 1e-4.

    ``softmax(z) - y`` of such rows rounds to 0 in bfloat16: the 16-bit tests.
    """
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)
    )
    X = torch.randn(60, 4)
    with torch.no_grad():
        net[2].weight *= 30
    return net, X, net(X).argmax(1)
