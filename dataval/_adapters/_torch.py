"""torch modules and skorch nets."""

import copy
import types

import numpy as np
import torch
from sklearn.exceptions import NotFittedError

from .._validation import check_features, to_numpy, to_tensor
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


def private_copy(module):
    """A deep copy of ``module`` in eval mode, sharing no tensor with it.

    Everything dataval computes runs on this copy, so the user's module (its
    parameter objects, ``requires_grad``, mode, hooks and ``.grad``) is only
    ever read, once, here.
    """
    module = unwrap_compiled(module)
    _check_no_backward_hooks(module)
    try:
        copied = copy.deepcopy(module)
    except Exception as error:
        raise TypeError(
            f"dataval works on a private copy of the model, and copy.deepcopy failed "
            f"on this {type(module).__name__}: {error}. Make the module deep-copyable "
            "(e.g. do not keep tensors computed from parameters as attributes)."
        ) from error
    for parameter in copied.parameters():
        parameter.grad = None
    if not any(p.requires_grad for p in copied.parameters()):
        raise ValueError(
            f"The {type(module).__name__} passed as model has no trainable "
            "parameters (none with requires_grad=True): influence is taken with "
            "respect to the trainable parameters. Set requires_grad=True on those "
            "the model was trained with."
        )
    return copied.eval()


def _check_no_backward_hooks(module):
    for name, m in module.named_modules():
        if isinstance(vars(m).get("forward"), types.FunctionType):
            # a function set on the instance keeps pointing at what its closure
            # saw, not at dataval's copy: gradients would silently be wrong
            where = f"submodule {name!r}" if name else "the module"
            raise ValueError(
                f"forward of {where} is a function assigned to the instance "
                "(module.forward = ...); dataval computes on a copy of the model, "
                "which such a function does not follow. Define forward in a "
                "torch.nn.Module subclass instead."
            )
        if m._backward_hooks or m._backward_pre_hooks:
            where = f"submodule {name!r}" if name else "the module"
            raise ValueError(
                f"The model has a backward hook on {where} (register_full_backward_"
                "hook or register_full_backward_pre_hook). dataval differentiates the "
                "model with torch.func, which cannot run module backward hooks, and "
                "such hooks may change the gradients influence is made of. Remove it "
                "(handle.remove()) before fit, or pass a copy of the model without it."
            )


def _probe_outputs(module, X):
    """The outputs of the private module for two rows, to learn their shape."""
    param = next(module.parameters())
    x = X[:2].to(param.device)
    if x.is_floating_point():
        x = x.to(param.dtype)
    try:
        with torch.no_grad():
            output = module(x)
    except RuntimeError as error:
        if x.is_floating_point():
            raise
        raise TypeError(
            f"The model's forward failed on X of integer dtype {x.dtype} ({error}). "
            "dataval passes integer X unchanged (indices for embedding layers); if X "
            "holds features such as image pixels, convert it as the model was trained "
            "(e.g. X.float() / 255) before fit and score."
        ) from error
    if not isinstance(output, torch.Tensor):
        raise TypeError(
            f"The model's forward returns a {type(output).__name__}, not a tensor; "
            "dataval needs the outputs the loss is computed from as one tensor. Wrap "
            "the model in a small torch.nn.Module whose forward returns that tensor "
            "(e.g. the logits: return self.model(x)[0])."
        )
    if output.ndim == 0 or output.shape[0] != len(x):
        raise ValueError(
            f"The model's forward returns shape {tuple(output.shape)} for a batch of "
            f"{len(x)} rows; it must return one output per row (batch first)."
        )
    return output


def _target_checks(loss, output):
    """``{target_shape | target_size: ...}`` that y must meet under ``loss``."""
    if isinstance(loss, CrossEntropyLoss):
        positions = output.movedim(loss.class_dim, 1).shape[2:]
        # per-position targets may leave positions out (a prompt, padding)
        ignore = {"ignore_index": loss.ignore_index} if positions else {}
        return {"target_shape": tuple(positions), **ignore}
    if isinstance(loss, (BinaryCrossEntropyLoss, SquaredErrorLoss)):
        return {"target_size": int(output[0].numel())}
    return {}


