"""torch modules and skorch nets."""

import copy

import numpy as np
import torch
from sklearn.exceptions import NotFittedError

from .._validation import to_tensor
from ._losses import (
    BinaryCrossEntropyLoss,
    CallableLoss,
    CriterionLoss,
    CrossEntropyLoss,
    SquaredErrorLoss,
)
from ._model import AdaptedModel


def unwrap_compiled(module):
    """The original module behind ``torch.compile``."""
    return getattr(module, "_orig_mod", module)


def _probe_outputs(module, X):
    # one row, eval mode restored afterwards, to learn the output shape
    modes = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        param = next(module.parameters(), None)
        x = X[:1]
        if param is not None:
            x = x.to(param.device)
            if x.is_floating_point():
                x = x.to(param.dtype)
        with torch.no_grad():
            return module(x)
    finally:
        for m, training in modes:
            m.training = training


def _auto_loss(output, y):
    """Cross-entropy for integer targets, squared error for float targets."""
    n_outputs = output.reshape(output.shape[0], -1).shape[1] if output.ndim > 1 else 1
    if y.is_floating_point():
        return SquaredErrorLoss(), None
    if n_outputs == 1:
        return BinaryCrossEntropyLoss(), None
    return CrossEntropyLoss(), output.shape[1]


def adapt_torch(module, loss, X, y):
    """A torch module with ``loss="auto"`` or a per-sample callable."""
    module = unwrap_compiled(module)
    if loss == "auto":
        X_t, y_t = to_tensor(X), to_tensor(y)
        if not (y_t.is_floating_point() or y_t.dtype in (torch.int64, torch.int32)):
            raise ValueError(
                f"loss='auto' needs integer class labels or float targets, got y of "
                f"dtype {y_t.dtype}; encode labels as integers 0..K-1."
            )
        loss_fn, n_classes = _auto_loss(_probe_outputs(module, X_t), y_t)
    else:
        loss_fn, n_classes = CallableLoss(loss), None
    return AdaptedModel(
        module, loss_fn, n_classes=n_classes, description=type(module).__name__
    )


def _weight_decay(optimizer):
    # coupled weight decay adds wd * theta to the gradient of the mean loss;
    # AdamW's decoupled decay is not the gradient of an objective
    if optimizer is None or isinstance(optimizer, torch.optim.AdamW):
        return 0.0
    decays = {group.get("weight_decay", 0.0) for group in optimizer.param_groups}
    return decays.pop() if len(decays) == 1 else 0.0


def adapt_skorch(net, loss, X, y):
    """A fitted skorch net: its ``module_`` and ``criterion_``."""
    if not getattr(net, "initialized_", False):
        raise NotFittedError(
            f"The {type(net).__name__} passed to fit is not initialized; fit it on the "
            "training data first (influence describes a trained model)."
        )
    module = unwrap_compiled(net.module_)
    if loss != "auto":
        return adapt_torch(module, loss, X, y)
    from skorch import NeuralNetClassifier

    criterion = copy.deepcopy(net.criterion_)
    criterion.reduction = "none"
    log_probabilities = isinstance(net, NeuralNetClassifier) and isinstance(
        criterion, torch.nn.NLLLoss
    )
    n_classes = None
    if isinstance(criterion, (torch.nn.NLLLoss, torch.nn.CrossEntropyLoss)):
        output = _probe_outputs(module, to_tensor(X))
        n_classes = output.shape[1]
    adapted = AdaptedModel(
        module,
        CriterionLoss(criterion, log_probabilities=log_probabilities),
        n_classes=n_classes,
        description=type(net).__name__,
    )
    decay = _weight_decay(getattr(net, "optimizer_", None))
    if decay:
        scale = 1.0
        if isinstance(criterion, torch.nn.MSELoss):
            # skorch's MSELoss averages over outputs, our loss sums them
            y_np = np.asarray(to_tensor(y))
            scale = float(np.prod(y_np.shape[1:])) if y_np.ndim > 1 else 1.0
        adapted.l2 = {name: decay * scale for name in adapted.trainable_parameters()}
    return adapted
