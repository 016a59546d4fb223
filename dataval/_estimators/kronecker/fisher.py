"""What Kronecker-factored curvature backpropagates from the model's output.

The Gauss-Newton matrix of a batch is ``sum_b J_b^T H_b J_b`` with ``J_b`` the
Jacobian of row ``b``'s output and ``H_b`` the Hessian of its loss with respect
to that output. K-FAC collects outer products of backpropagated output vectors
``v``; their expectation must be ``H_b``:

- ``"ggn"``: the columns of a square root of ``H_b`` (one backward pass per
  output dimension): exact.
- ``"true"``: the loss gradient at a target sampled from the model's
  predictive distribution (the true Fisher, equal to the Gauss-Newton matrix
  in expectation for the losses below): one backward pass, unbiased.
- ``"empirical"``: the loss gradient at the observed target (the empirical
  Fisher): one backward pass, biased away from a minimum.
"""

import math

import torch
import torch.nn.functional as F

from ..._adapters._losses import (
    CriterionLoss,
    predictive_distribution,
)
from ..._functional import loss_hessians

# output dimensions per row above which "ggn" (k backward passes) is refused
_MAX_GGN_OUTPUTS = 1024


def check_fisher(fisher, loss):
    """Raise when ``fisher="true"`` cannot sample targets for ``loss``."""
    if fisher == "true" and predictive_distribution(loss) is None:
        raise ValueError(
            f"fisher='true' samples targets from the model's predictive distribution, "
            f"which is not known for the loss {loss!r} (supported: cross-entropy, "
            "negative log-likelihood, binary cross-entropy with logits, squared "
            "error). Use fisher='ggn' (exact, one backward pass per output) or "
            "fisher='empirical'."
        )


def sample_targets(loss, output, generator):
    """Targets drawn from the predictive distribution the loss describes."""
    kind = predictive_distribution(loss)
    if kind == "gaussian":
        # loss (f - y)^2 has output Hessian 2 I = E[(2 eps)(2 eps)^T] for var 1/2
        noise = torch.randn(
            output.shape, generator=generator, dtype=output.dtype, device=output.device
        )
        return output + noise * math.sqrt(0.5)
    if kind == "bernoulli":
        return torch.bernoulli(torch.sigmoid(output), generator=generator)
    criterion = loss.criterion if isinstance(loss, CriterionLoss) else loss
    # classes along dim 1, or last for a language model's (B, T, C) logits
    output = output.movedim(getattr(criterion, "class_dim", 1), 1)
    probabilities = {
        "logits": lambda: F.softmax(output, 1),
        "probabilities": lambda: output.clamp(min=0),
        "log_probabilities": lambda: output.exp(),
    }[kind]()
    # classes along dim 1, any trailing (position) dims
    rows = probabilities.movedim(1, -1)
    drawn = torch.multinomial(rows.reshape(-1, rows.shape[-1]), 1, generator=generator)
    return drawn.reshape(rows.shape[:-1])


def loss_gradient(loss, output, target):
    """Gradient of each row's loss with respect to the output (same shape)."""
    output = output.detach().requires_grad_()
    with torch.enable_grad():
        return torch.autograd.grad(loss(output, target).sum(), output)[0]


def hessian_root_columns(loss, output, target):
    """(k, *output.shape): ``sum_c v_c v_c^T`` is each row's output Hessian."""
    k = output[0].numel()
    if k > _MAX_GGN_OUTPUTS:
        raise ValueError(
            f"fisher='ggn' needs one backward pass per output dimension; the model "
            f"has {k} outputs per row (more than {_MAX_GGN_OUTPUTS}). Use "
            "fisher='true', which samples one target per row."
        )

    hessians = loss_hessians(loss, output, target)  # (n, k, k)
    values, vectors = torch.linalg.eigh((hessians + hessians.mT) / 2)
    roots = vectors * values.clamp(min=0).sqrt()[:, None, :]  # (n, k, k), columns
    return roots.permute(2, 0, 1).reshape(k, *output.shape)


def _keep_ignored(loss, target, sampled):
    """``sampled`` with the positions the observed ``target`` leaves out kept out."""
    criterion = loss.criterion if isinstance(loss, CriterionLoss) else loss
    ignore_index = getattr(criterion, "ignore_index", None)
    if ignore_index is None or sampled.shape != target.shape:
        return sampled
    return torch.where(target == ignore_index, target, sampled)


def output_vectors(fisher, loss, target, generator):
    """``output -> (K, *output.shape)``: the vectors ``fisher`` backpropagates."""

    def vectors(output):
        if fisher == "ggn":
            return hessian_root_columns(loss, output, target)
        if fisher == "true":
            sampled = sample_targets(loss, output, generator)
            return loss_gradient(loss, output, _keep_ignored(loss, target, sampled))[
                None
            ]
        return loss_gradient(loss, output, target)[None]

    return vectors
