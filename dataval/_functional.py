"""A fitted model as pure functions of one flat parameter vector.

Everything that differentiates the model goes through :class:`FunctionalModel`:
per-sample gradients, Hessian- and Gauss-Newton-vector products. It never sees
the user's module: the adapters hand it a private copy (made once, at ``fit``,
sharing no tensor with the user's), kept in eval mode. Computing a gradient
swaps tensors into a module's parameter slots (``functional_call``) and layer
hooks are registered on it, so each thread that computes at a given time
borrows its own shallow copy of that private module from a pool
(:class:`ModulePool`): several threads may score one fitted estimator at once.
"""

import threading
from contextlib import contextmanager

import torch
from torch.func import functional_call, grad, jacfwd, jacrev, jvp, vjp, vmap

from ._adapters import layer_of
from ._parallel import copy_sharing_tensors

# torch's forward-mode AD levels are process-wide, not per thread: two threads
# running jvp/jacfwd at once fail ("no level exists"), so they take turns
_FORWARD_AD = threading.RLock()


def loss_hessians(loss, output, target):
    """Hessian of each row's loss in its flattened output, ``(B, k, k)``."""

    def row_loss(o, t):
        return loss(o.unsqueeze(0), t.unsqueeze(0)).sum()

    with _FORWARD_AD:
        hessians = vmap(jacfwd(jacrev(row_loss)))(output, target)
    k = output[0].numel()
    return hessians.reshape(len(output), k, k)


class ModulePool:
    """Copies of one private module, one per thread computing with it.

    The copies share the module's tensors (read-only: ``functional_call``
    swaps tensors into a copy's own parameter slots and never writes to the
    tensors) and each has its own slots and hooks. A thread borrows a copy
    for the duration of a computation; nested borrows in one thread return
    the same copy. The module itself is never lent, so it never carries a
    thread's hooks into a new copy. Pickling keeps the module only.
    """

    def __init__(self, module):
        self.module = module
        self._free = []
        self._lock = threading.Lock()
        self._local = threading.local()

    @contextmanager
    def borrow(self):
        """The calling thread's copy of the module, for the ``with`` block."""
        module = getattr(self._local, "module", None)
        if module is not None:
            yield module
            return
        with self._lock:
            module = self._free.pop() if self._free else None
        if module is None:
            module = copy_sharing_tensors(self.module)
        self._local.module = module
        try:
            yield module
        finally:
            self._local.module = None
            with self._lock:
                self._free.append(module)

    def current(self):
        """The module borrowed by the calling thread."""
        module = getattr(self._local, "module", None)
        if module is None:
            raise RuntimeError("a model computation ran outside ModulePool.borrow()")
        return module

    def __getstate__(self):
        return {"module": self.module}

    def __setstate__(self, state):
        self.__init__(state["module"])


def _layer_slices(names, shapes):
    # consecutive parameters of the same module form one layer
    layers, start = [], 0
    for name, shape in zip(names, shapes):
        size = int(torch.Size(shape).numel())
        layer = layer_of(name)
        if layers and layers[-1][0] == layer:
            layers[-1] = (layer, slice(layers[-1][1].start, start + size))
        else:
            layers.append((layer, slice(start, start + size)))
        start += size
    return layers


