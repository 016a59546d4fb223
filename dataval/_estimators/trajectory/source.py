"""Source: influence through approximately unrolled training segments."""

from numbers import Real

import numpy as np
import torch

from ..._base import BaseInfluence
from ..._core.parts import Curvature, Stacked
from ..._numerics.checkpoints import checkpoint_models
from ..kronecker.ekfac import EKFACInfluence


def _per_segment(values, n_segments, name):
    """``values`` as a positive float array with one entry per segment."""
    values = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if values.ndim != 1 or len(values) not in (1, n_segments):
        raise ValueError(
            f"{name} must be one number or one per segment ({n_segments}), got "
            f"{len(values)} values."
        )
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"{name} must be positive, got {values.tolist()}.")
    return np.broadcast_to(values, (n_segments,)).copy()


class SourceInfluence(BaseInfluence):
    """Source: influence of training rows through approximately unrolled training.

    Training is split into segments ``l = 1..L``; segment ``l`` ran ``K_l``
    steps of gradient descent at learning rate ``eta_l`` and ended at
    checkpoint ``theta_l`` (the last one is the final model). Within a
    segment the curvature ``H_l`` and each row's gradient ``g_l`` are taken as
    constant (the stationarity assumption of Bae et al., 2024), at their values
    at ``theta_l``. Unrolling the steps with those constants gives, in closed
    form::

        influence[i, j] = (1/n) sum_l g_i^T (prod_{l' > l} S_l')
                                  (H_l + d)^{-1} (I - S_l) g_l(z_j)

    with ``S_l = exp(-eta_l K_l (H_l + d))`` (the continuous-time form of
    ``(I - eta_l H_l)^{K_l}``), ``d`` the damping and ``g_i`` the test gradient
    at the final checkpoint. ``H_l`` is an EK-FAC curvature fitted at each
    checkpoint (Linear and Conv2d layers, as :class:`EKFACInfluence`), so
    the matrix functions act on its eigenvalues: ``(1 - exp(-eta K lambda)) /
    lambda`` stays finite as ``lambda -> 0``, so directions the training never
    moved along get no influence instead of a damping-dominated one.

    With one segment trained to convergence (``eta K lambda`` large for every
    eigenvalue) ``S -> 0`` and the result is the influence function of
    :class:`EKFACInfluence`. The test gradient is propagated from the last
    segment back through ``S_L, S_(L-1), ...``: a test row costs one
    eigenbasis rotation per segment.

    Assumptions: plain gradient descent (or SGD, whose noise averages out in
    expectation) with a constant learning rate within a segment; no momentum
    or adaptive preconditioning (Adam's would have to be folded into ``H``);
    curvature and gradients that change slowly within a segment, so more
    segments are more faithful for a model far from convergence.

    Parameters
    ----------
    damping : "auto" or float, default="auto"
        ``lambda``, the same in every segment. ``"auto"`` is 0.1 times the
        mean eigenvalue of the segments' EK-FAC curvatures (over their
        parameters, then over the segments), the rule of every estimator
        (see :ref:`damping`). The value used is ``damping_``.
    measurement : {"loss", "margin", "log_prob"} or callable, default="loss"
        As in :class:`ExactInfluence`.
    loss : "auto" or callable, default="auto"
        As in :class:`ExactInfluence`.
    batch_size : int, default=256
        Rows per forward and backward pass.
    device : "auto", str or torch.device, default="auto"
        Where to compute; ``"auto"`` picks CUDA when available.
    dtype : None, str or torch.dtype, default=None
        Floating dtype; ``None`` means float32.
    random_state : int, RandomState instance or None, default=None
        Seed of the targets sampled by ``fisher="true"``.
    verbose : int, default=0
        Show progress bars when positive.
    n_jobs : int, default=None
        As in :class:`KFACInfluence`.
    segments : list of dict or path, default=None
        State dicts at the end of each segment, in training order (or files,
        as in :class:`TracIn`); the last should be the final model. ``None``
        is one segment ending at the fitted model.
    learning_rates : float or list of float, default=1.0
        Learning rate of each segment (one value for all).
    steps : float or list of float, default=1000
        Optimizer steps in each segment (one value for all).
    fisher : {"true", "empirical", "ggn"}, default="true"
        As in :class:`KFACInfluence`.
    layers : list of str, default=None
        As in :class:`KFACInfluence`.

    Attributes
    ----------
    damping_ : float
        The ``lambda`` used in every segment.
    segments_ : list of EKFACInfluence
        The curvature fitted at the end of each segment.
    learning_rates_ : ndarray of shape (n_segments,)
    steps_ : ndarray of shape (n_segments,)
    layers_ : list of str
        The layers the influence is computed over.
    n_train_ : int
        Number of training rows.
    n_params_ : int
        Number of parameters in the selected layers (per segment).
    train_index_ : pandas.Index
        Index of the training rows (named ``train``).

    See Also
    --------
    EKFACInfluence : The influence function this reduces to at convergence.
    TracIn : First-order sum over checkpoints, without curvature.

    Examples
    --------
    >>> import torch
    >>> from dataval import SourceInfluence
    >>> torch.manual_seed(0)
    <torch._C.Generator object at ...>
    >>> net = torch.nn.Sequential(
    ...     torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)
    ... )
    >>> X, y = torch.randn(30, 3), torch.randint(0, 2, (30,))
    >>> early = {k: v.clone() for k, v in net.state_dict().items()}
    >>> source = SourceInfluence(
    ...     segments=[early, net.state_dict()],
    ...     learning_rates=[0.1, 0.01],
    ...     steps=[100, 500],
    ...     random_state=0,
    ... )
    >>> source.fit(net, X, y).score(X[:2], y[:2]).shape
    (2, 30)
    """

    _parameter_constraints = {
        **EKFACInfluence._parameter_constraints,
        "segments": [None, list, tuple],
        "learning_rates": [Real, list, tuple, np.ndarray],
        "steps": [Real, list, tuple, np.ndarray],
    }
    _saved_state = ("damping_", "learning_rates_", "steps_", "layers_", "n_params_")
    _parameter_constraints.pop("query_rank")

    def __init__(
        self,
        *,
        damping="auto",
        measurement="loss",
        loss="auto",
        batch_size=256,
        device="auto",
        dtype=None,
        random_state=None,
        verbose=0,
        n_jobs=None,
        segments=None,
        learning_rates=1.0,
        steps=1000,
        fisher="true",
        layers=None,
    ):
        self.damping = damping
        self.measurement = measurement
        self.loss = loss
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose
        self.n_jobs = n_jobs
        self.segments = segments
        self.learning_rates = learning_rates
        self.steps = steps
        self.fisher = fisher
        self.layers = layers

    def _fit_curvature(self):
        models = checkpoint_models(self.model_, self.segments, "segments")
        self.learning_rates_ = _per_segment(
            self.learning_rates, len(models), "learning_rates"
        )
        self.steps_ = _per_segment(self.steps, len(models), "steps")
        self.segments_ = self._segments(models)
        for segment in self.segments_:
            segment._fit_curvature()
        # one lambda for every segment: "auto" is 0.1 times the mean over the
        # segments of their curvature's mean eigenvalue
        self.damping_ = float(np.mean([segment.damping_ for segment in self.segments_]))
        for segment in self.segments_:
            segment.damping_ = self.damping_
        last = self.segments_[-1]
        self.layers_ = last.layers_
        self.n_params_ = last.n_params_

    def _segments(self, models):
        """One unfitted EK-FAC estimator per checkpoint, on the training data."""
        params = {
            name: getattr(self, name)
            for name in EKFACInfluence().get_params()
            if hasattr(self, name)
        }
        segments = []
        for model in models:
            segment = EKFACInfluence(**params)
            segment._set_training(
                model,
                self._X_train,
                self._y_train,
                self.train_index_,
                self._sample_weight,
            )
            segments.append(segment)
        return segments

    def _fitted_state(self):
        state = super()._fitted_state()
        state["segments"] = [segment._fitted_state() for segment in self.segments_]
        return state

    def _restore_state(self, state):
        state = dict(state)
        saved = state.pop("segments")
        super()._restore_state(state)
        self.segments_ = self._segments(
            checkpoint_models(self.model_, self.segments, "segments")
        )
        for segment, segment_state in zip(self.segments_, saved, strict=True):
            segment._restore_state(segment_state)

    def _featurizer(self):
        # (b, L * p): each segment's layer gradients at its checkpoint
        return _Segments(
            [segment._featurizer(rotated=False) for segment in self.segments_]
        )

    def _curvature(self):
        return _Unrolled(self.segments_, self.learning_rates_, self.steps_)


