"""Hooks capture the inputs and output gradients that make per-sample gradients."""

import pytest
import torch
from kfac_cases import CASES, build, ids, to_layer_order
from torch import nn

from dataval._adapters import adapt_model
from dataval._estimators.kronecker.fisher import output_vectors
from dataval._functional import FunctionalModel
from dataval._layers import (
    capture,
    diagonal_scores,
    flush_denormals,
    low_rank_pair_scores,
    pair_scores,
    per_sample_gradients,
    select_layers,
)


def _functional(module, X, y):
    adapted = adapt_model(module, "auto", X, y)
    return FunctionalModel(adapted, torch.device("cpu"), torch.float64)


def _hook_state(module):
    return [
        (
            len(m._forward_hooks),
            len(m._forward_pre_hooks),
            len(m._backward_hooks),
            m.training,
        )
        for m in module.modules()
    ]


def _signals(case):
    """``(fm, layers, X, y, signals)`` with the loss gradients at the labels."""
    module, X, y = build(case)
    fm = _functional(module, X, y)
    layers = select_layers(module)
    vectors = output_vectors("empirical", fm.adapted.loss, y, None)
    return fm, layers, X, y, capture(fm, layers, X, vectors)


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_per_sample_gradients_match_autograd(case):
    fm, layers, X, y, signals = _signals(case)
    ours = torch.cat([per_sample_gradients(a, g[0]) for a, g in signals.values()], 1)
    expected = to_layer_order(fm, layers, fm.per_sample_grads(X, y))
    torch.testing.assert_close(ours, expected)


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_pair_scores_paths_agree(case):
    _, layers, X, _, signals = _signals(case)
    torch.manual_seed(1)
    for layer, (a, g) in zip(layers, signals.values()):
        g = g[0]
        G = per_sample_gradients(a, g)
        # few and many queries exercise both the factored and the flat path
        for m in (1, 40):
            Q = torch.randn(m, layer.d_out, layer.d_in, dtype=torch.float64)
            expected = Q.reshape(m, -1) @ G.T
            torch.testing.assert_close(pair_scores(Q, a, g), expected)
            # a block of one query (one row's width), the rest, all at once
            for block_bytes in (1, 3 * len(X) * max(layer.d_out, 8) * 8, 2**40):
                torch.testing.assert_close(
                    pair_scores(Q, a, g, block_bytes=block_bytes), expected
                )
        U, s, Vh = torch.linalg.svd(Q, full_matrices=False)
        torch.testing.assert_close(
            low_rank_pair_scores(U * s[:, None], Vh.mT, a, g), Q.reshape(m, -1) @ G.T
        )
        Qb = torch.randn(len(X), layer.d_out, layer.d_in, dtype=torch.float64)
        torch.testing.assert_close(
            diagonal_scores(Qb, a, g), (Qb.reshape(len(X), -1) * G).sum(1)
        )


def test_hooks_removed_even_on_error():
    class Failing(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 2)

        def forward(self, x):
            if torch.is_grad_enabled():
                raise RuntimeError("boom")
            return self.linear(x)

    module = Failing().double()
    X, y = torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 1, 0, 1])
    fm = _functional(module, X, y)
    before = _hook_state(module)
    with pytest.raises(RuntimeError, match="boom"):
        capture(fm, select_layers(module), X, lambda output: output[None])
    assert _hook_state(module) == before


def test_unused_layer_raises():
    class Spare(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.spare = nn.Linear(3, 2), nn.Linear(3, 3)

        def forward(self, x):
            return self.used(x)

    module = Spare().double()
    X, y = torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 1, 0, 1])
    fm = _functional(module, X, y)
    with pytest.raises(ValueError, match=r"\['spare'\] are not called"):
        capture(fm, select_layers(module), X, lambda output: output[None])


SELECTION_ERRORS = [
    (["nope"], "'nope', which is not a submodule"),
    (["1"], "'1', which is a Tanh"),
    ([], "layers is empty"),
]


@pytest.mark.parametrize(("names", "message"), SELECTION_ERRORS)
def test_select_layers_errors(names, message):
    module = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=message):
        select_layers(module, names)


def test_select_layers_skips_frozen_and_grouped():
    module = nn.Sequential(
        nn.Conv2d(2, 2, 3, groups=2), nn.Linear(3, 3), nn.Linear(3, 2), nn.LayerNorm(2)
    )
    module[1].weight.requires_grad_(False)
    module[2].bias.requires_grad_(False)
    layers = select_layers(module)
    assert [layer.name for layer in layers] == ["2"]
    assert not layers[0].has_bias and layers[0].d_in == 3
    with pytest.raises(ValueError, match="frozen weight"):
        select_layers(module, ["1"])
    with pytest.raises(ValueError, match="no torch.nn.Linear"):
        select_layers(nn.Sequential(nn.LayerNorm(3)))


@pytest.mark.parametrize(
    "dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16]
)
def test_flush_denormals_zeroes_exactly_the_subnormals(dtype):
    info = torch.finfo(dtype)
    special = [0.0, -0.0, info.tiny, -info.tiny, info.max, 1.0, -2.5]
    special += [info.tiny / 2, -info.tiny / 4, info.smallest_normal / 1024]
    x = torch.tensor(special, dtype=torch.float64).to(dtype)
    x = torch.cat(
        [x, torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=dtype)]
    )
    x = torch.cat([x, (torch.randn(200, dtype=torch.float64) * info.tiny).to(dtype)])
    subnormal = (x != 0) & (x.abs() < info.tiny)
    assert subnormal.any()
    expected = torch.where(subnormal, torch.zeros_like(x), x)
    out = flush_denormals(x)
    assert out is x
    torch.testing.assert_close(x, expected, rtol=0, atol=0, equal_nan=True)
    # a large block goes in pieces; a strided view in one
    block = (torch.randn(3, 2**17 + 5, dtype=torch.float64) * info.tiny).to(dtype)
    expected = torch.where(block.abs() < info.tiny, torch.zeros_like(block), block)
    view = block.clone().T
    torch.testing.assert_close(flush_denormals(block), expected, rtol=0, atol=0)
    torch.testing.assert_close(flush_denormals(view), expected.T, rtol=0, atol=0)
