"""Seeds and torch generators drawn from a ``random_state``."""

import torch
from sklearn.utils import check_random_state

#: seeds are drawn below this bound (the int32 range numpy and torch accept)
_SEED_BOUND = 2**31 - 1


def draw_seed(random_state):
    """An int seed from ``random_state`` (None, an int or a RandomState).

    A RandomState instance advances: successive draws give new seeds.
    """
    return int(check_random_state(random_state).randint(_SEED_BOUND))


def torch_generator(seed, device="cpu"):
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(int(seed))
