"""Products with the training objective's curvature, over passes of the data."""

import torch


def curvature_product(
    model, data, V, curvature, rows=None, batch_size=None, output_hessians=None
):
    """``V @ H`` for ``V`` of shape (k, p): the objective's curvature.

    ``H`` is the mean over the training rows at positions ``rows`` (default:
    all) of ``data`` of the loss Hessian (``curvature="hessian"``) or
    Gauss-Newton matrix (``"ggn"``), plus the model's L2 term. Damping is not
    included. ``batch_size``: rows per pass (default: the data's).
    ``output_hessians``: every training row's loss Hessian in its outputs
    (n, o, o), when kept (``output_hessians``), for ``"ggn"``.
    """
    rows = slice(None) if rows is None else rows
    kept = None if output_hessians is None else output_hessians[rows]
    # the products run in the gradient passes' dtype, the sum in V's; the
    # sum is this function's own tensor, so it is updated in place
    V_model = V.to(model.dtype)
    total, n_rows = None, 0
    for start, X_b, y_b, w_b in data.passes("curvature", rows, batch_size):
        H_b = None if kept is None else kept[start : start + len(X_b)]
        product = model.curvature_matvec(V_model, X_b, y_b, curvature, w_b, H_b)
        total = product.to(V.dtype) if total is None else total.add_(product)
        n_rows += len(X_b)
    return total.div_(n_rows).addcmul_(V, model.l2)


def output_hessians(model, data, max_size):
    """Every training row's loss Hessian in its flattened outputs, (n, o, o).

    ``None`` when they would hold more than ``max_size`` numbers (large
    outputs: a sequence's logits); the Gauss-Newton products then
    differentiate the loss again at each product.
    """
    X_first, _ = model.prepare(data.X[:1], data.y[:1])
    outputs = model.outputs(X_first)[0].numel()
    if len(data) * outputs**2 > max_size:
        return None
    return torch.cat(
        [model.output_hessians(X_b, y_b) for _, X_b, y_b, _ in data.passes("curvature")]
    )
