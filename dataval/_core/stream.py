"""The streaming core: preconditioned query blocks against training blocks.

``score``, ``top_k``, ``value``, ``self_influence`` and candidate scoring all
run the same loop: query rows are turned into preconditioned vectors one
chunk at a time (:meth:`Stream.queries`), and each chunk is paired with the
training rows batch by batch (:meth:`Stream.pair`, the one place the
equation's ``1/n`` is applied). Only what is kept of each block differs (a
dense block, a running top k, a slice of values, a diagonal).

With ``n_jobs``, the training rows are split into contiguous shards cut at
batch boundaries (:mod:`dataval._parallel`); each worker scans its shard
against the same queries. A shard keeps its training features from one query
chunk to the next when they fit in the working memory
(:func:`dataval.get_config`).
"""

import numpy as np
import torch

from .._config import get_config
from .._layers import flush_denormals
from .._parallel import copy_sharing_tensors, map_shards, shard_bounds


def working_bytes(fraction=1.0):
    """``fraction`` of the configured ``working_memory``, in bytes."""
    return int(get_config()["working_memory"] * 2**20 * fraction)


def check_dense_size(n_rows, n_train):
    """Refuse a dense (n_rows, n_train) float32 result above ``max_score_memory``."""
    budget = get_config()["max_score_memory"]
    mib = n_rows * n_train * 4 / 2**20
    if mib > budget:
        raise ValueError(
            f"score would build a {n_rows} x {n_train} frame ({mib:,.0f} MiB), "
            f"above max_score_memory={budget} MiB. Use top_k(X_test, y_test, k=...) "
            "or value(X_val, y_val), which stream over the training set, or raise "
            "the budget with dataval.set_config(max_score_memory=...)."
        )


