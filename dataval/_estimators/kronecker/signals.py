"""The Kronecker family's featurizer: per-layer signals ``(a, g)``.

The per-sample gradient of a Linear layer is ``g a^T`` (a sum of such terms
over positions with sequence dims). Keeping a row as its layer signals — the
inputs ``a`` (with a ``1`` appended for the bias) and the output gradients
``g`` — instead of the flat ``d_out x d_in`` gradient makes every score a
matrix product over (rows x width) matrices (:mod:`dataval._layers`).

Scoring works in each layer's Kronecker eigenbasis: the training and query
signals are rotated (``a Q_A``, ``g Q_S``), which costs O(d^2) per row, and the
inverse curvature is then a division by the damped eigenvalues. Rotating the
preconditioned query gradients back (``Q_S R Q_A^T``) would cost
O(d_out d_in (d_out + d_in)) per query row, more than scoring it against
thousands of training rows; inner products are the same in either basis.
"""

import torch

from ..._core.parts import Featurizer
from ..._layers import (
    capture,
    diagonal_scores,
    flush_denormals,
    low_rank_pair_scores,
    pair_layout,
    pair_scores,
)
from ..._numerics.seeding import torch_generator
from ..._numerics.spectral import kronecker_apply, one_thread
from .fisher import output_vectors


class LayerBatch:
    """Layer signals ``{name: (a (B, L, d_in), g (B, L, d_out))}`` of B rows."""

    def __init__(self, signals):
        self.signals = signals

    def __len__(self):
        return next(iter(self.signals.values()))[0].shape[0]


class LayerQueries:
    """Preconditioned queries per layer, ``{name: (m, d_out, d_in)}`` matrices
    or, with ``query_rank``, ``{name: (U (m, d_out, r), V (m, d_in, r))}``."""

    def __init__(self, factors, n_rows):
        self.factors = factors
        self.n_rows = n_rows

    def __len__(self):
        return self.n_rows


def capture_signals(model, layers, X, vectors, dtype):
    """:func:`capture`'s layer signals of a batch, in ``dtype``.

    The passes run in the model's dtype (16-bit in mixed precision); the
    factors, eigenvalues and scores accumulate in float32 or wider.
    """
    signals = capture(model, layers, X, vectors)
    return {name: (a.to(dtype), g.to(dtype)) for name, (a, g) in signals.items()}


def rotate(signals, bases, flush=True):
    """Signals ``(a Q_A, g Q_S)`` in each layer's Kronecker eigenbasis.

    The output gradients of confidently predicted rows are tiny, and so are
    their rotations: unless ``flush=False`` (for a caller that flushes what
    it computes from them), their subnormal entries are set to zero. The
    inputs (activations) have none to speak of.
    """
    rotated = {}
    for name, (a, g) in signals.items():
        Q_S, Q_A = bases[name]
        g = g @ Q_S
        rotated[name] = (a @ Q_A, flush_denormals(g) if flush else g)
    return rotated


def flatten(signals):
    """Flat per-sample gradients (B, p) from ``{name: (a, g)}`` layer signals.

    Each layer's ``g^T a`` (summed over positions) is written straight into
    its column block (no per-layer result to concatenate: half the time on
    the 670k MLP's test rows).
    """
    first = next(iter(signals.values()))[0]
    widths = [a.shape[2] * g.shape[2] for a, g in signals.values()]
    out = first.new_empty(first.shape[0], sum(widths))
    start = 0
    for (a, g), width in zip(signals.values(), widths):
        block = out[:, start : start + width].view(len(out), g.shape[2], a.shape[2])
        torch.bmm(g.transpose(1, 2), a, out=block)
        start += width
    return out


def apply_spectral(G, layers, slices, bases, damped, function):
    """Rows of ``G`` (m, p), in the parameters' basis, times ``function`` of
    each layer's damped Kronecker curvature.

    ``damped``: ``{name: (d_out, d_in)}`` damped eigenvalues; ``function``
    maps them to the matrix function's values in the Kronecker eigenbasis.
    """
    out = torch.empty_like(G)
    for layer, sl in zip(layers, slices):
        V = G[:, sl].reshape(-1, layer.d_out, layer.d_in)
        Q_S, Q_A = bases[layer.name]
        scale = function(damped[layer.name])
        out[:, sl] = kronecker_apply(V, Q_S, Q_A, scale).reshape(len(G), -1)
    return out


def low_rank_factors(matrices, rank, oversample=8, n_iter=1):
    """``(U, V)`` with ``U V^T`` a rank-``rank`` truncated SVD of each matrix.

    ``matrices`` (m, d_out, d_in); returns ``U`` (m, d_out, r) and ``V``
    (m, d_in, r), each stored so that :func:`low_rank_pair_scores` reads it
    without a copy. A randomized range finder with ``n_iter`` power
    iterations (Halko et al., 2011) on ``rank + oversample`` columns, then the
    exact truncated SVD within that range through the eigendecomposition of a
    small Gram matrix in float64: it costs ``O(d_out d_in (rank +
    oversample))`` per matrix. No batched SVD or QR: on a loaded two-core CPU
    they ran many times slower with two threads than with one. Each
    matrix is scaled to unit norm first: the products of a confidently
    predicted row's tiny entries would otherwise be subnormal numbers, which
    CPUs compute with slowly.
    """
    m, d_out, d_in = matrices.shape
    q = min(rank + oversample, d_out, d_in)
    norms = torch.linalg.matrix_norm(matrices).clamp(
        min=torch.finfo(matrices.dtype).tiny
    )
    M = matrices / norms[:, None, None]
    generator = torch_generator(0, matrices.device)
    probe = torch.randn(d_in, q, generator=generator, device=matrices.device)
    basis = _orthonormal(M @ probe.to(M.dtype))  # (m, d_out, q)
    for _ in range(n_iter):
        basis = _orthonormal(M.mT @ basis)  # (m, d_in, q)
        basis = _orthonormal(M @ basis)
    small = basis.mT @ M  # (m, q, d_in): M = basis @ small within the range
    gram = small.double() @ small.double().mT
    # the top ``rank`` eigenvectors (ascending order: the last columns)
    with one_thread(gram.device):
        top = torch.linalg.eigh(gram).eigenvectors[..., -rank:].to(M.dtype)
    U = basis @ (top * norms[:, None, None].to(M.dtype))
    V = small.mT @ top
    # stored (d, m, r): the pair product reads all queries' columns at once
    return tuple(
        flush_denormals(X.permute(1, 0, 2).contiguous()).permute(1, 0, 2)
        for X in (U, V)
    )


