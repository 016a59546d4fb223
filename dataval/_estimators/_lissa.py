"""Influence by LiSSA: a stochastic Neumann series for the inverse curvature."""

import math
import warnings
from numbers import Integral, Real

import torch
from sklearn.utils._param_validation import Interval, StrOptions

from ..exceptions import ConvergenceWarning
from ._matrix_free import MatrixFreeInfluence

#: ``scale="auto"`` is this multiple of the largest eigenvalue of H + damping I
AUTO_SCALE_MARGIN = 1.1


class LiSSAInfluence(MatrixFreeInfluence):
    """Influence from ``(H + damping I)^{-1}`` by LiSSA's Neumann series.

    With ``A = H + damping I`` and a scale ``s``, ``A^{-1} = (1/s) sum_t
    (I - A/s)^t``. LiSSA (Agarwal et al., 2017) runs the recursion
    ``v_0 = g``, ``v_t = g + v_{t-1} - A_t v_{t-1} / s`` for ``depth`` steps,
    each ``A_t`` the curvature of a random mini-batch of training rows, and
    returns ``v / s`` averaged over the second half of the steps and over
    ``repeats`` independent runs. All rows of a batch of gradients go through
    the series together.

    Averaging the iterates of the second half (Polyak-Ruppert tail averaging)
    instead of keeping the last one removes most of the mini-batch noise at no
    extra cost: on a digits MLP (``hessian_batch_size=256`` of 1500 rows) the
    last iterate stays near a correlation of 0.97 with the exact influence
    however deep the series, the tail average reaches 0.9995.

    The series converges when every eigenvalue of ``A`` lies in ``(0, 2 s)``;
    ``scale="auto"`` estimates the largest one by power iteration, so nobody
    has to tune ``s``. It reaches eigen-directions with eigenvalue ``a`` at the
    rate ``(1 - a / s)^t``: ``depth`` must be several times ``s / damping``
    for the small eigenvalues (which dominate influence) to converge.

    Parameters
    ----------
    damping : float or "auto", default=1e-3
        ``lambda`` added to the curvature's diagonal; ``"auto"`` uses
        ``0.1 * trace(H) / p`` (see the user guide). The value used is
        ``damping_``.
    measurement : {"loss", "margin", "log_prob"} or callable, default="loss"
        As in :class:`ExactInfluence`.
    curvature : {"auto", "hessian", "ggn"}, default="auto"
        The Hessian of the objective, or its generalized Gauss-Newton matrix.
        ``"auto"``: the Hessian for a model whose only parameters are one
        linear layer (scikit-learn's linear models, where the two coincide),
        the Gauss-Newton matrix for any other model (networks: their Hessian
        is indefinite where they fit noisy labels).
    depth : int, default=5000
        Steps of the series (each one curvature product on a mini-batch); the
        second half is averaged.
    scale : "auto" or float, default="auto"
        ``s``. ``"auto"`` is ``1.1`` times the largest eigenvalue of
        ``H + damping I`` (power iteration, 30 full-batch products). A value
        below half of that eigenvalue makes the series diverge.
    repeats : int, default=1
        Independent runs averaged (each with its own mini-batches).
    hessian_batch_size : int, default=256
        Training rows drawn (with replacement) for each step's curvature;
        ``None`` uses the whole training set at every step (deterministic).
    loss : "auto" or callable, default="auto"
        As in :class:`ExactInfluence`.
    batch_size : int, default=256
        Rows per vectorized gradient or curvature pass.
    device : "auto", str or torch.device, default="auto"
        Where to compute; ``"auto"`` picks CUDA when available.
    dtype : None, str or torch.dtype, default=None
        Floating dtype of the computation; ``None`` means float32.
    random_state : int, RandomState instance or None, default=None
        Seeds the power iteration and the mini-batches. The mini-batch
        sequence is drawn once per fit, so every solve (``score``, ``value``,
        ``self_influence``) applies the same linear map.
    verbose : int, default=0
        Show progress bars (series steps) when positive.
    n_jobs : int, default=None
        Workers scoring slices of the training set in parallel (joblib;
        threads unless a ``joblib.parallel_config`` picks another backend,
        e.g. ``"dask"``). ``None`` means 1 outside such a context, ``-1`` all
        processors. See :doc:`/scaling`.

    Attributes
    ----------
    curvature_ : str
        The curvature used: ``"hessian"`` or ``"ggn"``.
    damping_ : float
        The damping used.
    scale_ : float
        The scale ``s`` used.
    largest_eigenvalue_ : float or None
        Power-iteration estimate of the largest eigenvalue of
        ``H + damping I`` (``None`` when ``scale`` was given).
    n_train_ : int
        Number of training rows.
    n_params_ : int
        Number of trainable parameters.
    train_index_ : pandas.Index
        Index of the training rows (named ``train``).
    device_ : torch.device
        Where the estimator computes.

    Warns
    -----
    ConvergenceWarning
        At fit, when ``depth < 6 * scale_ / damping_``: the directions of
        near-zero curvature, which dominate influence, would not converge.

    Raises
    ------
    FloatingPointError
        From ``score`` and the other methods when the series diverges (a row's
        norm grows past what a convergent series can reach, or becomes NaN or
        infinite): ``scale`` is too small or ``H + damping I`` has negative
        eigenvalues. It never returns NaN.

    See Also
    --------
    CGInfluence : Deterministic and usually faster to converge.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from dataval import LiSSAInfluence
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = LogisticRegression(max_iter=1000).fit(X, y)
    >>> inf = LiSSAInfluence(damping=1.0, depth=100, random_state=0).fit(clf, X, y)
    >>> inf.score(X[:3], y[:3]).shape
    (3, 150)
    """

    _parameter_constraints = {
        **MatrixFreeInfluence._parameter_constraints,
        "depth": [Interval(Integral, 1, None, closed="left")],
        "scale": [StrOptions({"auto"}), Interval(Real, 0, None, closed="neither")],
        "repeats": [Interval(Integral, 1, None, closed="left")],
        "hessian_batch_size": [None, Interval(Integral, 1, None, closed="left")],
    }
    _saved_state = MatrixFreeInfluence._saved_state + (
        "largest_eigenvalue_",
        "scale_",
        "_seed",
    )

    def __init__(
        self,
        damping=1e-3,
        measurement="loss",
        curvature="auto",
        depth=5000,
        scale="auto",
        repeats=1,
        hessian_batch_size=256,
        loss="auto",
        batch_size=256,
        device="auto",
        dtype=None,
        random_state=None,
        verbose=0,
        n_jobs=None,
    ):
        self.damping = damping
        self.measurement = measurement
        self.curvature = curvature
        self.depth = depth
        self.scale = scale
        self.repeats = repeats
        self.hessian_batch_size = hessian_batch_size
        self.loss = loss
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose
        self.n_jobs = n_jobs

    def _fit_operator(self):
        self.largest_eigenvalue_ = None
        if self.scale == "auto":
            self.largest_eigenvalue_ = self._largest_eigenvalue()
            self.scale_ = AUTO_SCALE_MARGIN * self.largest_eigenvalue_
        else:
            self.scale_ = float(self.scale)
        self._seed = int(self._random.randint(2**31 - 1))
        self._warn_if_shallow()

    def _warn_if_shallow(self):
        # the tail average starts at depth / 2; a direction of curvature c has
        # then shrunk by (1 - (c + damping) / scale)^(depth / 2), at most
        # exp(-3) when depth >= 6 scale / damping
        needed = 6 * self.scale_ / self.damping_ if self.damping_ > 0 else math.inf
        if self.depth < needed:
            warnings.warn(
                f"depth={self.depth} is short for scale={self.scale_:.3g} and "
                f"damping={self.damping_:g}: directions of near-zero curvature "
                "converge as (1 - damping / scale)^step, which needs depth >= "
                f"6 * scale / damping = {needed:.0f}. Increase depth or damping.",
                ConvergenceWarning,
                stacklevel=5,
            )

    def _step_rows(self, generator):
        """Positions of one step's mini-batch of rows, or ``None`` for all rows."""
        size = self.hessian_batch_size
        if size is None:
            return None
        return torch.randint(self.n_train_, (size,), generator=generator)

    def _apply_inverse(self, G):
        generator = torch.Generator().manual_seed(self._seed)
        g_norm = G.norm(dim=1)
        total = torch.zeros_like(G)
        first_averaged = self.depth // 2
        for _ in range(self.repeats):
            V = G.clone()  # (m, p)
            for step in self._iterations(self.depth, "LiSSA"):
                rows = self._step_rows(generator)
                V = G + V - self._product(V, rows=rows) / self.scale_
                self._check_divergence(V, g_norm, step)
                if step >= first_averaged:
                    total += V
        n_averaged = self.repeats * (self.depth - first_averaged)
        return total / (n_averaged * self.scale_)

    def _check_divergence(self, V, g_norm, step):
        # a convergent series has ||v_t|| <= (t + 1) ||g||; 2x leaves room
        # for mini-batch noise
        norm = V.norm(dim=1)
        bound = 2 * (step + 2) * g_norm
        if bool(torch.isfinite(norm).all()) and bool((norm <= bound).all()):
            return
        raise FloatingPointError(
            f"LiSSAInfluence diverged at step {step + 1} of depth={self.depth}: a "
            f"row's norm grew to {float(norm.max()):.3g} from {float(g_norm.max()):.3g}. "
            f"scale={self.scale_:.4g} is too small for the curvature (it must exceed "
            "half its largest eigenvalue), or H + damping I has negative "
            f"eigenvalues (damping={self.damping_:g}). Use scale='auto' or a larger "
            "scale, a larger damping, or curvature='ggn'."
        )
