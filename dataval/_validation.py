"""Input checks shared by every estimator: rows, indexes, finiteness."""

import numbers

import numpy as np
import pandas as pd
import torch
from scipy import sparse


def row_index(X, y=None):
    """The pandas index of the rows of ``X`` (or ``y``), else a RangeIndex."""
    for obj in (X, y):
        if isinstance(obj, (pd.DataFrame, pd.Series)):
            return obj.index
    return pd.RangeIndex(_n_rows(X, "X"))


def _n_rows(obj, name):
    if isinstance(obj, torch.Tensor) or hasattr(obj, "shape"):
        if len(obj.shape) == 0:
            raise ValueError(f"{name} must have at least one dimension, got a scalar.")
        return obj.shape[0]
    try:
        return len(obj)
    except TypeError:
        raise TypeError(
            f"{name} must be an array, a pandas object or a torch tensor, "
            f"got {type(obj).__name__}."
        ) from None


def check_X_y(X, y, *, name_X="X", name_y="y"):
    """Check that ``X`` and ``y`` are non-empty, aligned and finite.

    Returns the row index (``X.index`` for pandas, else a RangeIndex).
    """
    if X is None or y is None:
        raise ValueError(f"{name_X} and {name_y} are both required, got None.")
    n_X, n_y = _n_rows(X, name_X), _n_rows(y, name_y)
    if n_X != n_y:
        raise ValueError(
            f"{name_X} has {n_X} rows but {name_y} has {n_y}; they must describe "
            "the same examples."
        )
    if n_X == 0:
        raise ValueError(
            f"{name_X} and {name_y} are empty; at least one row is needed."
        )
    for obj, name in ((X, name_X), (y, name_y)):
        _check_finite(obj, name)
    return row_index(X, y)


def _check_finite(obj, name):
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() and not bool(torch.isfinite(obj).all()):
            raise ValueError(
                f"{name} contains NaN or infinity; clean or impute it first."
            )
        return
    try:
        values = np.asarray(obj)
    except (TypeError, ValueError):
        return
    if values.dtype.kind in "fc" and not np.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or infinity; clean or impute it first.")
    if values.dtype.kind == "O":
        numeric = [v for v in values.ravel() if isinstance(v, numbers.Real)]
        if numeric and not np.isfinite(np.asarray(numeric, dtype=float)).all():
            raise ValueError(
                f"{name} contains NaN or infinity; clean or impute it first."
            )


def to_numpy(obj):
    """``obj`` as a numpy array (pandas values, tensors moved to the CPU).

    Sparse matrices (e.g. the output of a text vectorizer in a Pipeline) are
    densified.
    """
    if sparse.issparse(obj):
        return obj.toarray()
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().numpy()
    if isinstance(obj, (pd.DataFrame, pd.Series)):
        return obj.to_numpy()
    return np.asarray(obj)


def to_tensor(obj, dtype=None):
    """``obj`` as a CPU tensor; floating data cast to ``dtype`` when given."""
    if isinstance(obj, torch.Tensor):
        tensor = obj.detach().cpu()
    else:
        array = to_numpy(obj)
        if array.dtype.kind == "b":
            array = array.astype(np.int64)
        if array.dtype.kind == "O":
            array = array.astype(np.float64)
        array = np.ascontiguousarray(array)
        if not array.flags.writeable:
            array = array.copy()
        tensor = torch.from_numpy(array)
    if dtype is not None and tensor.is_floating_point():
        tensor = tensor.to(dtype)
    return tensor


def resolve_device(device):
    """Turn the ``device`` parameter into a :class:`torch.device`."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda' or a torch.device, got {device!r}."
        ) from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but CUDA is not available; "
            "use device='auto' or 'cpu'."
        )
    return resolved


_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def resolve_dtype(dtype, default):
    """Turn the ``dtype`` parameter (None, a name or a torch dtype) into a dtype."""
    if dtype is None:
        return default
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ValueError(
        f"dtype must be None, one of {sorted(_DTYPES)} or a floating torch.dtype, "
        f"got {dtype!r}."
    )
