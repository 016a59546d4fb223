"""Scoring in parallel over slices of the training set, with joblib.

``n_jobs`` splits the training rows into contiguous shards, one per worker,
cut at ``batch_size`` boundaries so that every row is batched exactly as in a
serial run. Each worker scores its shard against the same preconditioned test
gradients and returns a small result (a block of scores, its own top k, a
slice of values) that the caller merges.

Workers never share a model: computing a gradient swaps tensors into the
module's parameter slots (``torch.func.functional_call``) and layer hooks are
registered on it, so two threads using one module would see each other's
tensors. Each worker gets its own copy of the fitted estimator in which
everything is copied except tensors and arrays, which are shared read-only
(no memory is duplicated in threads). Process and dask workers receive
pickled copies anyway. The worker function is a module-level function, so
any joblib backend can run it, including dask.distributed through
``joblib.parallel_config(backend="dask")``.
"""

import copy
import types

import numpy as np
import torch
from joblib import Parallel, delayed, effective_n_jobs

#: shared as they are by the copies: read-only data, and what copying
#: cannot or need not duplicate (code, classes)
_SHARED = (torch.Tensor, np.ndarray)
_OPAQUE = (
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.ModuleType,
)


def shard_bounds(n_rows, batch_size, n_jobs):
    """``[(start, stop)]``: one slice of the rows per worker, at batch boundaries."""
    n_batches = -(-n_rows // batch_size)
    n_shards = max(1, min(effective_n_jobs(n_jobs), n_batches))
    edges = np.linspace(0, n_batches, n_shards + 1).round().astype(int) * batch_size
    return [(int(a), int(min(b, n_rows))) for a, b in zip(edges[:-1], edges[1:])]


def copy_sharing_tensors(obj):
    """A deep copy of ``obj`` in which every tensor and array is the original."""
    memo = {}
    _collect_shared(obj, memo, set())
    return copy.deepcopy(obj, memo)


def _collect_shared(obj, memo, seen):
    if id(obj) in seen or isinstance(obj, _OPAQUE):
        return
    seen.add(id(obj))
    if isinstance(obj, _SHARED):
        memo[id(obj)] = obj
        return
    if isinstance(obj, dict):
        children = obj.values()
    elif isinstance(obj, (list, tuple, set, frozenset)):
        children = obj
    else:
        children = getattr(obj, "__dict__", {}).values()
    for child in children:
        _collect_shared(child, memo, seen)


def _call(estimator, method, *args):
    # module level, so that process and dask workers can unpickle the task
    return getattr(estimator, method)(*args)


def map_shards(shards, n_jobs, method, *args):
    """``[(start, estimator.method(store, *args))]`` over ``(start, estimator, store)``.

    One shard runs in the calling thread; several go through joblib, with
    threads unless a ``joblib.parallel_config`` chooses another backend.
    """
    if len(shards) == 1:
        start, estimator, store = shards[0]
        return [(start, _call(estimator, method, store, *args))]
    results = Parallel(n_jobs=n_jobs, prefer="threads")(
        delayed(_call)(estimator, method, store, *args)
        for _, estimator, store in shards
    )
    return [(start, result) for (start, _, _), result in zip(shards, results)]