class FunctionalModel:
    """An :class:`~dataval._adapters.AdaptedModel` on one device and dtype.

    Parameters
    ----------
    adapted : AdaptedModel
    device : torch.device
    dtype : torch.dtype
        Floating dtype of the parameter copies and inputs.
    state_dict : dict, default=None
        Parameters (and buffers) to use instead of the module's own, e.g. a
        training checkpoint.
    """

    def __init__(self, adapted, device, dtype, state_dict=None):
        self.adapted = adapted
        self.device = device
        self.dtype = dtype
        params = adapted.trainable_parameters()
        fixed = adapted.fixed_tensors()
        if state_dict is not None:
            params = {
                name: _from_state(state_dict, name, p) for name, p in params.items()
            }
            fixed = {name: state_dict.get(name, t) for name, t in fixed.items()}
        self.names = list(params)
        self.shapes = [tuple(p.shape) for p in params.values()]
        self.sizes = [int(p.numel()) for p in params.values()]
        # (p,) detached copy: the user's tensors are never handed to autograd
        self.theta = torch.cat(
            [p.detach().reshape(-1).to(device, dtype) for p in params.values()]
        )
        self.fixed = {name: self._cast(t.detach()) for name, t in fixed.items()}
        source = "model" if state_dict is None else "checkpoint"
        _check_finite_tensors({**params, **fixed}, source)
        self.l2 = torch.cat(
            [
                torch.as_tensor(adapted.l2.get(name, 0.0), dtype=dtype)
                .expand(shape)
                .reshape(-1)
                for name, shape in zip(self.names, self.shapes)
            ]
        ).to(device)
        self.layers = _layer_slices(self.names, self.shapes)
        self.modules = ModulePool(adapted.module)

    @property
    def n_params(self):
        return self.theta.numel()

    def _cast(self, tensor):
        tensor = tensor.to(self.device)
        return tensor.to(self.dtype) if tensor.is_floating_point() else tensor

    def unflatten(self, theta):
        """``{name: view}`` of a flat ``(p,)`` vector."""
        pieces = torch.split(theta, self.sizes)
        return {
            name: piece.view(shape)
            for name, piece, shape in zip(self.names, pieces, self.shapes)
        }

    def borrow(self):
        """Context manager: the calling thread's copy of the private module."""
        return self.modules.borrow()

    def _forward(self, theta, X):
        return functional_call(
            self.modules.current(), (self.unflatten(theta), self.fixed), (X,)
        )

    def _batch_loss(self, theta, X, target, weights=None):
        return _weighted_sum(
            self.adapted.loss(self._forward(theta, X), target), weights
        )

    def prepare(self, X, y=None):
        """Move a batch to the device (floating data cast to the dtype)."""
        X = self._cast(X)
        return X if y is None else (X, self._cast(y))

    def outputs(self, X):
        """Model outputs for a prepared batch, without gradients."""
        with self.borrow(), torch.no_grad():
            return self._forward(self.theta, X)

    def forward(self, X):
        """Model outputs for a prepared batch, with autograd recording.

        The parameters are a fresh leaf, so gradients can be taken with respect
        to intermediate tensors (e.g. captured by forward hooks) and never
        reach the user's tensors.
        """
        theta = self.theta.detach().requires_grad_()
        with self.borrow(), torch.enable_grad():
            return self._forward(theta, X)

    def losses(self, X, y):
        """Per-sample losses ``(B,)`` for a prepared batch."""
        with self.borrow(), torch.no_grad():
            return self.adapted.loss(*_in_float32(self._forward(self.theta, X), y))

    def per_sample_grads(self, X, y, function=None):
        """Gradients of each row's loss, ``(B, p)``.

        ``function(output, target)`` (one value per row) replaces the loss,
        e.g. a measurement on the query side.
        """
        function = self.adapted.loss if function is None else function

        def row_value(theta, x, target):
            output = self._forward(theta, x.unsqueeze(0))
            return function(*_in_float32(output, target.unsqueeze(0))).sum()

        with self.borrow():
            return vmap(grad(row_value), in_dims=(None, 0, 0))(self.theta, X, y)

    def batch_grad(self, X, y):
        """Gradient of the summed loss of a batch, ``(p,)``."""
        with self.borrow():
            return grad(self._batch_loss)(self.theta, X, y)

    def per_sample_jacobians(self, X):
        """Jacobians of each row's flattened output, ``(B, k, p)``."""

        def row_output(theta, x):
            return self._forward(theta, x.unsqueeze(0)).reshape(-1)

        with self.borrow():
            return vmap(jacrev(row_output), in_dims=(None, 0))(self.theta, X)

    def output_hessians(self, X, y):
        """Hessian of each row's loss in its flattened output, ``(B, k, k)``."""
        return loss_hessians(self.adapted.loss, self.outputs(X), y)

    def curvature_matvec(
        self, V, X, y, curvature="hessian", weights=None, output_hessians=None
    ):
        """``V @ C`` for the summed loss of a batch, ``V`` of shape ``(k, p)``.

        ``C`` is the Hessian of ``sum_b w_b loss_b`` (``curvature="hessian"``)
        or its Gauss-Newton matrix ``J^T H_out J`` (``"ggn"``); ``weights``
        (b,) default to ones. No regularizer, no normalization: callers add
        ``l2`` and divide by ``n``. ``output_hessians`` (b, o, o): the rows'
        loss Hessians in their flattened outputs (``output_hessians()``),
        when the caller keeps them; the Gauss-Newton product then multiplies
        by them instead of differentiating the loss once per vector.
        """
        with self.borrow(), _FORWARD_AD:
            if curvature == "hessian":
                gradient = grad(self._batch_loss)

                def product(v):
                    return jvp(
                        lambda t: gradient(t, X, y, weights), (self.theta,), (v,)
                    )[1]

                return vmap(product)(V)
            output, output_vjp = vjp(lambda t: self._forward(t, X), self.theta)

            def jacobian_product(v):
                return jvp(lambda t: self._forward(t, X), (self.theta,), (v,))[1]

            if output_hessians is None:
                output_grad = grad(
                    lambda o: _weighted_sum(self.adapted.loss(o, y), weights)
                )

                def product(v):
                    hjv = jvp(output_grad, (output,), (jacobian_product(v),))[1]
                    return output_vjp(hjv)[0]

                return vmap(product)(V)
            if weights is not None:
                output_hessians = output_hessians * weights.to(output).view(-1, 1, 1)
            JV = vmap(jacobian_product)(V)  # (k, b, ...)
            flat = JV.reshape(len(V), len(X), -1)  # (k, b, o)
            # H_b (J v)_b for all k vectors at once (under vmap it costs ten
            # times more), one output column at a time: unlike a batched
            # matrix product, the same arithmetic for any k, so results do
            # not depend on how the vectors are chunked
            columns = output_hessians.permute(2, 0, 1).contiguous()  # (o, b, o)
            entries = flat.permute(2, 0, 1).contiguous()  # (o, k, b)
            HJV = torch.zeros_like(flat)
            for column, entry in zip(columns, entries):
                HJV.addcmul_(column, entry[..., None])
            return vmap(output_vjp)(HJV.reshape(JV.shape))[0]


