"""TracIn: gradient similarity summed over training checkpoints."""

from numbers import Real

import numpy as np
import torch

from ..._base import BaseInfluence
from ..._core.parts import FlatGradients, Scaled, Stacked
from ..._numerics.checkpoints import checkpoint_models


class TracIn(BaseInfluence):
    """TracIn-CP: learning-rate-weighted gradient dot products over checkpoints.

    ``influence[i, j] = sum_k eta_k g_i(theta_k) . g_j(theta_k)``: the first-order
    decrease of test loss ``i`` caused by the training steps on row ``j``
    (Pruthi et al., 2020). Same sign as the influence equation: positive =
    helpful. No Hessian and no ``1/n``.

    Parameters
    ----------
    measurement : {"loss", "margin", "log_prob"} or callable, default="loss"
        As in :class:`ExactInfluence`.
    loss : "auto" or callable, default="auto"
        As in :class:`ExactInfluence`.
    batch_size : int, default=256
        Rows per vectorized gradient pass.
    device : "auto", str or torch.device, default="auto"
        Where to compute; ``"auto"`` picks CUDA when available.
    dtype : None, str or torch.dtype, default=None
        Floating dtype of the gradient passes; ``None`` means float32.
        With ``"bfloat16"`` or ``"float16"`` the dot products are still
        accumulated in float32.
    verbose : int, default=0
        Show progress bars when positive.
    n_jobs : int, default=None
        Workers scoring slices of the training set in parallel (joblib;
        threads unless a ``joblib.parallel_config`` picks another backend,
        e.g. ``"dask"``). ``None`` means 1 outside such a context, ``-1`` all
        processors. See :doc:`/scaling`.
    checkpoints : list of dict or path, default=None
        State dicts of the model saved during training (or files written with
        ``torch.save(model.state_dict(), path)``, loaded with
        ``weights_only=True``). ``None`` uses the fitted model's own
        parameters as a single checkpoint.
    learning_rates : float or list of float, default=1.0
        Learning rate in effect at each checkpoint; one value applies to all.

    Attributes
    ----------
    learning_rates_ : ndarray of shape (n_checkpoints,)
        Learning rate of each checkpoint.
    n_checkpoints_ : int
        Number of checkpoints.
    n_train_ : int
        Number of training rows.
    n_params_ : int
        Number of trainable parameters (per checkpoint).
    train_index_ : pandas.Index
        Index of the training rows (named ``train``).

    Examples
    --------
    >>> import torch
    >>> from dataval import TracIn
    >>> torch.manual_seed(0)
    <torch._C.Generator object at ...>
    >>> net = torch.nn.Linear(3, 2)
    >>> X, y = torch.randn(20, 3), torch.randint(0, 2, (20,))
    >>> early = {k: v.clone() for k, v in net.state_dict().items()}
    >>> tracin = TracIn(checkpoints=[early, net.state_dict()], learning_rates=0.1)
    >>> tracin.fit(net, X, y).score(X[:2], y[:2]).shape
    (2, 20)
    """

    _parameter_constraints = {
        **BaseInfluence._parameter_constraints,
        "checkpoints": [None, list, tuple],
        "learning_rates": [Real, list, tuple, np.ndarray],
    }
    _saved_state = ("learning_rates_", "n_checkpoints_", "_rates")
    _per_training_point = False

    def __init__(
        self,
        *,
        measurement="loss",
        loss="auto",
        batch_size=256,
        device="auto",
        dtype=None,
        verbose=0,
        n_jobs=None,
        checkpoints=None,
        learning_rates=1.0,
    ):
        self.measurement = measurement
        self.loss = loss
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.verbose = verbose
        self.n_jobs = n_jobs
        self.checkpoints = checkpoints
        self.learning_rates = learning_rates

    def _fit_curvature(self):
        self._models = checkpoint_models(self.model_, self.checkpoints)
        rates = np.atleast_1d(np.asarray(self.learning_rates, dtype=np.float64))
        if rates.ndim != 1 or len(rates) not in (1, len(self._models)):
            raise ValueError(
                f"learning_rates must be one number or one per checkpoint "
                f"({len(self._models)}), got {len(rates)} values."
            )
        if not np.all(np.isfinite(rates)) or np.any(rates <= 0):
            raise ValueError(f"learning_rates must be positive, got {rates.tolist()}.")
        self.learning_rates_ = np.broadcast_to(rates, (len(self._models),)).copy()
        self.n_checkpoints_ = len(self._models)
        # (K * p,): each checkpoint's block of the concatenated gradient times eta_k
        self._rates = torch.repeat_interleave(
            torch.as_tensor(self.learning_rates_, dtype=self.dtype_),
            self.n_params_,
        ).to(self.device_)

    def _restore_state(self, state):
        super()._restore_state(state)
        self._models = checkpoint_models(self.model_, self.checkpoints)

    def _featurizer(self):
        # (b, K * p): gradients at every checkpoint side by side
        return Stacked([FlatGradients(m, self.dtype_) for m in self._models])

    def _curvature(self):
        # eta_k on checkpoint k's block; a sum over the trajectory, no 1/n
        return Scaled(self._rates, mean_objective=False)
