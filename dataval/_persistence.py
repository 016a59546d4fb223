"""Save a fitted estimator's state to one file and load it back, without refitting.

Pickling (or ``joblib.dump``) a fitted estimator keeps everything, the model
and the training data included, and needs the same code to unpickle.
:func:`save` writes only what fitting computed about the training data
(eigenvectors, Kronecker factors, projections, seeds), with
:func:`torch.save`, in a form that ``torch.load(..., weights_only=True)``
reads: tensors, numbers, strings and containers, no code. :func:`load` takes
the model and training data again (the user has them), checks that they are
the ones the file was fitted on (the model's parameters and a fingerprint of
the data's values), and restores the state: nothing is refitted, so scores
are those of the saved estimator, also for random estimators.
"""

import hashlib
import os
from numbers import Real

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from ._base import BaseInfluence
from ._finite import check_fitted_state

#: identifies the layout of the saved dictionary
FORMAT = "dataval-estimator-2"
_SIMPLE = (type(None), bool, str, Real, torch.dtype, torch.device)
# numpy arrays travel as tensors inside a dict with this single key
_NDARRAY = "__ndarray__"


def _is_simple(value):
    if isinstance(value, (list, tuple)):
        return all(isinstance(v, _SIMPLE) for v in value)
    return isinstance(value, _SIMPLE)


def _encode(obj):
    """``obj`` in the types ``weights_only=True`` reads, tensors on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, np.ndarray):
        return {_NDARRAY: torch.from_numpy(np.ascontiguousarray(obj))}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {key: _encode(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_encode(value) for value in obj)
    if isinstance(obj, _SIMPLE):
        return obj
    raise TypeError(f"dataval.save cannot store a {type(obj).__name__} ({obj!r}).")


def _decode(obj, device):
    """Invert ``_encode``; tensors go to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        if set(obj) == {_NDARRAY}:
            return obj[_NDARRAY].numpy()
        return {key: _decode(value, device) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_decode(value, device) for value in obj)
    return obj


def _fingerprint(estimator):
    """SHA-256 of the prepared training data's values, shapes and dtypes.

    The objective's row weights count as data (``None``: unweighted).
    """
    digest = hashlib.sha256()
    weights = estimator._sample_weight
    tensors = [estimator._X_train, estimator._y_train]
    tensors += [] if weights is None else [weights]
    for tensor in tensors:
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{tuple(tensor.shape)} {tensor.dtype};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _read(path):
    """The saved dictionary, or a ValueError saying the file is not one."""
    not_ours = (
        f"path={str(path)!r} is not a file written by dataval.save (format {FORMAT!r})"
    )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        # torch's message may advise weights_only=False: never do that for a
        # file of unknown origin, so it is not repeated
        raise ValueError(
            f"{not_ours}: torch.load(weights_only=True) cannot read it "
            f"({type(error).__name__}). A fitted estimator pickled with pickle "
            "or joblib.dump is read back with the same tool, from a source you "
            "trust; dataval.load reads only files written by dataval.save."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else None
        cure = (
            "it was written by another version of dataval; fit the estimator "
            "again and save it with this one"
            if isinstance(found, str) and found.startswith("dataval-estimator")
            else "it holds no dataval estimator"
        )
        raise ValueError(f"{not_ours}: {cure}.")
    return payload


def save(estimator, path):
    """Write a fitted estimator's state to ``path`` with torch.save.

    The file holds the estimator's class and simple parameters, the number of
    training rows, a fingerprint of the training data (a SHA-256 hash of its
    values), the model's parameters (to recognize the model on load) and
    everything fitting computed that scoring needs (eigenvectors, factors,
    projections, seeds), all on the CPU. Nothing else is written, and nothing
    is written unless this function is called.

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
    if not isinstance(estimator, BaseInfluence):
        raise TypeError(
            "estimator must be a fitted dataval influence estimator, got a "
            f"{type(estimator).__name__}."
        )
    check_is_fitted(estimator)
    params = estimator.get_params(deep=False)
    payload = {
        "format": FORMAT,
        "estimator": type(estimator).__name__,
        "params": {k: v for k, v in params.items() if _is_simple(v)},
        "unsaved_params": sorted(k for k, v in params.items() if not _is_simple(v)),
        "n_train": estimator.n_train_,
        "fingerprint": _fingerprint(estimator),
        "theta": estimator.model_.theta.cpu(),
        "state": _encode(estimator._fitted_state()),
    }
    torch.save(payload, path)


def load(path, model, X, y, *, sample_weight=None, **params):
    """Rebuild an estimator saved with :func:`save`, without refitting it.

    Parameters
    ----------
    path : str, os.PathLike or file-like object
        A file written by :func:`save`; read with ``weights_only=True``.
    model : torch.nn.Module, skorch net or fitted scikit-learn model
        The model the estimator was fitted on (same parameters).
    X, y : array-like, DataFrame or tensor
        The training data it was fitted on: same values (checked against a
        fingerprint stored in the file); a pandas index labels the outputs
        as in ``fit``.
    sample_weight : array-like of shape (n_train,), default=None
        The weights given to ``fit``, if any (part of the fingerprint).
    **params
        Estimator parameters to set. Required for parameters that the file
        cannot hold (a callable ``loss``, ``checkpoints`` given as
        dictionaries); others override the saved values (e.g.
        ``device="cpu"`` to load a GPU estimator on a CPU machine).

    Returns
    -------
    estimator : fitted influence estimator
        Scores exactly like the saved one: nothing is refitted. State saved on
        one device is moved to the estimator's ``device_``.

    Raises
    ------
    ValueError
        When the file was not written by :func:`save`, or the model or the
        training data differ from those the file was fitted on.

    See Also
    --------
    save : Write the file.
    """
    import dataval  # the public classes, once the package is initialized

    if isinstance(path, (str, os.PathLike)) and not os.path.exists(path):
        raise FileNotFoundError(f"No file at path={str(path)!r}.")
    payload = _read(path)
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
    estimator._fit_model(model, X, y, sample_weight)
    if estimator.n_train_ != payload["n_train"]:
        raise ValueError(
            f"X has {estimator.n_train_} rows but the file was fitted on "
            f"{payload['n_train']}; pass the same training data."
        )
    if _fingerprint(estimator) != payload["fingerprint"]:
        raise ValueError(
            "X and y differ from the training data the file was fitted on (same "
            f"number of rows, {estimator.n_train_}, but other values or order); "
            "pass the same training data, in the same order."
        )
    saved, theta = payload["theta"], estimator.model_.theta.cpu()
    if saved.shape != theta.shape or not torch.allclose(
        saved.double(), theta.double(), rtol=1e-4, atol=1e-6
    ):
        raise ValueError(
            "The model's parameters differ from those the file was fitted on; "
            "pass the same trained model."
        )
    estimator._restore_state(_decode(payload["state"], estimator.device_))
    check_fitted_state(estimator)
    return estimator
