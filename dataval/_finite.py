"""No NaN or infinity leaves dataval silently.

Inputs are checked for finiteness before any computation
(:mod:`dataval._validation`), model and checkpoint tensors when they are read
(:class:`~dataval._functional.FunctionalModel`). What is computed afterwards —
the fitted curvature and every score — is checked here; when it is not
finite, a diagnostic pass finds the rows whose loss or gradient is not finite,
and the :class:`FloatingPointError` names them and the likely cure.
"""

import numpy as np
import torch

from ._validation import rows_text

# attributes that hold inputs (checked on the way in), not computed state
_INPUTS = ("_X_train", "_y_train", "model_")


def _tensors(obj, name):
    """Yield ``(name, tensor)`` for every tensor in nested containers."""
    if isinstance(obj, torch.Tensor):
        yield name, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _tensors(value, f"{name}[{key!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _tensors(value, f"{name}[{i}]")


def check_fitted_state(estimator):
    """Raise when a tensor computed by ``fit`` is not finite."""
    for attribute, value in vars(estimator).items():
        if attribute in _INPUTS:
            continue
        for name, tensor in _tensors(value, attribute):
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise_non_finite(estimator, f"The fitted state {name}")


def check_finite(estimator, values, what, test=None):
    """Raise when ``values`` (an array or tensor of scores) is not finite.

    ``test`` is ``(X, y, index)`` of the prepared query rows, if any.
    """
    finite = (
        bool(torch.isfinite(values).all())
        if isinstance(values, torch.Tensor)
        else bool(np.isfinite(values).all())
    )
    if not finite:
        raise_non_finite(estimator, what, test)


def non_finite_rows(estimator, X, y):
    """Positions of the rows of prepared ``(X, y)`` whose loss or gradient is not finite."""
    model, bad = estimator.model_, []
    for start, X_b, y_b in estimator._data().batches_of(X, y, "checking rows"):
        ok = torch.isfinite(model.losses(X_b, y_b))
        if bool(ok.all()):
            ok = torch.isfinite(model.per_sample_grads(X_b, y_b)).all(1)
        bad.extend((start + torch.nonzero(~ok).flatten().cpu()).tolist())
    return bad


def raise_non_finite(estimator, what, test=None):
    """Find the rows behind a non-finite result and raise a FloatingPointError."""
    found = []
    if test is not None:
        X, y, index = test
        rows = non_finite_rows(estimator, X, y)
        if rows:
            found.append(f"test {rows_text(index, rows)}")
    rows = non_finite_rows(estimator, estimator._X_train, estimator._y_train)
    if rows:
        found.append(f"training {rows_text(estimator.train_index_, rows)}")
    dtype = estimator.model_.dtype
    if dtype in (torch.float16, torch.bfloat16):
        cure = (
            f"The gradient passes run in {dtype}, which overflows easily: use "
            "dtype='float32' (or 'bfloat16', whose range is that of float32)."
        )
    elif found:
        cure = (
            "Their loss is undefined at the model's parameters (e.g. log(0) in a "
            "custom loss, or a label the model gives probability 0): fix or drop them."
        )
    else:
        cure = (
            "The curvature solve overflowed: increase damping, or compute in "
            "dtype='float64'."
        )
    where = (
        f"the loss or gradient of {' and '.join(found)} is NaN or infinite"
        if found
        else "every row's loss and gradient are finite"
    )
    raise FloatingPointError(f"{what} contains NaN or infinity: {where}. {cure}")
