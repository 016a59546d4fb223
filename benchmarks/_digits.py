"""The noisy-digits MLP shared by the benchmarks of issue 13.

A 64-64-10 scikit-learn ``MLPClassifier`` (4,810 parameters) trained on
1,497 digits of which 10 % carry a flipped label, with 50 held-out test
rows; influence with damping 1e-2. ``noisy_digits_mlp`` is the ReLU network
trained by Adam for 500 iterations (not at a minimum of its objective);
``converged_digits_mlp`` a tanh network trained by L-BFGS to a small
gradient, for the comparisons with retraining.
"""

import warnings

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

DAMPING = 1e-2
N_TRAIN, N_TEST, FLIPPED = 1497, 50, 0.1


def noisy_digits(seed=0):
    """``(X_train, y_train, X_test, y_test)`` with 10 % of ``y_train`` flipped."""
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(X))
    X, y = X[order] / 16.0, y[order]
    y_train = y[:N_TRAIN].copy()
    flip = rng.choice(N_TRAIN, int(FLIPPED * N_TRAIN), replace=False)
    y_train[flip] = (y_train[flip] + rng.integers(1, 10, len(flip))) % 10
    test = slice(N_TRAIN, N_TRAIN + N_TEST)
    return X[:N_TRAIN], y_train, X[test], y[test]


def noisy_digits_mlp(seed=0):
    """The unfitted classifier (retrained as is by the LDS)."""
    return MLPClassifier(
        hidden_layer_sizes=(64,), alpha=1e-3, max_iter=500, random_state=seed
    )


def converged_digits_mlp(seed=0):
    """The unfitted classifier whose fits end at a minimum of its objective.

    Full-batch L-BFGS with L2 ``alpha=1`` on a smooth (tanh) network: on the
    1,497 rows it stops where the objective's gradient is about 1e-3 of the
    per-row gradients' size (ReLU networks stall at their kinks, at 0.06 to
    0.3 of it).
    """
    return MLPClassifier(
        hidden_layer_sizes=(64,),
        activation="tanh",
        solver="lbfgs",
        alpha=1.0,
        tol=1e-9,
        max_iter=20_000,
        max_fun=100_000,
        random_state=seed,
    )


def fitted(data, seed=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return noisy_digits_mlp(seed).fit(data[0], data[1])


def as_torch(model, dtype=torch.float32):
    """The fitted classifier as a torch module (logits), for the peers."""
    layers = []
    for W, b in zip(model.coefs_, model.intercepts_):
        linear = torch.nn.Linear(*W.shape, dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(torch.as_tensor(W.T))
            linear.bias.copy_(torch.as_tensor(b))
        layers += [linear, torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1]).eval()
