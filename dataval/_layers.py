"""Inputs and output gradients of Linear and Conv2d layers, captured with hooks.

A layer ``y_l = W a_l + b`` applied at ``L`` positions of a row (sequence
positions, image patches) has the per-sample gradient
``sum_l g_l [a_l; 1]^T`` (d_out, d_in + 1), with ``g_l`` the gradient of the
loss with respect to the pre-activation ``y_l`` and the ``1`` a homogeneous
coordinate for the bias (absent when the layer has no trainable bias).
Kronecker-factored curvature and gradient projections work on ``a`` and ``g``
directly, without forming per-sample gradients.

Forward hooks exist only inside :func:`capture`, on the calling thread's copy
of the private module, and are removed when it returns or raises.
"""

from contextlib import contextmanager

import torch
import torch.nn.functional as F

SUPPORTED_LAYERS = "torch.nn.Linear and torch.nn.Conv2d (groups=1)"


class Layer:
    """A supported layer: its name, module and gradient matrix shape.

    The layer's gradient is a ``(d_out, d_in)`` matrix whose last column is
    the bias when ``has_bias``; flattened row by row it is the layer's block of
    the parameter vector the estimators use.
    """

    def __init__(self, name, module):
        self.name = name
        self.module = module
        self.has_bias = module.bias is not None and module.bias.requires_grad
        weight = module.weight
        self.d_out = weight.shape[0]
        self.d_in = weight[0].numel() + int(self.has_bias)
        prefix = f"{name}." if name else ""
        #: names of the parameters in the gradient matrix, weight first
        self.parameter_names = [prefix + "weight"] + (
            [prefix + "bias"] if self.has_bias else []
        )

    @property
    def size(self):
        return self.d_out * self.d_in

    def inputs(self, x):
        """Layer input ``x`` as ``a`` of shape (B, L, d_in)."""
        if isinstance(self.module, torch.nn.Conv2d):
            conv = self.module
            mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
            # (B, C * kh * kw, L) patches, in the order of weight[o].flatten()
            x = F.pad(x, conv._reversed_padding_repeated_twice, mode=mode)
            a = F.unfold(x, conv.kernel_size, conv.dilation, 0, conv.stride)
            a = a.transpose(1, 2)
        else:
            a = x.reshape(x.shape[0], -1, x.shape[-1])
        if self.has_bias:
            a = torch.cat([a, a.new_ones(a.shape[:-1] + (1,))], -1)
        return a

    def output_grads(self, grad):
        """Gradient with respect to the layer's output as ``g`` (B, L, d_out)."""
        if isinstance(self.module, torch.nn.Conv2d):
            return grad.reshape(grad.shape[0], self.d_out, -1).transpose(1, 2)
        return grad.reshape(grad.shape[0], -1, self.d_out)

    def __repr__(self):
        return f"Layer({self.name!r}, d_out={self.d_out}, d_in={self.d_in})"


def _is_supported(module):
    if isinstance(module, torch.nn.Conv2d):
        return module.groups == 1
    return isinstance(module, torch.nn.Linear)


def select_layers(module, names=None):
    """The supported layers of ``module`` with a trainable weight, in module order.

    ``names`` restricts them to the listed submodule names; a name that is not
    a submodule, not a supported layer or has a frozen weight raises an error.
    """
    modules = dict(module.named_modules())
    _check_untied(module)
    fused = _fused_attention(modules)
    supported = [
        name
        for name, m in modules.items()
        if _is_supported(m) and m.weight.requires_grad and name not in fused
    ]
    if names is None:
        trained = [
            name
            for name in fused.values()
            if any(p.requires_grad for p in modules[name].parameters())
        ]
        if trained:
            raise ValueError(_fused_attention_message(trained, supported))
        if not supported:
            raise ValueError(
                f"The model has no {SUPPORTED_LAYERS} layer with a trainable weight; "
                "Kronecker-factored influence needs at least one. Use ExactInfluence "
                "or another estimator for this model."
            )
        return [Layer(name, modules[name]) for name in supported]
    names = list(dict.fromkeys(names))
    for name in names:
        if name in supported:
            continue
        if name not in modules:
            problem = "is not a submodule of the model"
        elif name in fused:
            problem = (
                f"is the output projection of the torch.nn.MultiheadAttention "
                f"{fused[name]!r}, which applies its weight without calling it"
            )
        elif not _is_supported(modules[name]):
            problem = (
                f"is a {type(modules[name]).__name__}, not one of {SUPPORTED_LAYERS}"
            )
        else:
            problem = "has a frozen weight (requires_grad=False)"
        raise ValueError(
            f"layers contains {name!r}, which {problem}. Choose among the supported "
            f"layers {supported}, or leave layers=None to use all of them."
        )
    if not names:
        raise ValueError(
            f"layers is empty; name at least one of {supported} or use layers=None."
        )
    return [Layer(name, modules[name]) for name in supported if name in names]


