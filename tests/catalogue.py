"""Every influence estimator, listed once, and the data the contract tries them on.

A test that takes the ``entry`` fixture (conftest.py) runs once per estimator
in CATALOGUE, so a new estimator gets the contract tests (test_contract.py) and
the thread tests (test_model_safety.py) by being listed here. The parameters
are small and fast, pass ``damping`` explicitly (0.5: the damped curvature is
well conditioned, so the Krylov solvers converge in a few iterations), and make
every estimator deterministic with a positive semi-definite curvature.
"""

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.datasets import load_iris
from sklearn.preprocessing import StandardScaler
from user_model import user_module, with_user_state

import dataval
from dataval._base import BaseInfluence


@dataclass(frozen=True)
class Entry:
    cls: type
    params: dict
    # the parameter that takes state dicts saved along training, if any
    trajectory: str | None = None
    # what verbose=1 shows: the phase or the loop that runs longest
    progress: str = "scoring"
    # draws random batches in every solve (LiSSA): self_influence in parallel
    # workers draws other ones than a serial run, and is not the diagonal of
    # score on the training rows, whose solves draw others again
    stochastic_solve: bool = False
    # the influence is over every trainable parameter (n_params_ counts them);
    # Kronecker-factored estimators count their layers' parameters, the
    # projected ones their projected dimensions
    all_parameters: bool = False

    @property
    def id(self):
        return self.cls.__name__

    def make(self, states=None, **params):
        """The estimator, unfitted; ``states`` go to its trajectory parameter."""
        if self.trajectory is not None and states is not None:
            params = {self.trajectory: states, **params}
        return self.cls(**{"batch_size": 16, **self.params, **params})

    def trajectory_params(self, states):
        """``{trajectory: states}``, or nothing for an estimator without one."""
        return {} if self.trajectory is None else {self.trajectory: states}


CATALOGUE = [
    Entry(
        dataval.ExactInfluence,
        dict(damping=0.5, curvature="ggn"),
        progress="curvature",
        all_parameters=True,
    ),
    Entry(
        dataval.CGInfluence,
        # one Hessian-vector product over all 60 rows per iteration
        dict(damping=0.5, curvature="ggn", hessian_batch_size=60),
        progress="conjugate gradient",
        all_parameters=True,
    ),
    Entry(
        dataval.LiSSAInfluence,
        dict(damping=0.5, curvature="ggn", depth=5, random_state=0),
        progress="LiSSA",
        stochastic_solve=True,
        all_parameters=True,
    ),
    Entry(
        dataval.ArnoldiInfluence,
        dict(damping=0.5, curvature="ggn", rank=8, random_state=0),
        progress="Lanczos",
        all_parameters=True,
    ),
    Entry(dataval.KFACInfluence, dict(damping=0.5, random_state=0)),
    Entry(dataval.EKFACInfluence, dict(damping=0.5, random_state=0)),
    Entry(dataval.LoGraInfluence, dict(damping=0.5, random_state=0)),
    Entry(
        dataval.TRAKInfluence,
        dict(damping=0.5, projection_dim=32, random_state=0),
        trajectory="ensemble",
        all_parameters=True,
    ),
    Entry(
        dataval.TracIn,
        dict(learning_rates=0.1),
        trajectory="checkpoints",
        all_parameters=True,
    ),
    Entry(
        dataval.SourceInfluence,
        dict(damping=0.5, learning_rates=0.1, steps=100, random_state=0),
        trajectory="segments",
    ),
]

# Invalid values, by parameter name, for every parameter of every estimator:
# each must raise a ValueError or TypeError naming the parameter, at fit.
BAD_VALUES = {
    "damping": [-1.0, "big", None],
    "measurement": ["accuracy"],
    "loss": ["mse"],
    "batch_size": [0],
    "device": ["tpu"],
    "dtype": ["int8"],
    "random_state": ["seed"],
    "verbose": [-1],
    "n_jobs": [0, 1.5, "two"],
    "curvature": ["fisher"],
    "fisher": ["exact"],
    "layers": ["0"],
    "query_rank": [0],
    "rank": [0],
    "complement": [1],
    "max_iter": [0],
    "tol": [-1.0],
    "preconditioner": ["jacobi"],
    "preconditioner_rank": [0],
    "hessian_batch_size": [0],
    "depth": [0],
    "scale": [-1.0],
    "repeats": [0],
    "max_params": [0],
    "projection_dim": [0, 2.5],
    "factor_dim": [0],
    "eigenvalue_correction": ["yes"],
    "checkpoints": ["model.pt"],
    "ensemble": ["model.pt"],
    "segments": ["model.pt"],
    "learning_rates": [-1.0],
    "steps": [0],
}


def outputs(entry, estimator, X_test, y_test):
    """What the scoring methods return, by name (self_influence when deterministic)."""
    outputs = {
        "score": estimator.score(X_test, y_test),
        "top_k": estimator.top_k(X_test, y_test, k=5, kind="harmful"),
        "value": estimator.value(X_test, y_test),
    }
    if not entry.stochastic_solve:
        outputs["self_influence"] = estimator.self_influence()
    return outputs


def assert_same_outputs(got, expected, **tolerance):
    assert got.keys() == expected.keys()
    for name, frame in expected.items():
        if isinstance(frame, pd.Series):
            pd.testing.assert_series_equal(got[name], frame, **tolerance)
        else:
            pd.testing.assert_frame_equal(got[name], frame, **tolerance)


def influence_estimators():
    """Every influence estimator ``dataval`` exports."""
    return [
        getattr(dataval, name)
        for name in dataval.__all__
        if isinstance(getattr(dataval, name), type)
        and issubclass(getattr(dataval, name), BaseInfluence)
    ]


def frames():
    """``(X, y, X_test, y_test)``: iris as pandas, with indexes of the user's own."""
    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X).astype(np.float32)
    rows = np.random.RandomState(0).permutation(len(X))
    train, test = rows[:60], rows[60:68]
    columns = ["a", "b", "c", "d"]
    X_train = pd.DataFrame(
        X[train], columns=columns, index=[f"row{i}" for i in range(60)]
    )
    X_test = pd.DataFrame(X[test], columns=columns, index=100 + np.arange(8))
    return (
        X_train,
        pd.Series(y[train], index=X_train.index),
        X_test,
        pd.Series(y[test], index=X_test.index),
    )


@functools.cache
def _trajectory():
    """State dicts along a short training of ``user_module``; the last is final."""
    X, y, _, _ = frames()
    X, y = torch.tensor(X.to_numpy()), torch.tensor(y.to_numpy())
    module = user_module()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    states = []
    for step in range(1, 61):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(module(X), y).backward()
        optimizer.step()
        if step % 30 == 0:
            states.append({k: v.clone() for k, v in module.state_dict().items()})
    return tuple(states)


def checkpoints():
    """A fresh list of the training's state dicts (the tensors are shared)."""
    return [dict(state) for state in _trajectory()]


def trained_user_module():
    """The user's module at the end of the trajectory, hooks and ``.grad`` set."""
    module = user_module()
    module.load_state_dict(_trajectory()[-1])
    return with_user_state(module)
