"""Products with the training objective's curvature, over passes of the data."""

import torch


def curvature_product(model, data, V, curvature, rows=None, batch_size=None):
    """``V @ H`` for ``V`` of shape (k, p): the objective's curvature.

    ``H`` is the mean over the training rows at positions ``rows`` (default:
    all) of ``data`` of the loss Hessian (``curvature="hessian"``) or
    Gauss-Newton matrix (``"ggn"``), plus the model's L2 term. Damping is not
    included. ``batch_size``: rows per pass (default: the data's).
    """
    rows = slice(None) if rows is None else rows
    total = torch.zeros_like(V)
    # the products run in the gradient passes' dtype, the sum in V's
    V_model = V.to(model.dtype)
    n_rows = 0
    for _, X_b, y_b, w_b in data.passes("curvature", rows, batch_size):
        total += model.curvature_matvec(V_model, X_b, y_b, curvature, w_b)
        n_rows += len(X_b)
    return total / n_rows + V * model.l2
