"""What the influence is taken on: the query side's ``f(output, target)``.

Every estimator computes ``(1/n) grad f_i^T (H + damping I)^{-1} g_j``, with
``g_j`` the gradient of training row ``j``'s loss and ``f_i`` the
*measurement* of query row ``i``: by default its loss, or one of the
measurements below. Only the query side changes; the curvature and the
training gradients always come from the training loss. To first order,
``influence[i, j] = f_i(theta without j) - f_i(theta)``.

Each measurement maps ``(output, target)`` to one value per row ``(B,)``.
They are small classes rather than closures so that estimators pickle.
"""

import torch
import torch.nn.functional as F

from ._adapters._losses import CriterionLoss, predictive_distribution

#: names accepted by ``measurement=``
MEASUREMENTS = ("loss", "margin", "log_prob")


def _class_log_probs(kind, output, class_dim):
    """Log-probabilities of the classes, classes along dim 1: (B, C, ...)."""
    if kind == "bernoulli":
        z = output.reshape(output.shape[0], 1, -1)  # (B, 1, positions)
        return torch.cat([F.logsigmoid(-z), F.logsigmoid(z)], 1)
    output = output.movedim(class_dim, 1)
    if kind == "logits":
        return F.log_softmax(output, 1)
    if kind == "probabilities":
        return torch.log(output + torch.finfo(output.dtype).eps)
    return output  # log-probabilities already


class _ClassMeasurement:
    """A measurement read from the model's class probabilities.

    ``target`` holds class indices with the loss's layout (one per row, or
    one per position); positions equal to ``ignore_index`` count zero.
    """

    def __init__(self, kind, class_dim=1, ignore_index=-100):
        self.kind = kind
        self.class_dim = class_dim
        self.ignore_index = ignore_index

    def __call__(self, output, target):
        log_probs = _class_log_probs(self.kind, output, self.class_dim)
        target = target.reshape(log_probs.shape[:1] + log_probs.shape[2:]).long()
        valid = target != self.ignore_index
        index = torch.where(valid, target, torch.zeros_like(target)).unsqueeze(1)
        values = self._per_position(log_probs, index)  # (B, ...)
        values = torch.where(valid, values, torch.zeros_like(values))
        return values.reshape(len(values), -1).sum(1)


class LogProbability(_ClassMeasurement):
    """``log p(target | x)``, summed over the positions that are not ignored."""

    def _per_position(self, log_probs, index):
        return log_probs.gather(1, index).squeeze(1)

    def __repr__(self):
        return "LogProbability()"


class Margin(_ClassMeasurement):
    """Target logit minus the largest other logit (summed over positions).

    Computed from log-probabilities, whose differences are those of the
    logits; for a single-logit sigmoid output the other logit is 0.
    """

    def _per_position(self, log_probs, index):
        target = log_probs.gather(1, index)
        classes = torch.arange(log_probs.shape[1], device=log_probs.device)
        is_target = classes.view(1, -1, *[1] * (log_probs.ndim - 2)) == index
        others = log_probs.masked_fill(is_target, float("-inf"))
        return (target - others.amax(1, keepdim=True)).squeeze(1)

    def __repr__(self):
        return "Margin()"


class CallableMeasurement:
    """A user's ``f(output, target)`` returning one value per row."""

    def __init__(self, function):
        self.function = function

    def __call__(self, output, target):
        values = self.function(output, target)
        if not isinstance(values, torch.Tensor) or values.shape[:1] != output.shape[:1]:
            shape = tuple(values.shape) if isinstance(values, torch.Tensor) else values
            raise ValueError(
                f"measurement must return one value per row: for a batch of "
                f"{output.shape[0]} rows it returned {shape}. Return a tensor of "
                "shape (batch,), e.g. reduce each row with .sum(-1), not the batch."
            )
        return values.reshape(len(values), -1).sum(1)

    def __repr__(self):
        return f"CallableMeasurement({self.function!r})"


def resolve_measurement(measurement, loss):
    """The ``f(output, target) -> (B,)`` that ``measurement=`` names.

    ``loss`` is the model's per-sample training loss; ``"margin"`` and
    ``"log_prob"`` need it to be a classification loss, whose outputs are
    logits, probabilities or log-probabilities of classes.
    """
    if callable(measurement):
        return CallableMeasurement(measurement)
    if measurement not in MEASUREMENTS:
        raise ValueError(
            f"measurement must be one of {list(MEASUREMENTS)} or a callable "
            f"f(output, target) returning one value per row, got {measurement!r}."
        )
    if measurement == "loss":
        return loss
    kind = predictive_distribution(loss)
    if kind in (None, "gaussian"):
        raise ValueError(
            f"measurement={measurement!r} needs a classification loss (the model's "
            f"outputs read as class probabilities), but the loss is {loss!r}. Use "
            "measurement='loss', or a callable f(output, target) returning one value "
            "per row."
        )
    criterion = loss.criterion if isinstance(loss, CriterionLoss) else loss
    ignore_index = getattr(criterion, "ignore_index", -100)
    cls = Margin if measurement == "margin" else LogProbability
    return cls(kind, getattr(criterion, "class_dim", 1), ignore_index)
