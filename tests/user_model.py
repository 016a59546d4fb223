"""The user's model as the tests see it, and a fingerprint of what dataval promises.

``fit`` and every later call leave the user's module exactly as it was: the
parameters (the same objects, types, values, dtypes, ``requires_grad``,
``.grad``), the train/eval mode of every submodule, its hooks and its buffers.
"""

import torch


def user_module(seed=0):
    """A small net with everything the promise covers, in train mode.

    A Conv2d (the Kronecker-factored estimators' other layer type) on the four
    features seen as a 2 x 2 image, batch norm with non-trivial statistics,
    dropout, a frozen bias, a forward hook, a forward pre-hook and a ``.grad``.
    """
    torch.manual_seed(seed)
    module = torch.nn.Sequential(
        torch.nn.Unflatten(1, (1, 2, 2)),
        torch.nn.Conv2d(1, 2, kernel_size=2, padding=1),  # (n, 2, 3, 3)
        torch.nn.Flatten(),
        torch.nn.Linear(18, 6),
        torch.nn.BatchNorm1d(6),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.5),
        torch.nn.Linear(6, 3),
    )
    module[3].bias.requires_grad_(False)
    with torch.no_grad():
        module(torch.randn(32, 4))  # batch norm statistics away from 0 and 1
    return module.train()


def _forward_hook(module, inputs, output):
    """A hook of the user's (module-level: the fitted estimators pickle it)."""


def _forward_pre_hook(module, inputs):
    """A hook of the user's, run before the forward."""


def with_user_state(module):
    """``module`` with the hooks and gradient a user's training leaves behind."""
    module[7].register_forward_hook(_forward_hook)
    module[1].register_forward_pre_hook(_forward_pre_hook)
    module[7].weight.grad = torch.ones_like(module[7].weight)
    return module.train()


def fingerprint(module):
    """Everything about ``module`` that dataval promises to leave alone."""
    params = list(module.parameters())
    return {
        "objects": [id(p) for p in params],
        "types": [type(p) for p in params],
        "dtypes": [p.dtype for p in params],
        "requires_grad": [p.requires_grad for p in params],
        "modes": [m.training for m in module.modules()],
        "hooks": [
            (
                dict(m._forward_hooks),
                dict(m._forward_pre_hooks),
                dict(m._backward_hooks),
                dict(m._backward_pre_hooks),
            )
            for m in module.modules()
        ],
        "state": {k: v.clone() for k, v in module.state_dict().items()},
        "grads": [None if p.grad is None else p.grad.clone() for p in params],
    }


def assert_unchanged(before, module):
    after = fingerprint(module)
    for key in ("objects", "types", "dtypes", "requires_grad", "modes", "hooks"):
        assert before[key] == after[key], key
    assert before["state"].keys() == after["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), key
    for a, b in zip(before["grads"], after["grads"], strict=True):
        assert (a is None and b is None) or torch.equal(a, b), "grad"
