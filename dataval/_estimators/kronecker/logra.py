"""LoGra: Kronecker-factored influence on Kronecker-projected layer gradients."""

from numbers import Integral

import torch
from sklearn.utils._param_validation import Interval

from ..._layers import Layer
from ..._numerics.seeding import draw_seed, torch_generator
from .ekfac import EKFACInfluence


class _ProjectedLayer(Layer):
    """A layer seen through projections of its inputs and output gradients.

    Its gradient matrix is ``P_out (sum_l g_l a_l^T) P_in^T
    = sum_l (P_out g_l)(P_in a_l)^T`` of shape (k_out, k_in): the signals
    are projected, the full gradient is never formed.
    """

    def __init__(self, layer, P_in, P_out):
        super().__init__(layer.name, layer.module)
        self._layer = layer
        self.P_in, self.P_out = P_in, P_out  # (k_in, d_in), (k_out, d_out) or None
        if P_in is not None:
            self.d_in = P_in.shape[0]
        if P_out is not None:
            self.d_out = P_out.shape[0]

    def inputs(self, x):
        a = self._layer.inputs(x)
        return a if self.P_in is None else a @ self.P_in.T

    def output_grads(self, grad):
        g = self._layer.output_grads(grad)
        return g if self.P_out is None else g @ self.P_out.T


def _orthonormal_rows(k, d, generator, dtype):
    """(k, d) with orthonormal rows spanning a uniformly random subspace.

    ``None`` (no projection) when ``k`` is ``None`` or at least ``d``.
    """
    if k is None or k >= d:
        return None
    device = generator.device
    gaussian = torch.randn(
        d, k, generator=generator, device=device, dtype=torch.float64
    )
    Q, R = torch.linalg.qr(gaussian)  # (d, k)
    # signs fixed by R's diagonal: a Haar-distributed basis
    return (Q * torch.sign(torch.diagonal(R))).T.to(dtype)


class LoGraInfluence(EKFACInfluence):
    """LoGra: (E)K-FAC influence on Kronecker-projected layer gradients.

    Each Linear or Conv2d layer's inputs ``a`` and output gradients ``g``
    (the signals :class:`KFACInfluence` records) are projected separately,
    ``P_in a`` and ``P_out g``, with seeded random matrices whose rows are
    orthonormal (Choe et al., 2024, "What is your data worth to GPT?"). The
    layer's projected per-sample gradient ``P_out G P_in^T`` (at most
    ``factor_dim x factor_dim``) is formed from the projected signals,
    never from the full gradient ``G``, and the influence equation is solved in
    the projected space with a K-FAC or EK-FAC curvature fitted to the
    projected signals::

        influence[i, j] = (1/n) (P g_i)^T (P C P^T + damping I)^{-1} (P g_j)

    with ``P = P_out ⊗ P_in`` per layer and ``C`` the (E)K-FAC curvature. For
    K-FAC, ``P C P^T`` is exactly the Kronecker product of the projected
    factors ``P_out S P_out^T`` and ``P_in A P_in^T``. As ``P`` has orthonormal
    rows, ``P (C + damping I) P^T = P C P^T + damping I``: the damping and the
    model's L2 term keep their meaning. A side of a layer at most
    ``factor_dim`` wide is not projected, so with ``factor_dim=None``
    or at least every layer's width the result is :class:`KFACInfluence`
    (``eigenvalue_correction=False``) or :class:`EKFACInfluence` (``True``).

    Memory per training row and layer position is ``k_in + k_out`` numbers
    for the signals and ``k_in k_out`` for a projected gradient; the factors
    are ``k x k``.

    Parameters
    ----------
    damping : "auto" or float, default="auto"
        As in :class:`KFACInfluence`, in the projected space.
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
        Seeds the projections and the targets sampled by ``fisher="true"``.
    verbose : int, default=0
        Show progress bars when positive.
    n_jobs : int, default=None
        As in :class:`KFACInfluence`.
    fisher : {"true", "empirical", "ggn"}, default="true"
        As in :class:`KFACInfluence`.
    layers : list of str, default=None
        As in :class:`KFACInfluence`.
    query_rank : int, default=None
        As in :class:`KFACInfluence`.
    factor_dim : int or None, default=64
        Projected width of each Kronecker factor: of each layer's inputs
        (bias coordinate included) and, separately, of its output gradients,
        so a layer's projected gradient has ``factor_dim^2`` entries (not
        :class:`TRAKInfluence`'s ``projection_dim``, the size of the whole
        projected gradient). ``None`` projects nothing.
    eigenvalue_correction : bool, default=True
        The curvature in the projected space: K-FAC's eigenbases with
        eigenvalues refitted to the projected gradients (EK-FAC), or with
        ``False`` plain K-FAC.

    Attributes
    ----------
    projections_ : dict of str to tuple
        ``(P_in, P_out)`` per layer: (k_in, d_in) and (k_out, d_out) tensors,
        ``None`` for a side that is not projected.
    layers_ : list of str
        The layers the influence is computed over.
    eigenvalues_ : dict of str to torch.Tensor of shape (k_out, k_in)
        Each layer's curvature eigenvalues in the projected space, undamped.
    damping_ : float
        The ``lambda`` added to every layer's eigenvalues, as in
        :class:`KFACInfluence` (in the projected space).
    n_train_ : int
        Number of training rows.
    n_params_ : int
        Dimension of the projected gradients (all layers).
    train_index_ : pandas.Index
        Index of the training rows (named ``train``).

    See Also
    --------
    EKFACInfluence, KFACInfluence : The same curvature without projection.
    TRAKInfluence : One random projection of the whole gradient.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.neural_network import MLPClassifier
    >>> from dataval import LoGraInfluence
    >>> X, y = load_iris(return_X_y=True)
    >>> mlp = MLPClassifier(
    ...     (16,), solver="lbfgs", alpha=1.0, max_iter=2000, random_state=0
    ... ).fit(X, y)
    >>> logra = LoGraInfluence(factor_dim=4, random_state=0).fit(mlp, X, y)
    >>> logra.eigenvalues_["layer0"].shape
    torch.Size([4, 4])
    >>> logra.score(X[:3], y[:3]).shape
    (3, 150)
    """

    _parameter_constraints = {
        **EKFACInfluence._parameter_constraints,
        "factor_dim": [None, Interval(Integral, 1, None, closed="left")],
        "eigenvalue_correction": ["boolean"],
    }
    _saved_state = EKFACInfluence._saved_state + ("projections_",)

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
        factor_dim=64,
        eigenvalue_correction=True,
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
        self.factor_dim = factor_dim
        self.eigenvalue_correction = eigenvalue_correction

    @property
    def _corrects_eigenvalues(self):
        return self.eigenvalue_correction

    def _select_layers(self):
        generator = torch_generator(draw_seed(self.random_state), self.device_)
        k, projections = self.factor_dim, {}
        for layer in super()._select_layers():
            # in the dtype of the signals they project
            dtype = self.model_.dtype
            projections[layer.name] = (
                _orthonormal_rows(k, layer.d_in, generator, dtype),
                _orthonormal_rows(k, layer.d_out, generator, dtype),
            )
        self.projections_ = projections
        return self._restored_layers()

    def _restored_layers(self):
        return [
            _ProjectedLayer(layer, *self.projections_[layer.name])
            for layer in super()._select_layers()
        ]
