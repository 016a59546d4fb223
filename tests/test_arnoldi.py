import numpy as np
import pytest
import torch
from iterative_cases import (
    CASE_IDS,
    CASES,
    assert_close,
    build,
    exact_scores,
    fit_scores,
)

from dataval import ArnoldiInfluence, ExactInfluence
from dataval._numerics.spectral import Eigenbasis
from dataval.exceptions import NotPositiveDefiniteWarning


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("curvature", ["hessian", "ggn"])
def test_full_rank_matches_exact(case, curvature):
    model, X, y = build(case)
    p = ExactInfluence(damping=1.0).fit(model, X, y).n_params_
    arnoldi = ArnoldiInfluence(
        rank=p,
        damping=case["damping"],
        curvature=curvature,
        dtype="float64",
        random_state=0,
    )
    reference = exact_scores(case, curvature=curvature)
    assert_close(fit_scores(arnoldi, case), reference, rtol=1e-7)


@pytest.mark.parametrize("complement", ["ignore", "damping"])
def test_low_rank_matches_the_truncated_dense_inverse(complement):
    case = CASES[1]
    model, X, y = build(case)
    damping, rank = case["damping"], 6
    exact = ExactInfluence(damping=damping).fit(model, X, y)
    # the dense curvature from the exact estimator's Cholesky factor
    assert exact._pivots is None
    L = exact._factor
    H = L @ L.T - damping * torch.eye(len(L), dtype=L.dtype)
    eigenvalues, vectors = torch.linalg.eigh(H)
    dropped = eigenvalues.abs().argsort(descending=True)[rank:]
    # the dense inverse with the dropped eigenvalues at inf (ignored) or 0
    eigenvalues[dropped] = torch.inf if complement == "ignore" else 0.0
    exact._curvature = lambda: Eigenbasis(vectors, 1 / (eigenvalues + damping))
    arnoldi = ArnoldiInfluence(
        rank=rank,
        complement=complement,
        damping=damping,
        dtype="float64",
        random_state=0,
    )
    assert_close(
        fit_scores(arnoldi, case), exact.score(X[:5], y[:5]).to_numpy(), rtol=1e-6
    )


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_top_eigenpairs_match_the_dense_ones(case):
    model, X, y = build(case)
    exact = ExactInfluence(damping=1.0).fit(model, X, y)
    arnoldi = ArnoldiInfluence(rank=5, dtype="float64", random_state=0)
    arnoldi.fit(model, X, y)
    dense = exact.eigenvalues_[exact.eigenvalues_.abs().argsort(descending=True)]
    np.testing.assert_allclose(arnoldi.eigenvalues_[:3], dense[:3], rtol=1e-6)
    U = arnoldi.eigenvectors_
    assert U.shape == (exact.n_params_, 5)
    np.testing.assert_allclose(U.T @ U, np.eye(5), atol=1e-10)


def test_warns_on_negative_eigenvalues():
    case = CASES[0]  # smallest Hessian eigenvalue about -0.07
    model, X, y = build(case)
    p = ExactInfluence(damping=1.0).fit(model, X, y).n_params_
    with pytest.warns(NotPositiveDefiniteWarning, match="damping=0.*curvature='ggn'"):
        ArnoldiInfluence(
            rank=p,
            damping=0.0,
            curvature="hessian",
            complement="ignore",
            random_state=0,
        ).fit(model, X, y)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"rank": 10_000}, "rank=10000 exceeds"),
        ({"rank": 8, "max_iter": 4}, "max_iter=4"),
        ({"complement": "damping", "damping": 0.0}, "complement='damping'"),
    ],
)
def test_rank_and_n_iter_must_fit_the_model(params, message):
    model, X, y = build(CASES[0])
    with pytest.raises(ValueError, match=message):
        ArnoldiInfluence(**params).fit(model, X, y)
