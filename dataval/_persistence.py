"""Save a fitted estimator's expensive state to one file and load it back.

Pickling (or ``joblib.dump``) a fitted estimator keeps everything, the model
and the training data included, and needs the same code to unpickle. For
large fitted state (dense eigenvectors, Kronecker factors) :func:`save`
writes only what fitting computed about the curvature, with
:func:`torch.save`, in a form that ``torch.load(..., weights_only=True)``
reads: tensors, numbers, strings and containers, no code. :func:`load` takes
the model and training data again (the user has them), checks that they are
the ones the file was fitted on, and skips the expensive part of ``fit``.
"""

import os
from numbers import Real

import torch
from sklearn.utils.validation import check_is_fitted

from ._base import BaseInfluence

#: identifies the layout of the saved dictionary
FORMAT = "dataval-estimator-1"
_SIMPLE = (type(None), bool, str, Real, torch.dtype, torch.device)


def _is_simple(value):
    if isinstance(value, (list, tuple)):
        return all(isinstance(v, _SIMPLE) for v in value)
    return isinstance(value, _SIMPLE)


def _map_tensors(obj, function):
    """``obj`` with ``function`` applied to every tensor in nested containers."""
    if isinstance(obj, torch.Tensor):
        return function(obj)
    if isinstance(obj, dict):
        return {key: _map_tensors(value, function) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(value, function) for value in obj)
    return obj


def save(estimator, path):
    """Write a fitted estimator's curvature state to ``path`` with torch.save.

    The file holds the estimator's class and simple parameters, the number of
    training rows, the model's parameters (to recognize the model on load)
    and the state listed by the estimator's ``_saved_state`` (eigenvectors,
    factors, ...), all on the CPU. Nothing else is written, and nothing is
    written unless this function is called.

    Parameters
    ----------
    estimator : fitted influence estimator
    path : str, os.PathLike or file-like object
        Where to write, as for :func:`torch.save`.

    See Also
    --------
    load : Rebuild the estimator from the file, the model and the data.

    Examples
    --------
    >>> import io
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> import dataval
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = LogisticRegression(max_iter=1000).fit(X, y)
    >>> inf = dataval.ExactInfluence().fit(clf, X, y)
    >>> buffer = io.BytesIO()
    >>> dataval.save(inf, buffer)
    >>> _ = buffer.seek(0)
    >>> restored = dataval.load(buffer, clf, X, y)
    >>> restored.score(X[:2], y[:2]).equals(inf.score(X[:2], y[:2]))
    True
    """
    check_is_fitted(estimator)
    params = estimator.get_params(deep=False)
    payload = {
        "format": FORMAT,
        "estimator": type(estimator).__name__,
        "params": {k: v for k, v in params.items() if _is_simple(v)},
        "unsaved_params": sorted(k for k, v in params.items() if not _is_simple(v)),
        "n_train": estimator.n_train_,
        "theta": estimator.model_.theta.cpu(),
        "state": {
            name: _map_tensors(getattr(estimator, name), lambda t: t.cpu())
            for name in estimator._saved_state
        },
    }
    torch.save(payload, path)


def load(path, model, X, y, **params):
    """Rebuild an estimator saved with :func:`save`, without refitting it.

    Parameters
    ----------
    path : str, os.PathLike or file-like object
        A file written by :func:`save`; read with ``weights_only=True``.
    model : torch.nn.Module, skorch net or fitted scikit-learn model
        The model the estimator was fitted on (same parameters).
    X, y : array-like, DataFrame or tensor
        The training data it was fitted on (same number of rows; a pandas
        index labels the outputs as in ``fit``).
    **params
        Estimator parameters to set. Required for parameters that the file
        cannot hold (a callable ``loss``, ``checkpoints`` given as
        dictionaries); others override the saved values (e.g.
        ``device="cpu"`` to load a GPU estimator on a CPU machine).

    Returns
    -------
    estimator : fitted influence estimator
        Scores like the saved one. State saved on one device is moved to the
        estimator's ``device_``.

    See Also
    --------
    save : Write the file.
    """
    import dataval  # the public classes, once the package is initialized

    if isinstance(path, (str, os.PathLike)) and not os.path.exists(path):
        raise FileNotFoundError(f"No file at path={str(path)!r}.")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(
            f"path={path!r} is not a file written by dataval.save (format "
            f"{FORMAT!r}); a pickled estimator is read with pickle or joblib.load."
        )
    cls = getattr(dataval, payload["estimator"], None)
    if not (isinstance(cls, type) and issubclass(cls, BaseInfluence)):
        raise ValueError(
            f"The file holds a {payload['estimator']!r}, which this version of "
            "dataval does not have."
        )
    missing = [name for name in payload["unsaved_params"] if name not in params]
    if missing:
        raise ValueError(
            f"The file does not hold the parameters {missing} (they were not "
            "numbers or strings); pass the values used when fitting, e.g. "
            f"dataval.load(path, model, X, y, {missing[0]}=...)."
        )
    estimator = cls(**{**payload["params"], **params})
    estimator._fit_model(model, X, y)
    if estimator.n_train_ != payload["n_train"]:
        raise ValueError(
            f"X has {estimator.n_train_} rows but the file was fitted on "
            f"{payload['n_train']}; pass the same training data."
        )
    saved, theta = payload["theta"], estimator.model_.theta.cpu()
    if saved.shape != theta.shape or not torch.allclose(
        saved.double(), theta.double(), rtol=1e-4, atol=1e-6
    ):
        raise ValueError(
            "The model's parameters differ from those the file was fitted on; "
            "pass the same trained model."
        )
    if cls._saved_state:
        device = estimator.device_
        for name, value in payload["state"].items():
            setattr(estimator, name, _map_tensors(value, lambda t: t.to(device)))
    else:
        estimator._fit_curvature()
    return estimator