def _in_float32(output, target):
    """16-bit outputs and targets cast to float32 for the loss.

    In 16 bits the loss gradient of a confidently predicted row (``softmax -
    y`` for a cross-entropy) rounds to zero; the rest of the pass stays in 16
    bits, the gradient flows back through the cast.
    """
    if output.dtype in (torch.float16, torch.bfloat16):
        output = output.float()
        if target.is_floating_point():
            target = target.float()
    return output, target


def _check_finite_tensors(tensors, source):
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise FloatingPointError(
                f"The {source}'s tensor {name!r} contains NaN or infinity; influence "
                f"of a {source} with non-finite parameters or buffers is undefined. "
                "Use a model (or checkpoint) saved before training diverged."
            )


def _weighted_sum(losses, weights):
    """``sum_b w_b loss_b`` of per-row losses (b,); plain sum for no weights."""
    return losses.sum() if weights is None else (losses * weights.to(losses)).sum()


def _from_state(state_dict, name, default):
    if name not in state_dict:
        raise KeyError(
            f"The checkpoint has no entry {name!r}; it must be a state_dict of the "
            "same model (keys like those of model.state_dict())."
        )
    value = state_dict[name]
    if tuple(value.shape) != tuple(default.shape):
        raise ValueError(
            f"Checkpoint entry {name!r} has shape {tuple(value.shape)}, the model's "
            f"parameter has {tuple(default.shape)}."
        )
    return value
