"""K-FAC: influence through a Kronecker-factored Gauss-Newton matrix per layer."""

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions

from ..._base import BaseInfluence
from ..._core.parts import Scaled
from ..._core.stream import working_bytes
from ..._finite import check_finite
from ..._layers import select_layers
from ..._numerics.damping import resolve_damping
from ..._numerics.seeding import draw_seed, torch_generator
from ..._numerics.spectral import psd_eighs
from .fisher import check_fisher, output_vectors
from .signals import (
    LayerSignals,
    apply_spectral,
    capture_signals,
    rotate,
)


class KFACInfluence(BaseInfluence):
    """Influence through a Kronecker-factored curvature (K-FAC) per layer.

    The curvature of the training objective is approximated block-diagonally,
    one block per ``torch.nn.Linear`` or ``torch.nn.Conv2d`` layer, each block
    by the Kronecker product ``A ⊗ S`` of the second moments of the layer's
    inputs ``a`` (with a ``1`` appended for the bias) and of the gradients
    ``g`` with respect to its pre-activation outputs (Martens and Grosse,
    2015; Grosse et al., 2023). ``(A ⊗ S + lambda I)^{-1}`` is applied through
    the eigendecompositions of ``A`` and ``S``: its cost grows with the layer
    widths, not with the number of parameters squared.

    Inputs with extra dimensions (a sequence ``(B, T, d)`` into a Linear
    layer, the patches of a convolution) count every position as an
    observation of ``A`` (``A = E[a a^T]`` over rows and positions,
    ``S = E[sum_l g_l g_l^T]`` over rows); per-sample gradients sum over the
    positions exactly. The influence is taken over the parameters of the
    selected layers only: other trainable parameters (normalization layers,
    embeddings, ...) are held fixed.

    Parameters
    ----------
    damping : "auto" or float, default="auto"
        ``lambda`` added to every layer's curvature eigenvalues. ``"auto"``
        uses 0.1 times the mean eigenvalue of the Kronecker-factored
        curvature over all selected parameters (the rule of every estimator,
        see :ref:`damping`). The model's own L2 regularizer (e.g. an
        ``MLPClassifier``'s ``alpha``) is part of the objective's curvature
        and is added on top, as its mean over each layer's parameters. The
        value used is ``damping_``.
    measurement : {"loss", "margin", "log_prob"} or callable, default="loss"
        As in :class:`ExactInfluence`.
    loss : "auto" or callable, default="auto"
        As in :class:`ExactInfluence`.
    batch_size : int, default=256
        Rows per forward and backward pass.
    device : "auto", str or torch.device, default="auto"
        Where to compute; ``"auto"`` picks CUDA when available.
    dtype : None, str or torch.dtype, default=None
        Floating dtype of the computation; ``None`` means float32.
        Eigendecompositions are computed in float64.
    random_state : int, RandomState instance or None, default=None
        Seed of the targets sampled by ``fisher="true"``.
    verbose : int, default=0
        Show progress bars when positive.
    n_jobs : int, default=None
        Workers scoring slices of the training set in parallel (joblib;
        threads unless a ``joblib.parallel_config`` picks another backend,
        e.g. ``"dask"``). ``None`` means 1 outside such a context, ``-1`` all
        processors. See :doc:`/scaling`.
    fisher : {"true", "empirical", "ggn"}, default="true"
        What ``S`` collects. ``"true"``: gradients at targets sampled from the
        model's predictive distribution (seeded by ``random_state``; Gaussian
        outputs for squared error), an unbiased estimate of the Gauss-Newton
        matrix at one backward pass. ``"ggn"``: its exact expectation, one
        backward pass per output dimension (for few classes). ``"empirical"``:
        gradients at the observed targets.
    layers : list of str, default=None
        Names (as in ``model.named_modules()``) of the layers to include;
        ``None`` means every Linear and Conv2d (``groups=1``) layer with a
        trainable weight.
    query_rank : int, default=None
        Keep only a rank-``query_rank`` truncated SVD (randomized, seeded)
        of each layer's preconditioned test gradient in ``score`` and
        ``top_k``: a layer then costs ``r (d_in + d_out)`` numbers and
        ``2 r (d_in + d_out)`` flop per pair instead of ``d_in d_out``. A
        layer whose smaller side is at most ``query_rank`` is kept whole.
        An approximation: the division by the damped eigenvalues makes the
        preconditioned gradient full rank even when the raw test gradient
        has rank 1 (a Linear layer without positions), so the error falls
        with the rank but is not zero before ``min(d_out, d_in)``. ``None``
        keeps them whole.

    Attributes
    ----------
    layers_ : list of str
        The layers the influence is computed over.
    eigenvalues_ : dict of str to torch.Tensor of shape (d_out, d_in)
        Each layer's curvature eigenvalues in its Kronecker eigenbasis
        (``d_in`` includes the bias column), undamped.
    damping_ : float
        The ``lambda`` added to every layer's eigenvalues (``damping``, or the
        ``"auto"`` value: 0.1 times the mean eigenvalue over all the selected
        parameters, the L2 term included). Each layer's eigenvalues are also
        shifted by the mean of the model's L2 coefficient over its
        parameters, a part of the curvature.
    n_train_ : int
        Number of training rows.
    n_params_ : int
        Number of parameters in the selected layers.
    train_index_ : pandas.Index
        Index of the training rows (named ``train``).

    See Also
    --------
    EKFACInfluence : The same eigenbases with refitted eigenvalues.
    ExactInfluence : The dense reference.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.neural_network import MLPClassifier
    >>> from dataval import KFACInfluence
    >>> X, y = load_iris(return_X_y=True)
    >>> mlp = MLPClassifier(
    ...     (8,), solver="lbfgs", alpha=1.0, max_iter=2000, random_state=0
    ... ).fit(X, y)
    >>> inf = KFACInfluence(random_state=0).fit(mlp, X, y)
    >>> inf.layers_
    ['layer0', 'layer1']
    >>> inf.score(X[:3], y[:3]).shape
    (3, 150)
    >>> inf.score(X[:3], y[:3], by_layer=True).index.names
    FrozenList(['layer', 'test'])
    """

    _parameter_constraints = {
        **BaseInfluence._parameter_constraints,
        # a positive damping: Kronecker eigenvalues can be exactly 0
        "damping": [StrOptions({"auto"}), Interval(Real, 0, None, closed="neither")],
        "fisher": [StrOptions({"true", "empirical", "ggn"})],
        "layers": [None, list, tuple],
        "query_rank": [None, Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }
    _saved_state = (
        "layers_",
        "_positions",
        "_bases",
        "_factor_eigenvalues",
        "eigenvalues_",
        "damping_",
        "_l2",
    )
    #: whether a second pass refits the eigenvalues (EK-FAC)
    _corrects_eigenvalues = False

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
        fisher="true",
        layers=None,
        query_rank=None,
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
        self.fisher = fisher
        self.layers = layers
        self.query_rank = query_rank

    # ------------------------------------------------------------- fitting
    def _fit_curvature(self):
        check_fisher(self.fisher, self.model_.adapted.loss)
        self._set_layers(self._select_layers())
        seed = draw_seed(self.random_state)
        # fit-time only: a fitted estimator must pickle and deep-copy, which a
        # torch.Generator cannot before torch 2.4
        self._generator = torch_generator(seed, self.device_)
        try:
            kept = self._fit_factors()
            self.eigenvalues_ = self._fit_eigenvalues(
                kept if kept is not None else self._fit_signals()
            )
        finally:
            del self._generator
        self._resolve_damping()

    def _resolve_damping(self):
        """``damping_`` (one float) and ``_l2``: each layer's mean L2 coefficient.

        The model's L2 term is part of the objective's curvature: each layer's
        eigenvalues are shifted by its mean over the layer's parameters, then
        by ``damping_``.
        """
        l2 = self.model_.unflatten(self.model_.l2)  # {parameter name: tensor}
        self._l2 = {
            layer.name: float(
                torch.cat(
                    [l2[name].reshape(-1) for name in layer.parameter_names]
                ).mean()
            )
            for layer in self._layer_list
        }

        def mean_eigenvalue():
            trace = sum(
                float(values.sum()) + values.numel() * self._l2[name]
                for name, values in self.eigenvalues_.items()
            )
            return trace / self.n_params_

        self.damping_ = resolve_damping(
            self.damping,
            mean_eigenvalue,
            "the mean eigenvalue of the Kronecker-factored curvature",
        )

    def _select_layers(self):
        """The layers whose signals ``capture`` records (``Layer`` objects)."""
        return select_layers(self.model_.adapted.module, self.layers)

    def _set_layers(self, layers):
        """The layer list and each layer's slice of the flat gradient."""
        self._layer_list = layers
        self.layers_ = [layer.name for layer in layers]
        stops = np.cumsum([layer.size for layer in layers]).tolist()
        self._slices = [slice(b - layer.size, b) for layer, b in zip(layers, stops)]
        self.n_params_ = stops[-1]

    def _restore_state(self, state):
        super()._restore_state(state)
        self._set_layers(self._restored_layers())

    def _restored_layers(self):
        """``_select_layers`` again, with what it drew at fit taken from the state."""
        return self._select_layers()

    def _fit_signals(self):
        """Yield each training batch's layer signals with ``fisher``'s vectors.

        With objective weights, row ``b``'s inputs ``a`` carry ``sqrt(w_b)``:
        its curvature ``w_b (a a^T) x (g g^T)`` enters the factors (and the
        eigenvalue correction) once, through ``A``.
        """
        loss = self.model_.adapted.loss
        for _, X_b, y_b, weights in self._data().passes("fit"):
            vectors = output_vectors(self.fisher, loss, y_b, self._generator)
            signals = self._capture(X_b, vectors)
            if weights is not None:
                root = weights.sqrt()[:, None, None]
                signals = {
                    name: (a * root.to(a.dtype), g) for name, (a, g) in signals.items()
                }
            yield signals

    def _capture(self, X, vectors):
        """Layer signals of a batch with ``vectors``, in ``dtype_``."""
        return capture_signals(self.model_, self._layer_list, X, vectors, self.dtype_)

    def _rotate(self, signals, flush=True):
        """Signals in each layer's Kronecker eigenbasis (see :func:`rotate`)."""
        return rotate(signals, self._bases, flush)

    def _fit_factors(self):
        """Eigendecompose ``A`` and ``S`` per layer; return the signals if kept.

        The signals are kept for the eigenvalue correction when they fit in
        working memory, saving it a second pass over the data.
        """
        names = self.layers_
        A, S = {}, {}
        positions = dict.fromkeys(names, 0)
        kept, n_bytes = ([] if self._corrects_eigenvalues else None), 0
        for signals in self._fit_signals():
            for name, (a, g) in signals.items():
                a2, g2 = a.flatten(0, 1), g.flatten(0, 2)
                if name in A:  # accumulated in place
                    A[name].addmm_(a2.T, a2)  # (d_in, d_in)
                    S[name].addmm_(g2.T, g2)  # (d_out, d_out)
                else:
                    A[name], S[name] = a2.T @ a2, g2.T @ g2
                positions[name] += a2.shape[0]
            if kept is not None:
                n_bytes += sum(a.nbytes + g.nbytes for a, g in signals.values())
                if n_bytes <= working_bytes():
                    kept.append(signals)
                else:
                    kept = None
        n = self.n_train_
        self._positions = {name: positions[name] / n for name in names}
        self._bases, self._factor_eigenvalues = {}, {}
        factors = []
        for name in names:
            check_finite(self, A[name], f"The Kronecker factor A of layer {name!r}")
            check_finite(self, S[name], f"The Kronecker factor S of layer {name!r}")
            # A: mean over rows and positions; S: mean over rows of the sum
            factors += [A[name] / positions[name], S[name] / n]
        eigenpairs = iter(psd_eighs(factors, self.dtype_))
        for name in names:
            (eig_A, Q_A), (eig_S, Q_S) = next(eigenpairs), next(eigenpairs)
            self._bases[name] = (Q_S, Q_A)
            self._factor_eigenvalues[name] = (eig_S, eig_A)
        return kept

    def _fit_eigenvalues(self, signals):
        """``{name: (d_out, d_in)}`` eigenvalues in the Kronecker eigenbasis."""
        return {
            name: torch.outer(eig_S, eig_A)
            for name, (eig_S, eig_A) in self._factor_eigenvalues.items()
        }

    # ------------------------------------------------------------ the parts
    def _damped(self, name):
        """Layer ``name``'s damped eigenvalues (d_out, d_in)."""
        return self.eigenvalues_[name] + self._l2[name] + self.damping_

    def _featurizer(self, rotated=True):
        """Layer signals, in the Kronecker eigenbases (or, ``rotated=False``,
        in the parameters' own basis)."""
        return LayerSignals(
            self.model_,
            self._layer_list,
            self._slices,
            self.dtype_,
            bases=self._bases if rotated else None,
            positions=self._positions,
            query_rank=self.query_rank,
        )

    def _curvature(self):
        # rows are rotated: the inverse is a division by the damped eigenvalues
        return Scaled(
            1 / torch.cat([self._damped(name).reshape(-1) for name in self.layers_])
        )

    def _apply_spectral(self, G, function):
        """Rows of ``G`` (m, p), in the parameters' basis, times ``function``
        of the damped curvature (see :func:`apply_spectral`)."""
        damped = {name: self._damped(name) for name in self.layers_}
        return apply_spectral(
            G, self._layer_list, self._slices, self._bases, damped, function
        )
