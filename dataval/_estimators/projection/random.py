"""Seeded Gaussian random projections, generated block by block.

A projection ``P`` of shape (dim, p) has independent N(0, 1/dim) entries, so
``E[P^T P] = I``: inner products of projected vectors are those of the
originals in expectation (Johnson-Lindenstrauss). Columns are drawn in blocks,
each from its own generator seeded with ``(seed, block)``, so the matrix is
reproducible and never has to be held whole.
"""

import numpy as np
import torch

from ..._core.parts import Featurizer
from ..._core.stream import working_bytes
from ..._numerics.seeding import torch_generator

# fractions of the working memory: one generated block of columns, and the
# largest projection generated once and kept
_BLOCK_SHARE = 1 / 32
_CACHE_SHARE = 1 / 8


class RandomProjection:
    """``x -> P x`` for a seeded (dim, p) Gaussian ``P``; the identity for ``dim=None``.

    Parameters
    ----------
    p : int
        Input dimension.
    dim : int or None
        Output dimension; ``None`` projects nothing (``P = I``).
    seed : int
    device : torch.device
    dtype : torch.dtype
    """

    def __init__(self, p, dim, seed, device, dtype):
        self.p, self.dim, self.seed = p, dim, seed
        self.device, self.dtype = device, dtype
        self.out_dim = p if dim is None else dim
        itemsize = torch.empty((), dtype=dtype).element_size()
        self.width = max(1, working_bytes(_BLOCK_SHARE) // (self.out_dim * itemsize))
        fits = p * self.out_dim * itemsize <= working_bytes(_CACHE_SHARE)
        self._cache = [] if fits else None

    def blocks(self):
        """Yield ``(columns, P[:, columns])``: slices of p and (dim, width) blocks."""
        if self._cache:
            yield from self._cache
            return
        keep = [] if self._cache is not None else None
        for number, start in enumerate(range(0, self.p, self.width)):
            columns = slice(start, min(self.p, start + self.width))
            (state,) = np.random.SeedSequence([self.seed, number]).generate_state(1)
            generator = torch_generator(state, self.device)
            block = torch.randn(
                self.dim,
                columns.stop - columns.start,
                generator=generator,
                device=self.device,
                dtype=self.dtype,
            ) / np.sqrt(self.dim)
            if keep is not None:
                keep.append((columns, block))
            yield columns, block
        if keep is not None:
            # replaced, not extended: threads filling it at once each assign
            # the same complete list
            self._cache = keep

    def __call__(self, X):
        """``X @ P^T`` for ``X`` of shape (..., p), giving (..., dim)."""
        # X may come from a lower-precision gradient pass (mixed precision)
        X = X.to(self.dtype)
        if self.dim is None:
            return X
        out = X.new_zeros(X.shape[:-1] + (self.dim,))
        for columns, block in self.blocks():
            out += X[..., columns] @ block.T
        return out

    def gram(self, weights):
        """``P diag(weights) P^T`` (dim, dim) for ``weights`` of shape (p,)."""
        weights = weights.to(self.dtype)
        if self.dim is None:
            return torch.diag(weights)
        out = weights.new_zeros(self.dim, self.dim)
        for columns, block in self.blocks():
            out += (block * weights[columns]) @ block.T
        return out


class Projected(Featurizer):
    """Another featurizer's flat rows through a :class:`RandomProjection`."""

    def __init__(self, part, projection):
        self.part, self.projection = part, projection
        self.layers = [("projected", slice(0, projection.out_dim))]

    def features(self, X, y, function=None):
        return self.projection(self.part.gradients(X, y, function))