def _check_callable_loss(loss, output, y):
    """Call a user's loss on the probe rows, before any longer computation."""
    y = to_tensor(y)[: len(output)].to(output.device)
    if y.is_floating_point():
        y = y.to(output.dtype)
    loss(output, y)  # CallableLoss refuses anything but one value per row


def _auto_loss(output, y):
    """Cross-entropy for integer targets, squared error for float targets."""
    n_outputs = output.reshape(output.shape[0], -1).shape[1] if output.ndim > 1 else 1
    if y.is_floating_point():
        return SquaredErrorLoss(), None
    if n_outputs == 1:
        return BinaryCrossEntropyLoss(), None
    class_dim = _class_dim(output, tuple(y.shape[1:]))
    return CrossEntropyLoss(class_dim), output.shape[class_dim]


def _class_dim(output, target_row):
    """Where the classes are: dim 1 (torch's ``(B, C, ...)``) or the last dim.

    A language model's ``(B, T, C)`` logits with ``(B, T)`` targets have them
    last; the target's shape tells the two layouts apart.
    """
    first = output.ndim > 1 and tuple(output.shape[2:]) == target_row
    last = output.ndim > 2 and tuple(output.shape[1:-1]) == target_row
    if first and last:
        raise ValueError(
            f"loss='auto' cannot tell where the classes are in outputs of shape "
            f"{tuple(output.shape)} with targets of shape (n, *{target_row}): "
            "dimension 1 (torch's (batch, classes, positions)) or the last one (a "
            "language model's (batch, positions, classes)). Pass loss=callable, "
            "e.g. lambda out, y: F.cross_entropy(out.transpose(1, 2), y, "
            "reduction='none').sum(1) for classes last."
        )
    return -1 if last else 1


def adapt_torch(module, loss, X, y):
    """A torch module with ``loss="auto"`` or a per-sample callable."""
    module = private_copy(module)
    X_t = to_tensor(check_features(X))
    output = _probe_outputs(module, X_t)
    if loss == "auto":
        if not isinstance(y, torch.Tensor) and to_numpy(y).dtype.kind in "OUSV":
            raise ValueError(
                "loss='auto' needs integer class labels or float targets, got y "
                "holding strings or objects; encode labels as integers 0..K-1 "
                "(sklearn.preprocessing.LabelEncoder)."
            )
        y_t = to_tensor(y)
        if not (y_t.is_floating_point() or y_t.dtype in (torch.int64, torch.int32)):
            raise ValueError(
                f"loss='auto' needs integer class labels or float targets, got y of "
                f"dtype {y_t.dtype}; encode labels as integers 0..K-1."
            )
        loss_fn, n_classes = _auto_loss(output, y_t)
    else:
        loss_fn, n_classes = CallableLoss(loss), None
        _check_callable_loss(loss_fn, output, y)
    return AdaptedModel(
        module,
        loss_fn,
        n_classes=n_classes,
        description=type(module).__name__,
        feature_shape=tuple(X_t.shape[1:]),
        **_target_checks(loss_fn, output),
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
    if loss != "auto":
        return adapt_torch(net.module_, loss, X, y)
    module = private_copy(net.module_)
    X_t = to_tensor(check_features(X))
    output = _probe_outputs(module, X_t)
    from skorch import NeuralNetClassifier

    criterion = copy.deepcopy(net.criterion_)
    criterion.reduction = "none"
    log_probabilities = isinstance(net, NeuralNetClassifier) and isinstance(
        criterion, torch.nn.NLLLoss
    )
    n_classes, checks = None, {}
    if isinstance(criterion, (torch.nn.NLLLoss, torch.nn.CrossEntropyLoss)):
        n_classes = output.shape[1]
        checks = {"target_shape": tuple(output.shape[2:])}
    elif isinstance(criterion, torch.nn.MSELoss):
        checks = {"target_size": int(output[0].numel())}
    adapted = AdaptedModel(
        module,
        CriterionLoss(criterion, log_probabilities=log_probabilities),
        n_classes=n_classes,
        description=type(net).__name__,
        feature_shape=tuple(X_t.shape[1:]),
        **checks,
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
