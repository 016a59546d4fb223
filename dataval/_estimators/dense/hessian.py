"""The dense curvature's block among a model's linear layers, from per-row products.

A linear layer ``z = W x + b`` called once per row sees its weight only
through that product, so ``d loss / d W[i, j] = delta[i] x[j]`` with
``delta = d loss / d z``. Differentiating once more, for layers ``l`` and
``m`` (``x`` with a trailing 1 standing for the bias)::

    H[(l, i, j), (m, k, q)] = sum_rows x_l[j] x_m[q] d2 loss / dz_l[i] dz_m[k]
                            + [l before m] x_l[j] delta_m[k] d x_m[q] / dz_l[i]

Per row this needs the Hessian of the loss in the layers' outputs ``(E, E)``
(``E`` the sum of their widths), the Jacobian of the layers' inputs in those
outputs and ``delta``: one forward-mode pass of ``E`` directions through each
row's gradient, cheap. The Gauss-Newton matrix is the first sum with the
Gauss-Newton matrix in the layers' outputs, ``J^T H_out J`` for the
Jacobian ``J`` of the model's output in them. The sums over rows are matrix
products of row-wise outer products (``2 n p^2`` flop in all, at
matrix-product speed), where ``p`` curvature-vector products spend several
times that flop in memory-bound batched element-wise work, and per-sample
Jacobians ``k`` times it.
"""

from contextlib import contextmanager
from types import SimpleNamespace
from typing import NamedTuple

import torch
from torch.func import grad, jacfwd, vmap

from ..._functional import _FORWARD_AD


class LinearLayer(NamedTuple):
    """A linear layer's place in the model and in the flat parameter vector."""

    name: str
    n_out: int
    n_in: int
    weight: slice  # positions of the (n_out, n_in) weight, row-major
    bias: slice | None  # positions of the (n_out,) bias; None without one


def linear_layers(model, x):
    """The linear layers whose curvature blocks :class:`LinearHessian` forms.

    ``torch.nn.Linear`` modules whose weight (and bias, when it has one) is
    trainable and used under no other name, and which the forward pass of
    one prepared row ``x`` (shape ``(1, ...)``) calls exactly once, on a
    ``(1, n_in)`` input: the curvature among their parameters then follows
    from the layers' inputs and outputs alone. Others (called twice, with
    sequence dimensions, not called) are left to curvature-vector products.
    """
    positions = dict(zip(model.names, _spans(model.sizes)))
    with model.borrow() as module:
        uses = {}
        for _, parameter in module.named_parameters(remove_duplicate=False):
            uses[id(parameter)] = uses.get(id(parameter), 0) + 1
        candidates = {
            name: layer
            for name, layer in module.named_modules()
            if isinstance(layer, torch.nn.Linear)
            and f"{name}.weight" in positions
            and (layer.bias is None or f"{name}.bias" in positions)
            and all(
                uses[id(t)] == 1 for t in (layer.weight, layer.bias) if t is not None
            )
        }
        calls = {name: [] for name in candidates}

        def recorder(name):
            def hook(layer, inputs, output):
                calls[name].append(tuple(inputs[0].shape))

            return hook

        with _hooks(module, {name: recorder(name) for name in candidates}):
            model.outputs(x)
    return [
        LinearLayer(
            name,
            layer.out_features,
            layer.in_features,
            positions[f"{name}.weight"],
            None if layer.bias is None else positions[f"{name}.bias"],
        )
        for name, layer in candidates.items()
        if calls[name] == [(1, layer.in_features)]
    ]


