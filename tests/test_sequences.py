"""Sequence models: token tensors, per-position targets with -100, attention.

The exact Kronecker checks on the tiny causal transformer (scores are the
equation with the dense Kronecker blocks, EK-FAC's eigenvalues are the
Gauss-Newton diagonal in the Kronecker basis) run as the ``causal_lm`` case of
``kfac_cases``; here: the loss, the measurements and the approximation.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from kfac_cases import CausalLM, build, case
from reference import dense_curvature, per_row_gradients
from torch import nn

from dataval import (
    EKFACInfluence,
    ExactInfluence,
    KFACInfluence,
    LoGraInfluence,
    TracIn,
)
from dataval._estimators.kronecker.fisher import output_vectors

DAMPING = 0.05


def _token_losses(out, y):
    # (B, T, C) logits, (B, T) targets: cross-entropy summed over kept positions
    losses = F.cross_entropy(out.transpose(1, 2), y, reduction="none")
    return (losses * (y != -100)).sum(1)


def _completion_log_prob(out, y):
    log_p = out.log_softmax(-1).gather(2, y.clamp(min=0)[..., None])[..., 0]
    return (log_p * (y != -100)).sum(1)


def _mean_row_pearson(a, b):
    return np.mean(
        [np.corrcoef(x, z)[0, 1] for x, z in zip(a.to_numpy(), b.to_numpy())]
    )


def test_auto_loss_sums_token_cross_entropy_over_kept_positions():
    module, X, y = build(case("causal_lm"), n=6)
    est = ExactInfluence(curvature="ggn").fit(module, X, y)
    with torch.no_grad():
        expected = _token_losses(module(X), y)
    X_b, y_b = est.model_.prepare(X, y)
    torch.testing.assert_close(est.model_.losses(X_b, y_b), expected)
    with pytest.raises(ValueError, match=r"0\.\.4 \(or -100 for a position left"):
        est.score(X[:2], torch.full((2, 4), -5))
    with pytest.raises(ValueError, match="rows of shape"):
        est.score(X[:2], y[:2, :3])


def test_classes_first_layout_and_an_ambiguous_one():
    torch.manual_seed(0)
    X = torch.randint(0, 5, (6, 4))
    y = X.roll(-1, 1)

    class ClassesFirst(CausalLM):
        def forward(self, tokens):
            return super().forward(tokens).transpose(1, 2)  # (B, C, T)

    first = ExactInfluence(curvature="ggn").fit(ClassesFirst().double(), X, y)
    last = ExactInfluence(curvature="ggn").fit(CausalLM().double(), X, y)
    assert repr(first.model_.adapted.loss) == "CrossEntropyLoss()"
    assert repr(last.model_.adapted.loss) == "CrossEntropyLoss(class_dim=-1)"
    # T == C: (B, 5, 5) logits fit both layouts
    square = CausalLM(vocab=5, length=5).double()
    X5 = torch.randint(0, 5, (6, 5))
    with pytest.raises(ValueError, match="cannot tell where the classes are"):
        ExactInfluence().fit(square, X5, X5)


@pytest.mark.parametrize(
    "measurement, f",
    [("loss", _token_losses), ("log_prob", _completion_log_prob)],
)
def test_sequence_measurements_match_the_dense_reference(measurement, f):
    module, X, y = build(case("causal_lm"), n=10)
    # the query measures only its completion: the last two positions
    y_test = y[:3].clone()
    y_test[:, :2] = -100
    H = dense_curvature(module, _token_losses, X, y, "ggn")
    G_train = per_row_gradients(module, _token_losses, X, y)
    G_test = per_row_gradients(module, f, X[:3], y_test)
    damped = H + DAMPING * torch.eye(len(H), dtype=H.dtype)
    expected = (G_test @ torch.linalg.solve(damped, G_train.T) / len(X)).numpy()
    est = ExactInfluence(damping=DAMPING, measurement=measurement, curvature="ggn")
    scores = est.set_params(dtype="float64").fit(module, X, y).score(X[:3], y_test)
    np.testing.assert_allclose(scores.to_numpy(), expected, rtol=1e-6, atol=1e-9)
    tracin = TracIn(measurement=measurement, dtype="float64").fit(module, X, y)
    np.testing.assert_allclose(
        tracin.score(X[:3], y_test).to_numpy(),
        (G_test @ G_train.T).numpy(),
        rtol=1e-6,
        atol=1e-9,
    )


def test_true_fisher_samples_no_target_where_the_position_is_left_out():
    module, X, y = build(case("causal_lm"), n=6)
    est = KFACInfluence(random_state=0).fit(module, X, y)
    generator = torch.Generator().manual_seed(0)
    vectors = output_vectors("true", est.model_.adapted.loss, y, generator)
    with torch.no_grad():
        v = vectors(module(X))[0]  # (B, T, C)
    assert bool((v[y == -100] == 0).all())
    assert bool((v[y != -100].abs().sum(-1) > 0).all())


@pytest.mark.parametrize("estimator", [EKFACInfluence, KFACInfluence])
def test_kronecker_approximates_the_exact_ggn_influence_on_a_transformer(estimator):
    # per-sample gradients sum over positions: K-FAC's A (x) S is no longer the
    # Gauss-Newton block, so this is an approximation (measured mean row
    # correlations 0.90-0.96 over seeds 0-2 of this untrained model)
    module, X, y = build(case("causal_lm"), n=40)
    exact = ExactInfluence(damping=DAMPING, curvature="ggn").fit(module, X, y)
    reference = exact.score(X[:8], y[:8])
    est = estimator(damping=DAMPING, dtype="float64", random_state=0).fit(module, X, y)
    full = est.score(X[:8], y[:8])
    assert _mean_row_pearson(full, reference) > 0.8
    # a layer's query gradient sum_l g_l a_l^T has rank <= T = 4 positions
    # (attention carries gradient to positions without a target)
    four = est.set_params(query_rank=4).score(X[:8], y[:8])
    np.testing.assert_allclose(four.to_numpy(), full.to_numpy(), rtol=1e-6, atol=1e-9)
    one = est.set_params(query_rank=1).score(X[:8], y[:8])
    assert not np.allclose(one.to_numpy(), full.to_numpy())
    # rank 1 keeps the largest singular direction (measured 0.92-0.95)
    assert _mean_row_pearson(one, full) > 0.8


def test_logra_over_the_transformer_layers():
    module, X, y = build(case("causal_lm"), n=12)
    ekfac = EKFACInfluence(dtype="float64", random_state=0).fit(module, X, y)
    logra = LoGraInfluence(factor_dim=None, dtype="float64", random_state=0)
    np.testing.assert_allclose(
        logra.fit(module, X, y).score(X[:3], y[:3]).to_numpy(),
        ekfac.score(X[:3], y[:3]).to_numpy(),
        rtol=1e-6,
        atol=1e-9,
    )
    small = LoGraInfluence(factor_dim=2, random_state=0).fit(module, X, y)
    assert small.layers_ == ["query", "key", "value", "out", "head"]
    assert small.score(X[:3], y[:3]).shape == (3, 12)


class FusedAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(5, 4)
        self.attention = nn.MultiheadAttention(4, 1, batch_first=True)
        self.head = nn.Linear(4, 5)

    def forward(self, tokens):
        h = self.embed(tokens)
        future = torch.ones(tokens.shape[1], tokens.shape[1], dtype=torch.bool)
        h = h + self.attention(h, h, h, attn_mask=future.triu(1))[0]
        return self.head(h)


def test_fused_attention_is_refused_clearly_by_kronecker_estimators():
    torch.manual_seed(0)
    module = FusedAttention().double()
    X = torch.randint(0, 5, (8, 4))
    y = X.roll(-1, 1)
    with pytest.raises(ValueError, match="in_proj_weight.*pass layers="):
        EKFACInfluence().fit(module, X, y)
    with pytest.raises(ValueError, match="output projection of the torch.nn.Multi"):
        EKFACInfluence(layers=["attention.out_proj"]).fit(module, X, y)
    held_fixed = EKFACInfluence(layers=["head"], random_state=0).fit(module, X, y)
    assert held_fixed.score(X[:2], y[:2]).shape == (2, 8)
    # flat-gradient estimators differentiate the fused parameters too
    assert TracIn().fit(module, X, y).n_params_ == sum(
        p.numel() for p in module.parameters()
    )
