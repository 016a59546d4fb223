"""EKFACInfluence: corrected eigenvalues are the Gauss-Newton diagonal."""

import pytest
import torch
from kfac_cases import CASES, build, case, ids, to_layer_order

import dataval
from dataval import EKFACInfluence, ExactInfluence, KFACInfluence
from dataval._base import BaseInfluence


def _ggn_in_layer_order(est, module, X, y):
    exact = ExactInfluence(damping=1.0, curvature="ggn").fit(module, X, y)
    assert exact._pivots is None  # a Cholesky factor L: damping=1 on a PSD matrix
    identity = torch.eye(exact.n_params_, dtype=torch.float64)
    P = to_layer_order(exact.model_, est._layer_list, identity)
    ggn = exact._factor @ exact._factor.T - exact.damping_ * identity
    return P.T @ ggn @ P


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_eigenvalues_are_the_ggn_diagonal_in_the_kronecker_basis(case):
    module, X, y = build(case, n=10)
    est = EKFACInfluence(fisher="ggn", dtype="float64", batch_size=4).fit(module, X, y)
    H = _ggn_in_layer_order(est, module, X, y)
    start = 0
    for layer in est._layer_list:
        block = H[start : start + layer.size, start : start + layer.size]
        Q_S, Q_A = est._bases[layer.name]
        Q = torch.kron(Q_S, Q_A)
        expected = torch.diagonal(Q.T @ block @ Q).reshape(layer.d_out, layer.d_in)
        torch.testing.assert_close(est.eigenvalues_[layer.name], expected)
        start += layer.size


@pytest.mark.parametrize("keep", [True, False])
def test_second_pass_when_signals_do_not_fit(keep):
    module, X, y = build(case("conv"), n=10)
    reference = EKFACInfluence(fisher="ggn", dtype="float64").fit(module, X, y)
    # a working memory of ~0 bytes: nothing is kept, and the eigenvalue
    # correction forms one row's rotated gradients at a time
    with dataval.config_context(working_memory=1.0 if keep else 1e-9):
        est = EKFACInfluence(fisher="ggn", dtype="float64", batch_size=3)
        est.fit(module, X, y)
    for name, eigenvalues in reference.eigenvalues_.items():
        torch.testing.assert_close(est.eigenvalues_[name], eigenvalues)


def test_same_eigenbases_as_kfac():
    module, X, y = build(case("mlp"), n=30)
    kfac = KFACInfluence(fisher="ggn", dtype="float64").fit(module, X, y)
    ekfac = EKFACInfluence(fisher="ggn", dtype="float64").fit(module, X, y)
    assert issubclass(EKFACInfluence, KFACInfluence)
    assert issubclass(EKFACInfluence, BaseInfluence)
    for name in kfac.layers_:
        for ours, theirs in zip(ekfac._bases[name], kfac._bases[name]):
            torch.testing.assert_close(ours, theirs)
