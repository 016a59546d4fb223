"""TracIn against hand-computed gradient dot products."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference import per_row_gradients

from dataval import TracIn


def _checkpoints():
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)
    ).double()
    X = torch.randn(16, 3, dtype=torch.float64)
    y = (X[:, 0] > 0).long()
    states = []
    optimizer = torch.optim.SGD(module.parameters(), lr=0.5)
    for _ in range(3):
        states.append({k: v.clone() for k, v in module.state_dict().items()})
        optimizer.zero_grad()
        F.cross_entropy(module(X), y).backward()
        optimizer.step()
    return module, X, y, states


def _loss(out, y):
    return F.cross_entropy(out, y, reduction="none")


def test_tracin_matches_manual_sum_over_checkpoints():
    module, X, y, states = _checkpoints()
    rates = [0.5, 0.25, 0.1]
    expected = 0
    for state, rate in zip(states, rates):
        module.load_state_dict(state)
        G = per_row_gradients(module, _loss, X, y)
        expected = expected + rate * (G[:4] @ G.T)
    scores = TracIn(checkpoints=states, learning_rates=rates).fit(module, X, y)
    result = scores.score(X[:4], y[:4]).to_numpy()
    np.testing.assert_allclose(result, expected.numpy(), rtol=1e-4, atol=1e-6)


def test_checkpoint_files_are_loaded(tmp_path):
    module, X, y, states = _checkpoints()
    paths = []
    for k, state in enumerate(states):
        paths.append(tmp_path / f"checkpoint{k}.pt")
        torch.save(state, paths[-1])
    from_files = TracIn(checkpoints=paths, learning_rates=0.1).fit(module, X, y)
    from_dicts = TracIn(checkpoints=states, learning_rates=0.1).fit(module, X, y)
    assert from_files.score(X, y).equals(from_dicts.score(X, y))


def test_no_checkpoint_is_the_fitted_model_with_rate_one():
    module, X, y, _ = _checkpoints()
    G = per_row_gradients(module, _loss, X, y)
    tracin = TracIn().fit(module, X, y)
    np.testing.assert_allclose(
        tracin.self_influence().to_numpy(), (G * G).sum(1).numpy(), rtol=1e-5
    )
    assert tracin.n_checkpoints_ == 1


def test_by_layer_sums_over_checkpoints():
    module, X, y, states = _checkpoints()
    tracin = TracIn(checkpoints=states).fit(module, X, y)
    layers = tracin.score(X[:3], y[:3], by_layer=True)
    assert list(layers.index.get_level_values("layer").unique()) == ["0", "2"]
    total = layers.groupby(level="test").sum()
    np.testing.assert_allclose(
        total.to_numpy(), tracin.score(X[:3], y[:3]).to_numpy(), rtol=1e-5, atol=1e-7
    )


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(learning_rates=[0.1, 0.2]), "one per checkpoint"),
        (dict(checkpoints=[{"0.weight": "not a tensor"}]), "state_dict"),
        (dict(checkpoints=[{"nothing": torch.zeros(1)}]), "no entry"),
    ],
)
def test_bad_checkpoints_and_rates(params, match):
    module, X, y, states = _checkpoints()
    params.setdefault("checkpoints", states)
    with pytest.raises((ValueError, TypeError, KeyError), match=match):
        TracIn(**params).fit(module, X, y)