def _orthonormal(Y):
    """Orthonormal columns spanning each ``Y`` (m, d, q): Cholesky QR in float64.

    A shift of the Gram matrix by ``Y``'s rounding error keeps rank-deficient
    ``Y`` factorable; their surplus columns come out near zero (about the
    square root of that error), which adds almost nothing to the projections
    they are used for.
    """
    Y64 = Y.double()
    gram = Y64.mT @ Y64
    mean = gram.diagonal(dim1=-2, dim2=-1).mean(-1)
    shift = torch.finfo(Y.dtype).eps * mean.clamp(min=torch.finfo(Y.dtype).tiny)
    gram.diagonal(dim1=-2, dim2=-1).add_(shift[:, None])
    # Y L^{-T}: the (q, q) inverse once, then one product in Y's dtype
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    with one_thread(gram.device):
        L = torch.linalg.cholesky_ex(gram).L
        inverse = torch.linalg.solve_triangular(L.mT, eye, upper=True)
    return Y @ inverse.to(Y.dtype)


class LayerSignals(Featurizer):
    """Rows as per-layer signals, rotated into the Kronecker eigenbases.

    Parameters
    ----------
    model : FunctionalModel
    layers : list of Layer
        The layers captured; ``slices`` their blocks of the flat gradient.
    slices : list of slice
    dtype : torch.dtype
    bases : dict or None
        ``{name: (Q_S, Q_A)}``; ``None`` keeps the parameters' own basis.
    positions : dict
        Mean positions per row of each layer (sequence dims), for the cache.
    query_rank : int or None
        Keep a rank-``query_rank`` SVD of each preconditioned query matrix.
    """

    def __init__(
        self, model, layers, slices, dtype, bases=None, positions=None, query_rank=None
    ):
        self.model, self.layer_list, self.slices = model, layers, slices
        self.dtype, self.bases, self.query_rank = dtype, bases, query_rank
        self.positions = positions
        self.layers = [(layer.name, sl) for layer, sl in zip(layers, slices)]

    def signals(self, X, y, function=None):
        """``{name: (a, g)}`` signals of the loss, or of ``function(output, target)``."""
        function = self.model.adapted.loss if function is None else function
        signals = capture_signals(
            self.model,
            self.layer_list,
            X,
            output_vectors("empirical", function, y, None),
            self.dtype,
        )
        return {name: (a, g[0]) for name, (a, g) in signals.items()}

    def features(self, X, y, function=None):
        signals = self.signals(X, y, function)
        return LayerBatch(
            signals if self.bases is None else rotate(signals, self.bases)
        )

    def flat(self, F):
        return flatten(F.signals)

    def weighted(self, F, weights):
        if weights is None:
            return F
        # per-sample gradients g a^T are linear in g
        return LayerBatch(
            {
                name: (a, g * weights[:, None, None].to(g.dtype))
                for name, (a, g) in F.signals.items()
            }
        )

    def row_bytes(self, dtype):
        per_row = sum(
            self.positions[layer.name] * (layer.d_in + layer.d_out)
            for layer in self.layer_list
        )
        return int(per_row * dtype.itemsize)

    def queries(self, Q):
        # each layer's block once, contiguous, for every training batch
        factors = {}
        for layer, sl in zip(self.layer_list, self.slices):
            # a column block of Q reshapes to a strided view, which every
            # pair product would copy again
            matrices = pair_layout(Q[:, sl].reshape(-1, layer.d_out, layer.d_in))
            factors[layer.name] = (
                matrices if self.query_rank is None else self._low_rank(matrices)
            )
        return LayerQueries(factors, len(Q))

    def _low_rank(self, matrices):
        """``(U, V)`` of :func:`low_rank_factors`, or the matrices themselves
        where ``query_rank`` reaches their smaller side (nothing to cut)."""
        if self.query_rank >= min(matrices.shape[1:]):
            return pair_layout(matrices)
        return low_rank_factors(matrices, self.query_rank)

    def inner(self, Q, F, diagonal=False, layer=None):
        total = 0.0
        for lay, sl in zip(self.layer_list, self.slices):
            if layer is not None and sl != layer:
                continue
            a, g = F.signals[lay.name]
            if isinstance(Q, LayerQueries):
                matrices = Q.factors[lay.name]
            else:
                matrices = Q[:, sl].reshape(-1, lay.d_out, lay.d_in)
            if isinstance(matrices, tuple):
                total = total + low_rank_pair_scores(*matrices, a, g)
            else:
                score = diagonal_scores if diagonal else pair_scores
                total = total + score(matrices, a, g)
        return total