@contextmanager
def _hooks(module, hooks):
    """Forward hooks ``{submodule name: hook}`` registered for the block."""
    handles = []
    try:
        for name, hook in hooks.items():
            handles.append(module.get_submodule(name).register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


class LinearHessian:
    """Sums over rows of the curvature's block among linear layers.

    Parameters
    ----------
    model : FunctionalModel
    layers : list of LinearLayer
        From :func:`linear_layers`.
    dtype : torch.dtype
        Precision of the sums (the per-row quantities come in the model's).
    curvature : {"hessian", "ggn"}, default="hessian"
        The Hessian, or the Gauss-Newton matrix ``J^T H_out J``: the same
        sums with the Gauss-Newton matrix in the layers' outputs and no
        first-order term.
    """

    def __init__(self, model, layers, dtype, curvature="hessian"):
        self.model, self.layers, self.dtype = model, layers, dtype
        self.curvature = curvature
        widths = [layer.n_out for layer in layers]
        fans = [layer.n_in for layer in layers]
        # each layer's outputs in the (E,) perturbation, its inputs in the (D,)
        self._outputs = _spans(widths)
        self._inputs = _spans(fans)
        # columns of a layer's inputs, with the 1 of its bias
        self._columns = [layer.n_in + (layer.bias is not None) for layer in layers]
        device = model.device
        L = len(layers)
        # second-order term per pair a <= b: (J_a J_b, I_a I_b); a == b keeps
        # the pairs j <= q of its symmetric (J_a, J_a) only
        self._second = {}
        for a in range(L):
            for b in range(a, L):
                rows = self._pairs(a) if a == b else self._columns[a] * self._columns[b]
                self._second[a, b] = torch.zeros(
                    rows, widths[a] * widths[b], dtype=dtype, device=device
                )
        # first-order term per pair a < b: (J_a I_b, I_a n_in_b)
        self._first = {
            (a, b): torch.zeros(
                self._columns[a] * widths[b],
                widths[a] * fans[b],
                dtype=dtype,
                device=device,
            )
            for a in range(L)
            for b in range(a + 1, L)
            if curvature == "hessian"
        }

    def _pairs(self, a):
        J = self._columns[a]
        return J * (J + 1) // 2

    @property
    def bytes_per_row(self):
        """Memory one row of a batch takes in :meth:`add` (an estimate)."""
        E, D = self._outputs[-1].stop, self._inputs[-1].stop
        products = max(
            [
                self._second[key].shape[0] + self._second[key].shape[1]
                for key in self._second
            ]
            + [
                self._first[key].shape[0] + self._first[key].shape[1]
                for key in self._first
            ]
            + [0]
        )
        # the E forward-mode directions carry the row's activations (about D
        # wide) and its gradient in the layers' outputs and inputs
        return 4 * self.model.dtype.itemsize * (E * (E + 2 * D) + products)

    def covered(self):
        """``(p,)`` mask of the parameters whose rows and columns :meth:`write` fills."""
        mask = torch.zeros(self.model.n_params, dtype=torch.bool)
        for layer in self.layers:
            mask[layer.weight] = True
            if layer.bias is not None:
                mask[layer.bias] = True
        return mask

    def add(self, X, y, weights=None):
        """Add the rows of a prepared batch (``weights`` (b,) scale their losses)."""
        model = self.model
        state = SimpleNamespace(perturbation=None, inputs={})

        def perturbing(index):
            span = self._outputs[index]

            def hook(layer, inputs, output):
                state.inputs[index] = inputs[0]
                # times a ones tensor batched like the rows: the sum's tangent
                # is then batched over rows too, as an in-place operation on
                # it (ReLU(inplace=True)) needs under vmap
                ones = torch.ones_like(output)
                return output + state.perturbation[:, span] * ones

            return hook

        def row_output(perturbation, x):
            # (1, ...) output of a row whose layers' outputs are perturbed,
            # (D,) the layers' inputs
            state.perturbation, state.inputs = perturbation[None], {}
            output = model._forward(model.theta, x[None])
            inputs = torch.cat([state.inputs[i][0] for i in range(len(self.layers))])
            return output, inputs

        def row_loss(perturbation, x, target, weight):
            output, inputs = row_output(perturbation, x)
            return model.adapted.loss(output, target[None]).sum() * weight, inputs

        E = self._outputs[-1].stop
        zero = torch.zeros(E, dtype=model.dtype, device=model.device)
        if weights is None:
            weights = torch.ones(len(X), dtype=model.dtype, device=model.device)
        weights = weights.to(model.dtype)
        hooks = {layer.name: perturbing(i) for i, layer in enumerate(self.layers)}
        with model.borrow() as module, _FORWARD_AD, _hooks(module, hooks):
            if self.curvature == "hessian":
                # (E,) gradient of a row's loss in the layers' outputs
                gradient = grad(row_loss, has_aux=True)
                rows = (None, 0, 0, 0)
                delta, inputs = vmap(gradient, in_dims=rows)(zero, X, y, weights)
                # (b, E, E) Hessian in the outputs, (b, D, E) inputs' Jacobian
                curvature, jacobian = vmap(jacfwd(gradient), in_dims=rows)(
                    zero, X, y, weights
                )
            else:

                def flat_output(perturbation, x):
                    output, inputs = row_output(perturbation, x)
                    return output.reshape(-1), inputs

                # (b, k, E) Jacobian of the output in the layers' outputs
                J, inputs = vmap(jacfwd(flat_output, has_aux=True), in_dims=(None, 0))(
                    zero, X
                )
        if self.curvature == "hessian":
            first = (delta.to(self.dtype), jacobian.to(self.dtype))
        else:
            J = J.to(self.dtype)
            H_out = model.output_hessians(X, y).to(self.dtype)  # (b, k, k)
            curvature = J.transpose(1, 2) @ H_out @ J  # (b, E, E)
            curvature *= weights.to(self.dtype)[:, None, None]
            first = None
        self._accumulate(inputs.to(self.dtype), curvature.to(self.dtype), first)

    def _accumulate(self, inputs, curvature, first):
        """Add the rows' outer products: ``curvature`` (n, E, E) in the layers'
        outputs; ``first``: the Hessian's ``(delta (n, E), d inputs / d
        outputs (n, D, E))``, or None."""
        n = len(inputs)
        ones = torch.ones(n, 1, dtype=self.dtype, device=inputs.device)
        x = []
        for layer, span in zip(self.layers, self._inputs):
            x_layer = inputs[:, span]
            x.append(
                torch.cat([x_layer, ones], 1) if layer.bias is not None else x_layer
            )
        L = len(self.layers)
        for a in range(L):
            out_a = self._outputs[a]
            j, q = torch.triu_indices(
                self._columns[a], self._columns[a], device=inputs.device
            )
            outer = x[a][:, j] * x[a][:, q]  # (n, pairs j <= q)
            self._second[a, a].addmm_(
                outer.T, curvature[:, out_a, out_a].reshape(n, -1)
            )
            for b in range(a + 1, L):
                out_b, in_b = self._outputs[b], self._inputs[b]
                outer = (x[a][:, :, None] * x[b][:, None, :]).reshape(n, -1)
                self._second[a, b].addmm_(
                    outer.T, curvature[:, out_a, out_b].reshape(n, -1)
                )
                if first is None:
                    continue
                delta, jacobian = first
                outer = (x[a][:, :, None] * delta[:, None, out_b]).reshape(n, -1)
                # (n, I_a, n_in_b): d x_b[q] / d z_a[i]
                response = jacobian[:, in_b, out_a].transpose(1, 2).reshape(n, -1)
                self._first[a, b].addmm_(outer.T, response)

    def write(self, H, scale):
        """Write ``scale`` times the sums into the (p, p) ``H`` (rows and columns of
        the layers' parameters)."""
        L = len(self.layers)
        for a in range(L):
            self._write_diagonal(H, scale, a)
            for b in range(a + 1, L):
                self._write_pair(H, scale, a, b)

    def _write_diagonal(self, H, scale, a):
        I, J = self.layers[a].n_out, self._columns[a]
        # the (j, q) and (q, j) entries are one sum, the row index[j, q]
        j, q = torch.triu_indices(J, J)
        index = torch.empty(J, J, dtype=torch.long)
        index[j, q] = index[q, j] = torch.arange(len(j))
        sums = self._second[a, a].view(-1, I, I)  # (pairs, I, I)
        parts = self._parts(a)
        # one input column j of the rows at a time: (I, I, J) gathered
        for column in range(J):
            values = sums[index[column].to(sums.device)].permute(1, 2, 0)
            rows = _rows_of_column(parts, column)
            for columns, q in parts:
                piece = values[:, :, q]
                H[rows, columns].view(piece.shape).copy_(piece).mul_(scale)

    def _write_pair(self, H, scale, a, b):
        I_a, J_a = self.layers[a].n_out, self._columns[a]
        I_b, J_b = self.layers[b].n_out, self._columns[b]
        n_in_b = self.layers[b].n_in
        # (I_a, J_a, I_b, J_b) and (I_a, J_a, I_b, n_in_b) views
        second = self._second[a, b].view(J_a, J_b, I_a, I_b).permute(2, 0, 3, 1)
        first = self._first.get((a, b))
        if first is not None:
            first = first.view(J_a, I_b, I_a, n_in_b).permute(2, 0, 1, 3)
        for rows, j in self._parts(a):
            for columns, q in self._parts(b):
                piece = second[:, j, :, q]
                target = H[rows, columns].view(piece.shape).copy_(piece)
                if first is not None and isinstance(q, slice):  # weight columns
                    target += first[:, j]
                target.mul_(scale)
                H[columns, rows] = H[rows, columns].T

    def _parts(self, a):
        """``(positions, column)`` of layer a's weight (columns ``:n_in``) and bias
        (its column of ones)."""
        layer = self.layers[a]
        parts = [(layer.weight, slice(0, layer.n_in))]
        if layer.bias is not None:
            parts.append((layer.bias, layer.n_in))
        return parts


def _spans(sizes):
    spans, start = [], 0
    for size in sizes:
        spans.append(slice(start, start + size))
        start += size
    return spans


def _rows_of_column(parts, column):
    """Positions of a layer's parameters at input column ``column`` (all
    outputs): a strided slice of the weight, or the bias."""
    (weight, columns), *bias = parts
    if column < columns.stop:
        return slice(weight.start + column, weight.stop, columns.stop)
    return bias[0][0]
