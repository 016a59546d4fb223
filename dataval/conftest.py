"""pytest configuration for the doctests (as scikit-learn ships sklearn/conftest.py)."""

import torch

# Doctest models are tiny: one thread avoids oversubscribing small machines.
torch.set_num_threads(1)
