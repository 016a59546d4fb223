"""``curvature="auto"``: the Hessian for a linear model, Gauss-Newton otherwise."""

import torch


def resolve_curvature(curvature, model):
    """The curvature ``curvature="auto"`` stands for on ``model`` (a FunctionalModel).

    A model whose only parameters are one ``torch.nn.Linear`` (the
    scikit-learn linear models, a torch linear layer) gets ``"hessian"``: its
    outputs are linear in the parameters, so the Hessian equals the
    Gauss-Newton matrix and is positive semi-definite for a convex loss. Any
    other model gets ``"ggn"``: a network's Hessian has negative eigenvalues
    wherever it fits noisy labels, its Gauss-Newton matrix never.
    """
    if curvature != "auto":
        return curvature
    owners = [
        module
        for module in model.adapted.module.modules()
        if any(True for _ in module.parameters(recurse=False))
    ]
    linear = len(owners) == 1 and isinstance(owners[0], torch.nn.Linear)
    return "hessian" if linear else "ggn"
