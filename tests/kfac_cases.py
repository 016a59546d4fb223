"""Tiny float64 models with Linear and Conv2d layers, shared by the K-FAC tests.

Each case is data: a module factory, its inputs and targets. Layer names are
those of ``named_modules``.
"""

import torch
from torch import nn


class Twice(nn.Module):
    """One Linear layer applied twice per forward pass (shared weights)."""

    def __init__(self):
        super().__init__()
        self.shared = nn.Linear(3, 3)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(torch.tanh(self.shared(torch.tanh(self.shared(x)))))


class Normed(nn.Module):
    """A LayerNorm between two Linear layers: its parameters are left out."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(4, 5)
        self.norm = nn.LayerNorm(5)
        self.out = nn.Linear(5, 3)

    def forward(self, x):
        return self.out(torch.tanh(self.norm(self.inp(x))))


class CausalLM(nn.Module):
    """A one-block causal transformer written with nn.Linear projections.

    Tokens ``(B, T)`` -> next-token logits ``(B, T, vocab)``. The embeddings
    are frozen so that the Kronecker-factored layers hold every trainable
    parameter (the dense references then cover the same parameters).
    """

    def __init__(self, vocab=5, d=4, length=4):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.position = nn.Parameter(torch.randn(length, d) / 2)
        self.embed.weight.requires_grad_(False)
        self.position.requires_grad_(False)
        self.query, self.key = nn.Linear(d, d), nn.Linear(d, d)
        self.value, self.out = nn.Linear(d, d), nn.Linear(d, d, bias=False)
        self.head = nn.Linear(d, vocab)

    def forward(self, tokens):
        T = tokens.shape[1]
        h = self.embed(tokens) + self.position[:T]  # (B, T, d)
        logits = self.query(h) @ self.key(h).transpose(1, 2) / h.shape[-1] ** 0.5
        future = torch.ones(T, T, dtype=torch.bool, device=h.device).triu(1)
        attention = logits.masked_fill(future, float("-inf")).softmax(-1)
        h = h + self.out(attention @ self.value(h))
        return self.head(torch.tanh(h))


def _next_tokens(tokens):
    """Targets of a causal LM: the next token, -100 where there is none and on
    the first position (a prompt left out of the loss)."""
    targets = tokens.roll(-1, 1)
    targets[:, -1] = -100
    targets[:, 0] = -100
    return targets


def _classes(n, k):
    return torch.randint(0, k, (n,))


CASES = [
    dict(
        id="mlp",
        module=lambda: nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)),
        X=lambda n: torch.randn(n, 4),
        y=lambda n: _classes(n, 3),
    ),
    dict(
        id="inplace_relu",
        module=lambda: nn.Sequential(
            nn.Linear(4, 6), nn.ReLU(inplace=True), nn.Linear(6, 3)
        ),
        X=lambda n: torch.randn(n, 4),
        y=lambda n: _classes(n, 3),
    ),
    dict(
        id="no_bias",
        module=lambda: nn.Sequential(
            nn.Linear(4, 5, bias=False), nn.Tanh(), nn.Linear(5, 3)
        ),
        X=lambda n: torch.randn(n, 4),
        y=lambda n: _classes(n, 3),
    ),
    dict(
        id="sequence",
        module=lambda: nn.Sequential(
            nn.Linear(3, 4), nn.Tanh(), nn.Flatten(), nn.Linear(20, 2)
        ),
        X=lambda n: torch.randn(n, 5, 3),
        y=lambda n: torch.randn(n, 2),
    ),
    dict(
        id="conv",
        module=lambda: nn.Sequential(
            nn.Conv2d(1, 2, 3, padding=1),
            nn.Tanh(),
            nn.Flatten(),
            nn.Linear(2 * 5 * 5, 3),
        ),
        X=lambda n: torch.randn(n, 1, 5, 5),
        y=lambda n: _classes(n, 3),
    ),
    dict(
        id="conv_strided_reflect",
        module=lambda: nn.Sequential(
            nn.Conv2d(2, 2, (2, 3), stride=2, padding=1, padding_mode="reflect"),
            nn.Tanh(),
            nn.Flatten(),
            nn.Linear(2 * 3 * 3, 1),
        ),
        X=lambda n: torch.randn(n, 2, 4, 5),
        y=lambda n: _classes(n, 2),
    ),
    dict(
        id="causal_lm",
        module=CausalLM,
        X=lambda n: torch.randint(0, 5, (n, 4)),
        y=lambda n: None,
    ),
    dict(
        id="shared",
        module=Twice,
        X=lambda n: torch.randn(n, 3),
        y=lambda n: _classes(n, 2),
    ),
]


def build(case, n=12, seed=0):
    """``(module, X, y)`` in float64, seeded."""
    torch.manual_seed(seed)
    module = case["module"]().double()
    X = case["X"](n)
    # token sequences: the targets are the next tokens
    y = _next_tokens(X) if X.dtype == torch.int64 else case["y"](n)
    X = X.double() if X.is_floating_point() else X
    return module, X, y.double() if y.is_floating_point() else y


def ids(cases):
    return [case["id"] for case in cases]


def to_layer_order(fm, layers, G):
    """Rows of model-order gradients ``G`` (m, p) in the layers' matrix order.

    Each layer's block is its ``(d_out, d_in)`` gradient matrix, bias last,
    flattened row by row: the vectors the Kronecker-factored estimators use.
    """
    pieces = dict(zip(fm.names, torch.split(G, fm.sizes, 1)))
    blocks = []
    for layer in layers:
        columns = [
            pieces[name].reshape(len(G), layer.d_out, -1)
            for name in layer.parameter_names
        ]
        blocks.append(torch.cat(columns, 2).reshape(len(G), -1))
    return torch.cat(blocks, 1)


def kronecker_curvature(estimator, damped=True):
    """The dense block-diagonal matrix a fitted (E)K-FAC estimator inverts."""
    blocks = []
    for name in estimator.layers_:
        Q_S, Q_A = estimator._bases[name]
        Q = torch.kron(Q_S, Q_A)
        eigenvalues = estimator.eigenvalues_[name].reshape(-1)
        if damped:
            eigenvalues = eigenvalues + estimator._l2[name] + estimator.damping_
        blocks.append(Q @ torch.diag(eigenvalues) @ Q.T)
    return torch.block_diag(*blocks)


def case(name):
    """The case with id ``name``."""
    return next(c for c in CASES if c["id"] == name)
