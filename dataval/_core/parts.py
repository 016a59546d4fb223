"""The two parts of an estimator: a featurizer and a curvature.

Every estimator computes

    influence[i, j] = scale * <(H + damping I)^{-1} g_i, g_j>

(``scale = 1/n``, see :class:`Curvature`). A :class:`Featurizer` says what a
row becomes — the ``g`` of the equation, in whatever form makes the inner
product cheap — and a :class:`Curvature` how ``(H + damping I)^{-1}`` is
applied to query rows. The streaming core (:mod:`.stream`) pairs the two; an
estimator only fits its parts and names them.
"""

import torch

from .._layers import flush_denormals


class Featurizer:
    """What a row becomes: the vectors the influence equation multiplies.

    The training side may keep a factored form (per-layer signals) that only
    :meth:`inner` reads; :meth:`flat` turns it into flat rows (b, p), the
    form the query side and :class:`Curvature` use.

    Subclasses implement :meth:`features` and set ``layers``: ``[(name,
    slice of p)]``, the blocks ``score(by_layer=True)`` reports, in order and
    covering ``p``.
    """

    layers = ()

    def features(self, X, y, function=None):
        """The rows of a prepared batch, in the form :meth:`inner` takes.

        ``function(output, target) -> (b,)`` replaces the training loss (the
        query side's measurement).
        """
        raise NotImplementedError

    @property
    def size(self):
        """``p``: the length of a flat row."""
        return self.layers[-1][1].stop

    def flat(self, F):
        """Flat rows (b, p) of a :meth:`features` result."""
        return F

    def gradients(self, X, y, function=None):
        """Flat rows (b, p) of a prepared batch: what the curvature is applied to."""
        return self.flat(self.features(X, y, function))

    def weighted(self, F, weights):
        """``F`` with row ``j`` scaled by ``weights[j]`` (``None``: unweighted).

        Removing row ``j`` removes ``w_j loss_j`` from the objective: its
        gradient enters the equation as ``w_j g_j``.
        """
        return F if weights is None else F * weights[:, None].to(F.dtype)

    def queries(self, Q):
        """Preconditioned query rows (m, p) in the form :meth:`inner` takes."""
        return Q

    def inner(self, Q, F, diagonal=False, layer=None):
        """Inner products of query rows ``Q`` and training rows ``F``.

        (m, b), or (m,) with ``diagonal=True`` (row ``i`` with row ``i``);
        ``layer`` (one of the ``layers`` slices) keeps that block only.
        """
        if layer is not None:
            Q, F = Q[:, layer], F[:, layer]
        return (Q * F).sum(1) if diagonal else Q @ F.T

    def row_bytes(self, dtype):
        """Bytes of one training row's :meth:`features`."""
        return self.size * dtype.itemsize


class FlatGradients(Featurizer):
    """Per-sample gradients of the loss, flat (b, p), in ``dtype``.

    ``layers`` default to the model's; a checkpoint's gradients are computed
    by its own :class:`~dataval._functional.FunctionalModel`.
    """

    def __init__(self, model, dtype, layers=None):
        self.model, self.dtype = model, dtype
        self.layers = model.layers if layers is None else layers

    def features(self, X, y, function=None):
        G = self.model.per_sample_grads(X, y, function).to(self.dtype)
        return flush_denormals(G)


class Stacked(Featurizer):
    """Several featurizers' flat rows side by side: one block per checkpoint.

    The layers of block ``k`` are named as those of ``parts[k]`` and shifted
    by the sizes of the blocks before it.
    """

    def __init__(self, parts):
        self.parts = parts
        self.layers, offset = [], 0
        for part in parts:
            self.layers += [
                (name, slice(sl.start + offset, sl.stop + offset))
                for name, sl in part.layers
            ]
            offset += part.size

    def features(self, X, y, function=None):
        return torch.cat([part.gradients(X, y, function) for part in self.parts], 1)


class Curvature:
    """How ``(H + damping I)^{-1}`` is applied to flat rows.

    Class attributes describe the solve to the streaming core.
    """

    #: the curvature is that of the mean objective ``(1/n) sum_j loss_j``, so
    #: scores carry the equation's ``1/n``; TracIn's trajectory sum does not
    mean_objective = True
    #: one solve costs passes over the data whatever its number of rows:
    #: solve many rows at once (iterative solvers)
    solves_in_chunks = False

    def apply_inverse(self, G):
        """Rows of ``G`` (m, p) times ``(H + damping I)^{-1}``, shape (m, p)."""
        raise NotImplementedError

    def statistics(self):
        """What the solves of this object reported (iterative solvers), or ``{}``."""
        return {}


class Scaled(Curvature):
    """A diagonal in place of the inverse curvature: rows times ``scales`` (p,).

    TracIn's learning rates (``mean_objective=False``: a sum over the
    trajectory, no ``1/n``), or the inverse damped eigenvalues of rows already
    in a curvature's eigenbasis (K-FAC).
    """

    def __init__(self, scales, mean_objective=True):
        self.scales, self.mean_objective = scales, mean_objective

    def apply_inverse(self, G):
        return G * self.scales


class SolveLog(list):
    """The statistics of a public call's solves, one dict per solve.

    Shared, not copied, by the worker copies of one call's stream (threads
    append to one list); a process worker's solves stay in its process.
    """

    def __deepcopy__(self, memo):
        return self


class Solver(Curvature):
    """An iterative solve, ``solve(G) -> ((H + damping I)^{-1} G, statistics)``.

    Each call costs passes over the training data whatever the number of
    rows: the core solves many rows at once. ``statistics`` (a dict of
    numbers, e.g. iterations and residual) of every solve are summarized by
    :meth:`statistics`: the number of solves and the largest of each figure.
    """

    solves_in_chunks = True

    def __init__(self, solve):
        self.solve, self.log = solve, SolveLog()

    def apply_inverse(self, G):
        X, statistics = self.solve(G)
        self.log.append(statistics)
        return X

    def statistics(self):
        if not self.log:
            return {}
        keys = self.log[0]
        return {
            "n_solves": len(self.log),
            **{key: max(solve[key] for solve in self.log) for key in keys},
        }


class BlockDiagonal(Curvature):
    """Independent curvatures on blocks of the parameters: ``[(slice, curvature)]``.

    The blocks cover ``p`` in order (TRAK's checkpoints, say).
    """

    def __init__(self, blocks):
        self.blocks = blocks

    def apply_inverse(self, G):
        return torch.cat([part.apply_inverse(G[:, sl]) for sl, part in self.blocks], 1)