def _fused_attention(modules):
    """``{out_proj name: attention name}`` of every ``nn.MultiheadAttention``."""
    return {
        f"{name}.out_proj" if name else "out_proj": name
        for name, m in modules.items()
        if isinstance(m, torch.nn.MultiheadAttention)
    }


def _fused_attention_message(attention, supported):
    return (
        f"The model has torch.nn.MultiheadAttention {attention}: it keeps the query, "
        "key and value projections in one fused parameter (in_proj_weight, not a "
        "torch.nn.Linear) and applies out_proj's weight without calling that layer, "
        "so Kronecker-factored influence cannot see them. Write the attention with "
        "torch.nn.Linear projections (query, key, value, output), or pass layers= "
        f"naming only other layers (among {supported}) to hold the attention fixed, "
        "or use an estimator that differentiates every parameter: TracIn, "
        "TRAKInfluence, or ExactInfluence, CGInfluence and ArnoldiInfluence (these "
        "three use forward-mode autodiff, which torch's fused attention kernel, "
        "taken with need_weights=False, does not implement)."
    )


def _check_untied(module):
    """Refuse a supported layer whose weight is also used under another name."""
    names = {}
    for name, parameter in module.named_parameters(remove_duplicate=False):
        names.setdefault(id(parameter), []).append(name)
    for name, m in module.named_modules():
        if _is_supported(m) and len(names.get(id(m.weight), ())) > 1:
            raise ValueError(
                f"The model ties the weight of layer {name!r} to "
                f"{[n for n in names[id(m.weight)] if n != f'{name}.weight']}: a "
                "shared weight's gradient sums over its uses, which one "
                "Kronecker-factored block per layer cannot represent. Use "
                "ExactInfluence, CGInfluence or ArnoldiInfluence (which handle tied "
                "weights), or untie the weights."
            )


def _recorder(calls):
    def hook(module, inputs, output):
        calls.append((inputs[0].detach(), output))
        # the rest of the network gets a copy: an in-place operation after the
        # layer (ReLU(inplace=True)) must not overwrite the recorded output
        return output.clone()

    return hook


@contextmanager
def _recording(module, layers):
    # {name: [(input, output), ...]}: one entry per call (shared layers: several)
    records = {layer.name: [] for layer in layers}
    handles = []
    try:
        for layer in layers:
            hook = _recorder(records[layer.name])
            submodule = module.get_submodule(layer.name)
            handles.append(submodule.register_forward_hook(hook))
        yield records
    finally:
        for handle in handles:
            handle.remove()


def capture(model, layers, X, output_vectors):
    """Layer inputs and backpropagated output gradients for one batch.

    Parameters
    ----------
    model : FunctionalModel
    layers : list of Layer
    X : tensor
        A prepared batch of B rows.
    output_vectors : callable
        ``output_vectors(output)`` returns (K, *output.shape): K vectors to
        backpropagate from the model's output (e.g. gradients of the loss
        with respect to the output).

    Returns
    -------
    signals : dict of str to (a, g)
        ``a`` (B, L, d_in) and ``g`` (K, B, L, d_out) per layer. A layer
        called several times per forward pass has its calls side by side
        along L.
    """
    # hooks go on the copy of the module this thread computes with
    with model.borrow() as module, _recording(module, layers) as records:
        output = model.forward(X)
    unused = [name for name, calls in records.items() if not calls]
    if unused:
        raise ValueError(
            f"The layers {unused} are not called in the model's forward pass; "
            "leave them out of layers."
        )
    outputs = [out for layer in layers for _, out in records[layer.name]]
    # the loss's gradients in at least float32: in 16 bits, softmax(z) - y
    # of a confidently predicted row rounds to 0 (1 - 1e-4 is 1 in bfloat16)
    wide = torch.promote_types(output.dtype, torch.float32)
    vectors = output_vectors(output.detach().to(wide)).to(output.dtype)
    # grads[k][c]: vector k backpropagated to the c-th captured output
    grads = [
        torch.autograd.grad(
            output, outputs, vector, retain_graph=True, allow_unused=True
        )
        for vector in vectors
    ]
    signals, c = {}, 0
    for layer in layers:
        a_calls, g_calls = [], []
        for x, out in records[layer.name]:
            # (K, B, *out.shape[1:]); None: the output does not reach the loss
            g = [torch.zeros_like(out) if k[c] is None else k[c] for k in grads]
            g = g[0][None] if len(g) == 1 else torch.stack(g)
            a_calls.append(layer.inputs(x))
            g_calls.append(
                layer.output_grads(g.flatten(0, 1)).unflatten(0, g.shape[:2])
            )
            c += 1
        signals[layer.name] = (_join(a_calls, 1), _join(g_calls, 2))
    return signals


def _join(calls, dim):
    """The calls' tensors side by side along ``dim`` (one call: no copy)."""
    return calls[0] if len(calls) == 1 else torch.cat(calls, dim)


#: the integer view and exponent bits of each floating dtype
_EXPONENT_BITS = {
    torch.float64: (torch.int64, 0x7FF0000000000000),
    torch.float32: (torch.int32, 0x7F800000),
    torch.float16: (torch.int16, 0x7C00),
    torch.bfloat16: (torch.int16, 0x7F80),
}

