"""Input checks shared by every estimator: rows, indexes, values, finiteness."""

import numbers

import numpy as np
import pandas as pd
import torch
from scipy import sparse
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

#: the ``n_jobs`` parameter of every estimator, in scikit-learn's constraint
#: language: None, a positive number of workers, or -1, -2, ... (all CPUs
#: but so many)
N_JOBS_CONSTRAINT = [
    None,
    Interval(numbers.Integral, None, -1, closed="right"),
    Interval(numbers.Integral, 1, None, closed="left"),
]


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
    """Check that ``X`` and ``y`` are non-empty, aligned, and ``y`` is complete.

    The values of ``X`` are checked by :func:`check_features` once the model's
    own transforms (a Pipeline's leading steps) have run. Returns the row
    index (``X.index`` for pandas, else a RangeIndex).
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
    index = row_index(X, y)
    if (
        isinstance(X, (pd.DataFrame, pd.Series))
        and isinstance(y, (pd.DataFrame, pd.Series))
        and not X.index.equals(y.index)
    ):
        raise ValueError(
            f"{name_X} and {name_y} have different indexes, so their rows may not "
            f"describe the same examples; align them ({name_y}.loc[{name_X}.index]) "
            f"or pass {name_y} without an index ({name_y}.to_numpy())."
        )
    _check_complete(y, name_y, index)
    return index


def rows_text(index, positions):
    """``"rows [...]"``: the index labels of the rows at ``positions``, first 10."""
    labels = pd.Index(index)[positions]
    more = f" and {len(labels) - 10} more" if len(labels) > 10 else ""
    return f"rows {labels[:10].tolist()}{more}"


def _missing(values):
    """(n,) rows of an array holding NaN, infinity, None or pd.NA."""
    values = np.asarray(values)
    if values.dtype.kind in "fc":
        bad = ~np.isfinite(values)
    elif values.dtype.kind == "O":
        bad = pd.isna(values) | np.vectorize(_is_infinite, otypes=[bool])(values)
    else:
        return np.zeros(len(values), bool)
    return bad.reshape(len(values), -1).any(1)


def _is_infinite(value):
    return isinstance(value, numbers.Real) and not np.isfinite(value)


def _check_complete(y, name, index):
    values = to_numpy(y) if not isinstance(y, torch.Tensor) else y.detach().cpu()
    if isinstance(values, torch.Tensor):
        if not values.is_floating_point():
            return
        values = values.numpy()
    bad = _missing(values)
    if bad.any():
        raise ValueError(
            f"{name} contains missing or infinite values (NaN, None, pd.NA or inf) "
            f"in {rows_text(index, np.flatnonzero(bad))}; drop those rows or fill them in first."
        )


def feature_names_of(X):
    """The column names of a DataFrame whose columns are all strings, else None."""
    if isinstance(X, pd.DataFrame) and all(isinstance(c, str) for c in X.columns):
        return np.asarray(X.columns, dtype=object)
    return None


def check_feature_names(X, expected, name="X"):
    """Refuse a DataFrame whose columns differ from, or reorder, ``expected``.

    As scikit-learn does: without names on either side there is nothing to
    compare.
    """
    names = feature_names_of(X)
    if expected is None or names is None:
        return
    if len(names) == len(expected) and np.all(names == expected):
        return
    seen = set(expected)
    unseen = [c for c in names if c not in seen]
    missing = [c for c in expected if c not in set(names)]
    problem = ""
    if unseen:
        problem += f" Columns not seen at fit: {unseen[:10]}."
    if missing:
        problem += f" Columns seen at fit but missing now: {missing[:10]}."
    if not unseen and not missing:
        problem = " They are the same columns in another order."
    raise ValueError(
        f"The columns of {name} must be the feature names seen at fit, in the same "
        f"order.{problem} Select them as {name}[{list(expected)[:10]}...] "
        "(the order of feature_names_in_)."
    )


def check_features(X, name="X"):
    """``X`` as numbers a model can take; errors name the columns or rows at fault.

    DataFrames must have numeric (or boolean) columns without missing values
    and become float64 arrays. Object arrays are converted to float64.
    Integer arrays and tensors are kept as they are (indices for embedding
    layers). Floating values must be finite.
    """
    index = row_index(X)
    if isinstance(X, pd.DataFrame):
        non_numeric = [
            f"{column!r} ({dtype})"
            for column, dtype in X.dtypes.items()
            if not pd.api.types.is_numeric_dtype(dtype)
        ]
        if non_numeric:
            raise ValueError(
                f"{name} has non-numeric columns {non_numeric[:10]}; the model takes "
                "numbers. Encode them first, or pass a Pipeline whose leading steps "
                "(e.g. OneHotEncoder in a ColumnTransformer) encode them."
            )
        missing = X.columns[X.isna().to_numpy().any(0)].tolist()
        if missing:
            raise ValueError(
                f"{name} has missing values (NaN, None or pd.NA) in columns "
                f"{missing[:10]}; impute them (e.g. sklearn.impute.SimpleImputer, "
                "as a Pipeline step of the model) or drop those rows first."
            )
        X = X.to_numpy(dtype=np.float64)
    elif not isinstance(X, torch.Tensor):
        X = to_numpy(X)
        if X.dtype.kind == "O":
            try:
                X = X.astype(np.float64)
            except (TypeError, ValueError) as error:
                raise ValueError(
                    f"{name} holds values that are not numbers ({error}); encode "
                    "them first, or pass a Pipeline whose leading steps do."
                ) from None
        elif X.dtype.kind == "c":
            raise ValueError(
                f"{name} holds complex numbers; the model takes real features. Pass "
                "their real and imaginary parts (or magnitudes) as separate columns."
            )
        elif X.dtype.kind not in "biuf":
            raise ValueError(
                f"{name} has dtype {X.dtype}, not numbers; encode it first, or pass "
                "a Pipeline whose leading steps do."
            )
    values = to_tensor(X).numpy() if isinstance(X, torch.Tensor) else X
    bad = _missing(values) if values.dtype.kind in "fc" else None
    if bad is not None and bad.any():
        raise ValueError(
            f"{name} contains NaN or infinity in {rows_text(index, np.flatnonzero(bad))}; impute "
            "or drop those rows first."
        )
    return X


def is_fitted(model):
    """Whether ``model`` is fitted; a plain torch module always counts as fitted."""
    if isinstance(model, torch.nn.Module):
        return True
    try:
        check_is_fitted(model)
    except NotFittedError:
        return False
    return True


def final_step(model):
    """The last step of a scikit-learn Pipeline, else ``model`` itself."""
    return model.steps[-1][1] if isinstance(model, Pipeline) else model


def indexable_rows(X):
    """``X`` with rows that can be indexed: sparse formats other than CSR/CSC -> CSR."""
    if sparse.issparse(X) and X.format not in ("csr", "csc"):
        return X.tocsr()
    return X


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
        if obj.is_meta:
            raise ValueError(
                "Got a tensor on the 'meta' device, which holds no values; pass "
                "the data itself."
            )
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


def check_dtype_on_device(dtype, device):
    """Refuse a dtype this torch build cannot multiply matrices in on ``device``.

    torch 2.1 has no float16 matrix products on the CPU: every forward pass
    would fail inside torch with ``not implemented for 'Half'``.
    """
    if dtype not in (torch.float16, torch.bfloat16):
        return
    try:
        ones = torch.ones(2, 2, dtype=dtype, device=device)
        ones @ ones
    except RuntimeError:
        name = str(dtype).removeprefix("torch.")
        other = "'float32' or 'bfloat16'" if name == "float16" else "'float32'"
        raise ValueError(
            f"dtype={name!r} is not supported on device {str(device)!r} by this "
            f"torch build ({torch.__version__}: no {name} matrix products there). "
            f"Use dtype={other}, a CUDA device, or a newer torch."
        ) from None
