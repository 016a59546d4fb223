"""LoGraInfluence against K-FAC on projected gradients (float64, tiny models)."""

import numpy as np
import pytest
import torch
from kfac_cases import CASES, build, ids, kronecker_curvature, to_layer_order

from dataval import EKFACInfluence, KFACInfluence, LoGraInfluence

# (curvature, the estimator it reduces to, a factor_dim that projects nothing)
IDENTITY = [(False, KFACInfluence, None), (True, EKFACInfluence, 100)]


def _projection(logra):
    """The dense block-diagonal ``P_out ⊗ P_in`` of a fitted estimator."""
    blocks = []
    for layer in logra._layer_list:
        P_in, P_out = logra.projections_[layer.name]
        d_in, d_out = layer._layer.d_in, layer._layer.d_out
        P_in = torch.eye(d_in, dtype=torch.float64) if P_in is None else P_in
        P_out = torch.eye(d_out, dtype=torch.float64) if P_out is None else P_out
        blocks.append(torch.kron(P_out, P_in))
    return torch.block_diag(*blocks)


# every case once, the curvatures taking turns
ALTERNATING = [(case, IDENTITY[i % 2]) for i, case in enumerate(CASES)]
ALTERNATING_IDS = [f"{case['id']}-{kind[0]}" for case, kind in ALTERNATING]


@pytest.mark.parametrize("case, kind", ALTERNATING, ids=ALTERNATING_IDS)
def test_identity_projections_give_kfac(case, kind):
    curvature, reference, factor_dim = kind
    module, X, y = build(case, n=10)
    params = dict(damping=0.1, fisher="ggn", dtype="float64", batch_size=4)
    expected = reference(**params).fit(module, X, y).score(X[:3], y[:3])
    logra = LoGraInfluence(factor_dim=factor_dim, eigenvalue_correction=curvature)
    logra.set_params(**params).fit(module, X, y)
    assert all(P == (None, None) for P in logra.projections_.values())
    np.testing.assert_allclose(
        logra.score(X[:3], y[:3]), expected, rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("case, kind", ALTERNATING, ids=ALTERNATING_IDS)
def test_scores_are_the_equation_on_projected_full_gradients(case, kind):
    curvature = kind[0]
    module, X, y = build(case, n=10)
    logra = LoGraInfluence(
        factor_dim=2,
        eigenvalue_correction=curvature,
        damping=0.1,
        fisher="ggn",
        dtype="float64",
        batch_size=4,
        random_state=0,
    ).fit(module, X, y)
    fm = logra.model_
    # the full per-sample gradients, projected afterwards: what LoGra never forms
    G = to_layer_order(
        fm, [lay._layer for lay in logra._layer_list], fm.per_sample_grads(X, y)
    )
    P = _projection(logra)
    PG = G @ P.T
    C = kronecker_curvature(logra)
    expected = PG[:3] @ torch.linalg.solve(C, PG.T) / len(X)
    np.testing.assert_allclose(
        logra.score(X[:3], y[:3]).to_numpy(), expected.numpy(), rtol=1e-6, atol=1e-9
    )
    for P_in, P_out in logra.projections_.values():
        for M in (P_in, P_out):
            if M is not None:
                torch.testing.assert_close(M @ M.T, torch.eye(len(M), dtype=M.dtype))


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_kfac_factors_project(case):
    # P (S ⊗ A) P^T = (P_out S P_out^T) ⊗ (P_in A P_in^T)
    module, X, y = build(case, n=10)
    params = dict(fisher="ggn", dtype="float64", batch_size=4)
    kfac = KFACInfluence(**params).fit(module, X, y)
    logra = LoGraInfluence(factor_dim=2, eigenvalue_correction=False, random_state=1)
    logra.set_params(**params).fit(module, X, y)
    P = _projection(logra)
    torch.testing.assert_close(
        kronecker_curvature(logra, damped=False),
        P @ kronecker_curvature(kfac, damped=False) @ P.T,
    )


def test_projections_are_seeded():
    module, X, y = build(CASES[0])
    first, second, other = (
        LoGraInfluence(factor_dim=3, random_state=seed).fit(module, X, y)
        for seed in (0, 0, 1)
    )
    assert torch.equal(first.projections_["0"][1], second.projections_["0"][1])
    assert not torch.equal(first.projections_["0"][1], other.projections_["0"][1])
    # layer "0": 5 inputs (bias included) and 6 outputs; "2": 7 and 3
    assert first.n_params_ == 3 * 3 + 3 * 3