#: entries per piece of :func:`flush_denormals`
_FLUSH_PIECE = 2**17


def flush_denormals(x):
    """``x`` with its subnormal entries set to 0, in place.

    Gradients of confidently predicted rows reach below float32's smallest
    normal number (1.2e-38); a matrix product reading such entries runs
    several times slower on CPUs, for a contribution below 1e-38. The test
    reads the exponent bits as integers (no floating-point operation on a
    subnormal, which would itself be slow): an entry whose exponent bits are
    all zero is subnormal or zero, and becomes zero.
    """
    if x.dtype in _EXPONENT_BITS:
        integer, exponent = _EXPONENT_BITS[x.dtype]
        # a contiguous tensor in cache-sized pieces: the temporaries stay in
        # the cache (on a 67M-entry block, 3x less time than in one piece)
        pieces = x.view(-1).split(_FLUSH_PIECE) if x.is_contiguous() else [x]
        for piece in pieces:
            bits = piece.view(integer)
            bits.mul_((bits & exponent) != 0)
    elif x.is_floating_point():
        x.masked_fill_(x.abs() < torch.finfo(x.dtype).tiny, 0)
    return x


def per_sample_gradients(a, g):
    """Flat per-sample gradients (B, d_out * d_in) from ``a`` (B, L, d_in), ``g`` (B, L, d_out)."""
    return torch.einsum("bli,blo->boi", a, g).reshape(a.shape[0], -1)


#: bytes of the (rows x queries x width) intermediate of one :func:`pair_scores`
#: product on a CPU: small enough to be reduced from the cache it was written to
PAIR_BLOCK_BYTES = 4 * 2**20


def pair_scores(Q, a, g, block_bytes=None):
    """(m, B): ``sum_l g_bl^T Q_m a_bl`` for matrices ``Q`` (m, d_out, d_in).

    ``a`` (B, L, d_in) and ``g`` (B, L, d_out) are a batch's layer signals.
    The product contracts the wider side of ``Q`` in one matrix product per
    block of queries, then the other side by a batched matrix-vector
    product; a block's intermediate is at most ``block_bytes`` (default
    :data:`PAIR_BLOCK_BYTES` on a CPU, unlimited on a GPU), so it is reduced
    while still in the cache instead of travelling to memory and back.
    """
    m, d_out, d_in = Q.shape
    B, L, _ = a.shape
    if L * m * min(d_out, d_in) >= d_out * d_in:
        # the per-sample gradients (B, d_out * d_in) are the smaller intermediate
        return Q.reshape(m, -1) @ per_sample_gradients(a, g).T
    if d_out <= d_in:
        wide, narrow, matrices = a, g, Q.reshape(m * d_out, d_in)
    else:
        wide, narrow, matrices = g, a, Q.transpose(1, 2).reshape(m * d_in, d_out)
    width = narrow.shape[2]
    wide, narrow = wide.reshape(B * L, -1), narrow.reshape(B * L, width, 1)
    if block_bytes is None:
        block_bytes = PAIR_BLOCK_BYTES if Q.device.type == "cpu" else None
    if block_bytes is None:
        block = m
    else:
        block = max(1, min(m, block_bytes // (B * L * width * Q.element_size())))
    out = Q.new_empty(m, B)
    for start in range(0, m, block):
        stop = min(m, start + block)
        # (B L, queries, width): the block's queries applied to the wide side
        projected = (wide @ matrices[start * width : stop * width].T).view(
            B * L, stop - start, width
        )
        out[start:stop] = torch.bmm(projected, narrow).view(B, L, -1).sum(1).T
    return out


def pair_layout(Q):
    """``Q`` (m, d_out, d_in) stored as :func:`pair_scores` reads it.

    Its product contracts the wider side: ``Q`` row-major when
    ``d_out <= d_in``, else with each matrix stored transposed, so that no
    training batch copies the query matrices again.
    """
    if Q.shape[1] <= Q.shape[2]:
        return Q.contiguous()
    return Q.transpose(1, 2).contiguous().transpose(1, 2)


def low_rank_pair_scores(U, V, a, g):
    """(m, B): :func:`pair_scores` for ``Q_m = U_m V_m^T``.

    ``U`` (m, d_out, r), ``V`` (m, d_in, r): costs ``B L m r (d_out + d_in)``
    instead of ``B m d_out d_in``.
    """
    m, d_out, r = U.shape
    B, L, d_in = a.shape
    gu = (g @ U.permute(1, 0, 2).reshape(d_out, m * r)).view(B, L, m, r)
    av = (a @ V.permute(1, 0, 2).reshape(d_in, m * r)).view(B, L, m, r)
    return (gu * av).sum((1, 3)).T


def diagonal_scores(Q, a, g):
    """(B,): ``sum_l g_bl^T Q_b a_bl``, each row with its own matrix ``Q_b``."""
    return ((Q @ a.transpose(1, 2)) * g.transpose(1, 2)).sum((1, 2))