class Stream:
    """Pairs a fitted featurizer and curvature over the training data.

    Parameters
    ----------
    featurizer : Featurizer
    curvature : Curvature
    data : TrainingData
    dtype : torch.dtype
        Of the features, solves and scores.
    n_jobs : int or None
        Workers over training shards (joblib).
    rows : slice, default=slice(None)
        The training rows this object scans (a parallel worker's shard).
    """

    def __init__(self, featurizer, curvature, data, dtype, n_jobs, rows=slice(None)):
        self.featurizer, self.curvature, self.data = featurizer, curvature, data
        self.dtype, self.n_jobs, self.rows = dtype, n_jobs, rows
        # the equation's 1/n, applied in pair() and nowhere else
        self.n = len(data) if curvature.mean_objective else None

    # ------------------------------------------------------------ the pair
    def pair(self, Q, F, diagonal=False, layer=None):
        """``(1/n) <Q, F>``: query block ``Q`` against training block ``F``.

        No ``1/n`` for a curvature that is not that of the mean objective
        (TracIn's trajectory sum).
        """
        scores = self.featurizer.inner(Q, F, diagonal, layer)
        return scores if self.n is None else scores / self.n

    # -------------------------------------------------------------- queries
    def chunk_size(self):
        """Query rows per chunk within the working memory.

        Per query row: its preconditioned vector (p,) and, per worker, a
        float32 row of scores against a training batch plus top-k indices.
        """
        row_bytes = (
            self.featurizer.size * self.dtype.itemsize + 16 * self.data.batch_size
        )
        return max(1, working_bytes() // row_bytes)

    def query_gradients(self, X, y, function, desc="test"):
        """Flat query rows (m, p) of prepared ``(X, y)``, batch by batch."""
        G = [
            self.featurizer.gradients(X_b, y_b, function)
            for _, X_b, y_b in self.data.batches_of(X, y, desc)
        ]
        # one batch: no copy of what can be a large block
        return G[0] if len(G) == 1 else torch.cat(G)

    def precondition(self, G):
        """``(H + damping I)^{-1}`` applied to flat rows, in :meth:`pair`'s form."""
        return self.featurizer.queries(flush_denormals(self.curvature.apply_inverse(G)))

    def queries(self, X, y, function):
        """Yield ``(start, Q)``: preconditioned query rows, chunk by chunk.

        One solve per chunk: iterative solvers pay per call, not per row.
        """
        chunk = self.chunk_size()
        for start in range(0, len(X), chunk):
            G = self.query_gradients(
                X[start : start + chunk], y[start : start + chunk], function
            )
            yield start, self.precondition(G)

    def mean_query(self, X, y, function):
        """The preconditioned mean of the query rows' gradients (one row)."""
        total = None
        for _, X_b, y_b in self.data.batches_of(X, y, "validation"):
            g = self.featurizer.gradients(X_b, y_b, function).sum(0)
            total = g if total is None else total + g
        return self.precondition((total / len(X))[None])

    # -------------------------------------------------------- training side
    def training_blocks(self, store=None, positions=None):
        """Yield ``(start, F)``: weighted training features, batch by batch.

        Over this object's ``rows`` (``start`` counts from their first), or
        over the rows at ``positions`` (a tensor). ``store`` (a list owned by
        the caller) keeps the blocks after the first scan when they fit in
        the working memory, for the next query chunk.
        """
        if store:
            yield from store
            return
        rows = self.rows if positions is None else positions
        n_rows = len(range(len(self.data))[rows]) if positions is None else len(rows)
        fits = n_rows * self.featurizer.row_bytes(self.dtype) <= working_bytes()
        keep = [] if store is not None and fits else None
        for start, X_b, y_b, w_b in self.data.passes("train", rows):
            F = self.featurizer.weighted(self.featurizer.features(X_b, y_b), w_b)
            if keep is not None:
                keep.append((start, F))
            yield start, F
        if keep is not None:
            store.extend(keep)

    def shards(self):
        """``[(start, stream, store)]``: who scans which training rows.

        Serially, this object scans them all; with ``n_jobs``, each worker
        gets a copy that shares the tensors and scans one contiguous slice.
        """
        batch_size = self.data.batch_size
        bounds = shard_bounds(len(self.data), batch_size, self.n_jobs)
        if len(bounds) == 1:
            return [(0, self, [])]
        shards = []
        for start, stop in bounds:
            worker = copy_sharing_tensors(self)
            worker.rows = slice(start, stop)
            shards.append((start, worker, []))
        return shards

    def map(self, shards, method, *args):
        """``[(start, result)]`` of ``method(store, *args)`` on every shard."""
        return map_shards(shards, self.n_jobs, method, *args)

    # --------------------------------------------------------- the outputs
    def layer_groups(self, by_layer):
        """``{layer name: [slices]}`` (a name may own several blocks, e.g. one
        per checkpoint), or ``{"": [None]}`` for the whole score."""
        groups = {}
        for name, sl in self.featurizer.layers if by_layer else [("", None)]:
            groups.setdefault(name, []).append(sl)
        return groups

    def annotate(self, out):
        """``out`` with this call's solver statistics in ``attrs["solver"]``, if any."""
        statistics = self.curvature.statistics()
        if statistics:
            out.attrs["solver"] = statistics
        return out

    def dense(self, X, y, function, groups):
        """Scores (n_groups, m, n) float32 of the query rows against all rows.

        ``groups``: ``[[slices]]``; a group's score sums its layer slices
        (``[[None]]``: the whole score).
        """
        groups = list(groups)
        out = np.empty((len(groups), len(X), len(self.data)), np.float32)
        shards = self.shards()
        for t0, Q in self.queries(X, y, function):
            for start, blocks in self.map(shards, "dense_rows", Q, groups):
                for j0, block in blocks:
                    j0 += start
                    out[:, t0 : t0 + block.shape[1], j0 : j0 + block.shape[2]] = block
        return out

    def top_k(self, X, y, function, k, largest=True):
        """``(values, positions)`` (m, k): each query row's ``k`` largest scores
        (``largest=False``: most negative), best first."""
        sign = 1.0 if largest else -1.0
        values = np.empty((len(X), k), np.float32)
        positions = np.empty((len(X), k), np.int64)
        shards = self.shards()
        for t0, Q in self.queries(X, y, function):
            # each shard's own top k, then the best k of those
            best = self.map(shards, "top_k_rows", Q, k, sign)
            scores = torch.cat([scores for _, (scores, _) in best], 1)
            at = torch.cat([j0 + at for j0, (_, at) in best], 1)
            scores, chosen = scores.topk(k, dim=1)
            values[t0 : t0 + len(scores)] = (sign * scores).numpy()
            positions[t0 : t0 + len(scores)] = at.gather(1, chosen).numpy()
        return values, positions

    def values(self, X, y, function):
        """Scores (n,) of every training row on the mean over the query rows."""
        return self._gather("value_rows", self.mean_query(X, y, function))

    def self_influence(self):
        """Each training row's score on itself (n,)."""
        return self._gather("self_rows")

    def candidates(self, X, y, function, positions):
        """Dense scores (m, len(positions)) against the rows at ``positions``.

        Only those rows' features are computed.
        """
        scores = np.empty((len(X), len(positions)), np.float32)
        for t0, Q in self.queries(X, y, function):
            for j0, F in self.training_blocks(positions=positions):
                block = self.pair(Q, F).float().cpu().numpy()
                scores[t0 : t0 + block.shape[0], j0 : j0 + block.shape[1]] = block
        return scores

    def _gather(self, method, *args):
        """``method`` on every shard (each scans its rows once: no cache), joined."""
        shards = [(start, worker, None) for start, worker, _ in self.shards()]
        return np.concatenate([v for _, v in self.map(shards, method, *args)])

    # ------------------------------------------- what each output keeps
    def dense_rows(self, store, Q, groups):
        """``[(start, (n_groups, m, b) scores)]``: dense blocks, per layer group.

        ``groups``: ``[[slices]]``; a group's score sums its slices (``[None]``
        for the whole score).
        """
        return [
            (
                j0,
                torch.stack(
                    [
                        sum(self.pair(Q, F, layer=sl) for sl in slices)
                        for slices in groups
                    ]
                )
                .float()
                .cpu()
                .numpy(),
            )
            for j0, F in self.training_blocks(store)
        ]

    def top_k_rows(self, store, Q, k, sign):
        """``sign * scores`` (m, <=k) of the best rows here, and their positions."""
        best, best_at = None, None
        for j0, F in self.training_blocks(store):
            block = sign * self.pair(Q, F)
            at = torch.arange(j0, j0 + block.shape[1], device=block.device)
            at = at.expand_as(block)
            if best is not None:
                block, at = torch.cat([best, block], 1), torch.cat([best_at, at], 1)
            best, chosen = block.topk(min(k, block.shape[1]), dim=1)
            best_at = at.gather(1, chosen)
        return best.cpu(), best_at.cpu()

    def value_rows(self, store, q):
        """Scores (b,) of the single query row ``q`` against this object's rows."""
        return np.concatenate(
            [
                self.pair(q, F)[0].float().cpu().numpy()
                for _, F in self.training_blocks(store)
            ]
        )

    def self_rows(self, store):
        """``(1/n) w_j g_j^T (H + damping I)^{-1} g_j / w_j`` of this object's rows.

        Both sides carry ``w_j``; the effect of removing row ``j`` on its own
        (unweighted) loss carries it once. Iterative solvers solve a chunk
        of training rows at a time, the others a batch.
        """
        chunk = self.chunk_size() if self.curvature.solves_in_chunks else 0
        values, pending = [], []
        for j0, F in self.training_blocks(store):
            pending.append((j0, F))
            if sum(len(f) for _, f in pending) >= chunk:
                values.append(self._diagonal(pending))
                pending = []
        if pending:
            values.append(self._diagonal(pending))
        return np.concatenate(values)

    def _diagonal(self, blocks):
        """Diagonal scores of training blocks ``[(start, F)]``, solved together.

        The training rows are preconditioned as they are (flat, not in the
        form :meth:`Featurizer.queries` gives query rows).
        """
        flat = [self.featurizer.flat(F) for _, F in blocks]
        Q = self.curvature.apply_inverse(flat[0] if len(flat) == 1 else torch.cat(flat))
        out, offset = [], 0
        for (j0, F), f in zip(blocks, flat):
            block = self.pair(Q[offset : offset + len(f)], F, diagonal=True)
            offset += len(f)
            weights = self.data.weights_at(self.rows, j0, len(block))
            if weights is not None:
                block = torch.where(weights > 0, block / weights, 0.0)
            out.append(block.float().cpu().numpy())
        return np.concatenate(out)