class _Segments(Stacked):
    """Training rows' gradients at every segment end, side by side.

    A query row needs only its gradient at the final checkpoint (see
    :class:`_Unrolled`): the query side computes that one.
    """

    def gradients(self, X, y, function=None):
        return self.parts[-1].gradients(X, y, function)


class _Unrolled(Curvature):
    """Source's unrolled segments in place of ``(H + damping I)^{-1}``.

    Only the last block of a query row — its gradient at the final
    checkpoint — is read. Going back through the segments, each gets
    ``(1 - exp(-eta K lam)) / lam`` of the gradient carried back to its end,
    which is then carried through it by ``exp(-eta K lam)`` (each segment's
    eigenbasis).
    """

    def __init__(self, segments, learning_rates, steps):
        self.segments, self.learning_rates, self.steps = segments, learning_rates, steps

    def apply_inverse(self, G):
        p = self.segments[-1].n_params_
        u = G[:, -p:]  # the query gradients at the final checkpoint
        blocks = []
        for segment, rate, steps in zip(
            reversed(self.segments), self.learning_rates[::-1], self.steps[::-1]
        ):
            time = float(rate * steps)
            blocks.append(
                segment._apply_spectral(
                    u, lambda lam, t=time: -torch.expm1(-t * lam) / lam
                )
            )
            u = segment._apply_spectral(u, lambda lam, t=time: torch.exp(-t * lam))
        return torch.cat(blocks[::-1], 1)
