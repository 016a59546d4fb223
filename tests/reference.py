"""An independent dense influence computation with torch.autograd.functional.

Deliberately written without dataval's machinery (no vmap, no torch.func), so
the estimators are checked against something that does not share their code.
"""

import torch
from torch.autograd.functional import hessian, jacobian
from torch.func import functional_call


def _unflatten(module, theta):
    # the trainable parameters; frozen ones stay the module's own
    params, start = {}, 0
    for name, p in module.named_parameters():
        if p.requires_grad:
            params[name] = theta[start : start + p.numel()].view(p.shape)
            start += p.numel()
    return params


def flat_parameters(module):
    return torch.cat(
        [p.detach().reshape(-1) for p in module.parameters() if p.requires_grad]
    )


def per_row_gradients(module, loss_fn, X, y):
    theta = flat_parameters(module)
    rows = []
    for i in range(len(X)):

        def loss(t, i=i):
            out = functional_call(module, _unflatten(module, t), (X[i : i + 1],))
            return loss_fn(out, y[i : i + 1]).sum()

        rows.append(jacobian(loss, theta))
    return torch.stack(rows)


def dense_curvature(module, loss_fn, X, y, curvature="hessian", l2=0.0):
    """Mean curvature of the loss over the rows, plus ``l2`` on the diagonal."""
    theta = flat_parameters(module)
    if curvature == "hessian":

        def mean_loss(t):
            out = functional_call(module, _unflatten(module, t), (X,))
            return loss_fn(out, y).sum() / len(X)

        H = hessian(mean_loss, theta)
    else:
        H = torch.zeros(len(theta), len(theta), dtype=theta.dtype)
        for i in range(len(X)):

            def output(t, i=i):
                return functional_call(module, _unflatten(module, t), (X[i : i + 1],))

            shape = output(theta).shape  # (1, *row): outputs flattened below
            J = jacobian(lambda t: output(t).reshape(-1), theta)  # (k, p)
            out = output(theta).detach().reshape(-1)
            H_out = hessian(
                lambda o, i=i, s=shape: loss_fn(o.view(s), y[i : i + 1]).sum(), out
            )
            H += J.T @ H_out @ J / len(X)
    return H + torch.diag(torch.as_tensor(l2, dtype=theta.dtype).expand(len(theta)))


def dense_influence(
    module, loss_fn, X, y, X_test, y_test, damping, curvature="hessian"
):
    """``(1/n) g_test^T (H + damping I)^{-1} g_train``, shape (n_test, n_train)."""
    H = dense_curvature(module, loss_fn, X, y, curvature)
    G_train = per_row_gradients(module, loss_fn, X, y)
    G_test = per_row_gradients(module, loss_fn, X_test, y_test)
    damped = H + damping * torch.eye(len(H), dtype=H.dtype)
    return G_test @ torch.linalg.solve(damped, G_train.T) / len(X)
