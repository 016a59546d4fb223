"""Per-sample losses: each maps ``(output, target)`` to a ``(batch,)`` tensor.

They are small classes rather than lambdas so that fitted estimators pickle.
"""

import torch
import torch.nn.functional as F


def _per_row(values):
    # (B, ...) -> (B,): sum over every non-batch dimension (outputs, positions)
    return values.reshape(values.shape[0], -1).sum(1)


def _by_row(output, target):
    # (B, ...) -> (B, outputs), the target in the output's dtype
    output = output.reshape(output.shape[0], -1)
    return output, target.reshape(target.shape[0], -1).to(output.dtype)


class CrossEntropyLoss:
    """Softmax cross-entropy on logits with integer targets, summed per row.

    Classes along ``class_dim``: 1 for torch's ``(B, C, ...)`` layout, -1 for
    a language model's ``(B, T, C)``. Positions whose target is
    ``ignore_index`` count zero (a prompt, padding).
    """

    ignore_index = -100

    def __init__(self, class_dim=1):
        self.class_dim = class_dim

    def __call__(self, output, target):
        output = output.movedim(self.class_dim, 1)
        return _per_row(F.cross_entropy(output, target.long(), reduction="none"))

    def __repr__(self):
        dim = "" if self.class_dim == 1 else f"class_dim={self.class_dim}"
        return f"CrossEntropyLoss({dim})"


class BinaryCrossEntropyLoss:
    """Sigmoid cross-entropy on logits ``(B,)`` or ``(B, 1)`` with 0/1 targets."""

    def __call__(self, output, target):
        output, target = _by_row(output, target)
        return _per_row(
            F.binary_cross_entropy_with_logits(output, target, reduction="none")
        )

    def __repr__(self):
        return "BinaryCrossEntropyLoss()"


class SquaredErrorLoss:
    """``sum((output - target) ** 2)`` over the output dimensions of one row."""

    def __call__(self, output, target):
        output, target = _by_row(output, target)
        return _per_row((output - target) ** 2)

    def __repr__(self):
        return "SquaredErrorLoss()"


class CriterionLoss:
    """A ``torch.nn`` criterion evaluated with ``reduction='none'``.

    ``log_probabilities=True`` takes the log of the output first, as skorch's
    ``NeuralNetClassifier`` does for its default ``NLLLoss`` on a module that
    outputs probabilities.
    """

    def __init__(self, criterion, log_probabilities=False):
        self.criterion = criterion
        self.log_probabilities = log_probabilities

    def __call__(self, output, target):
        if self.log_probabilities:
            output = torch.log(output + torch.finfo(output.dtype).eps)
        if isinstance(self.criterion, (torch.nn.NLLLoss, torch.nn.CrossEntropyLoss)):
            target = target.long()
        elif target.is_floating_point() or target.dtype != output.dtype:
            target = target.to(output.dtype).reshape(output.shape)
        return _per_row(self.criterion(output, target))

    def __repr__(self):
        return f"CriterionLoss({self.criterion!r})"


class CallableLoss:
    """A user's callable that already returns one loss per row."""

    def __init__(self, function):
        self.function = function

    def __call__(self, output, target):
        values = self.function(output, target)
        if not isinstance(values, torch.Tensor) or values.ndim == 0:
            raise ValueError(
                "loss must return one value per sample (a tensor of shape "
                "(batch,)), got a scalar; use reduction='none'."
            )
        if values.shape[0] != output.shape[0]:
            raise ValueError(
                f"loss must return one value per row: for a batch of "
                f"{output.shape[0]} rows it returned shape {tuple(values.shape)}; use "
                "reduction='none'."
            )
        return _per_row(values)

    def __repr__(self):
        return f"CallableLoss({self.function!r})"


def predictive_distribution(loss):
    """The distribution the loss is the negative log-likelihood of, or None."""
    criterion = loss.criterion if isinstance(loss, CriterionLoss) else loss
    if isinstance(criterion, (CrossEntropyLoss, torch.nn.CrossEntropyLoss)):
        return "logits"
    if isinstance(criterion, torch.nn.NLLLoss):
        return "probabilities" if loss.log_probabilities else "log_probabilities"
    if isinstance(criterion, (BinaryCrossEntropyLoss, torch.nn.BCEWithLogitsLoss)):
        return "bernoulli"
    if isinstance(criterion, (SquaredErrorLoss, torch.nn.MSELoss)):
        return "gaussian"
    return None
