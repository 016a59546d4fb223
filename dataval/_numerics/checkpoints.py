"""Model states other than the fitted one, each as a FunctionalModel.

Three estimators read them, with three meanings and parameter names: TracIn a
training *trajectory* (``checkpoints``), TRAK an *ensemble* of independently
trained models, Source the *segment ends* of one training run. Each is a list
of state_dicts or paths of ``torch.save(model.state_dict(), path)`` files.
"""

import os

import torch

from .._functional import FunctionalModel


def _load(state, name, position):
    if isinstance(state, (str, os.PathLike)):
        state = torch.load(state, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise TypeError(
            f"{name}[{position}] must be a state_dict (a dict of tensors) or the "
            f"path of a file saved with torch.save(model.state_dict(), path); got "
            f"{type(state).__name__}."
        )
    return state


def checkpoint_models(model, states, name="checkpoints"):
    """One :class:`FunctionalModel` per state of ``states``; ``[model]`` for none.

    ``name``: the parameter ``states`` came from, for error messages.
    """
    if states is None or len(states) == 0:
        return [model]
    models = []
    for k, state in enumerate(states):
        state_dict = _load(state, name, k)
        try:
            models.append(
                FunctionalModel(
                    model.adapted, model.device, model.dtype, state_dict=state_dict
                )
            )
        except FloatingPointError as error:
            raise FloatingPointError(f"{name}[{k}]: {error}") from None
    return models
