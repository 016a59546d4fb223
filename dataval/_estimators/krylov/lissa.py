"""Influence by LiSSA: a stochastic Neumann series for the inverse curvature."""

import math
import warnings
from numbers import Integral, Real

import torch
from sklearn.utils._param_validation import Interval, StrOptions

from ..._core.parts import Solver
from ..._numerics.seeding import draw_seed, torch_generator
from ...exceptions import ConvergenceWarning
from .base import MatrixFreeInfluence

#: ``scale="auto"`` is this multiple of the largest eigenvalue of H + damping I:
#: above the half where the series stops converging
AUTO_SCALE_MARGIN = 0.6
#: ... or this one, above the eigenvalue itself, where the mini-batches'
#: curvature made the series diverge at the first
AUTO_SCALE_FALLBACK = 1.1
#: ``depth="auto"`` checks depths from the first, each sqrt(2) times the previous,
#: up to the last
FIRST_AUTO_DEPTH, MAX_AUTO_DEPTH = 125, 8000
#: training rows whose gradients, summed with random signs, ``depth="auto"``
#: runs the series on
AUTO_DEPTH_PROBES = 16


def auto_depths():
    """The depths ``depth="auto"`` checks: 125, 177, 250, 354, ..., 8000.

    Each is twice the one two before it, so the tail window of one starts at
    a depth checked earlier (the running sum there is all it keeps).
    """
    depths = [FIRST_AUTO_DEPTH, round(FIRST_AUTO_DEPTH * math.sqrt(2))]
    while 2 * depths[-2] <= MAX_AUTO_DEPTH:
        depths.append(2 * depths[-2])
    return depths


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

    The series converges when every eigenvalue of ``A`` lies in ``(0, 2 s)``
    and reaches an eigen-direction with eigenvalue ``a`` at the rate
    ``(1 - a / s)^t``: the directions of small curvature, which dominate
    influence, need a ``depth`` of several times ``s / damping``.
    ``scale="auto"`` estimates the largest eigenvalue by power iteration and
    takes ``s`` at 0.6 times it, a margin above the half where the series
    stops converging rather than above the eigenvalue itself: the small
    directions converge almost twice as fast as with ``s`` above the largest
    eigenvalue, and the largest still shrink by a factor 2/3 per step.
    ``depth="auto"`` finds the depth at fit: it runs the series on the sum,
    with random signs, of the gradients of 16 training rows (one vector,
    whose squared change is in expectation the sum of theirs), checks its
    tail average at depths 125, 177, 250, 354, ... (each ``sqrt(2)`` times
    the previous, at most 8000), stops at the first whose tail average
    differs from the previous check's by at most ``tol`` (relative, in
    norm), and keeps that depth for every solve. A direction that has not
    converged still moves the tail average from one check to the next, so
    successive checks agree only once the series has settled.

    Parameters
    ----------
    damping : "auto" or float, default="auto"
        ``lambda`` added to the curvature's diagonal; ``"auto"`` uses
        ``0.1 * trace(H) / p`` (Hutchinson estimate, see :ref:`damping`). The value used is
        ``damping_``.
    measurement : {"loss", "margin", "log_prob"} or callable, default="loss"
        As in :class:`ExactInfluence`.
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
    curvature : {"auto", "hessian", "ggn"}, default="auto"
        The Hessian of the objective, or its generalized Gauss-Newton matrix.
        ``"auto"``: the Hessian for a model whose only parameters are one
        linear layer (scikit-learn's linear models, where the two coincide),
        the Gauss-Newton matrix for any other model (networks: their Hessian
        is indefinite where they fit noisy labels).
    depth : "auto" or int, default="auto"
        Steps of the series (each one curvature product on a mini-batch); the
        second half is averaged. ``"auto"``: the first of 125, 177, 250,
        ..., 8000 (each ``sqrt(2)`` times the previous) at which the tail
        average stops changing (``tol``); the value used is ``depth_``.
    tol : float, default=0.1
        ``depth="auto"`` stops when the tail averages of two successive
        checked depths differ by at most ``tol`` times their norm. Ignored
        for an integer ``depth``.
    scale : "auto" or float, default="auto"
        ``s``. ``"auto"`` is ``0.6`` times the largest eigenvalue of
        ``H + damping I`` (power iteration, 30 full-batch products), or
        ``1.1`` times it when the series of ``depth="auto"`` diverges at fit
        (mini-batches whose curvature exceeds twice the scale). A value
        below half of that eigenvalue makes the series diverge.
    repeats : int, default=1
        Independent runs averaged (each with its own mini-batches).
    hessian_batch_size : int, default=256
        Training rows drawn (with replacement) for each step's curvature;
        ``None`` uses the whole training set at every step (deterministic).
        A step's mini-batch is one pass, whatever ``batch_size``.

    Attributes
    ----------
    curvature_ : str
        The curvature used: ``"hessian"`` or ``"ggn"``.
    damping_ : float
        The damping used.
    scale_ : float
        The scale ``s`` used.
    depth_ : int
        The depth used.
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
        At fit, when an integer ``depth < 6 * scale_ / damping_``: the
        directions of near-zero curvature, which dominate influence, would not
        converge; with ``depth="auto"``, when the tail average still changes
        by more than ``tol`` at depth 8000.

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

    Notes
    -----
    ``score``, ``top_k``, ``value`` and ``self_influence`` change no fitted
    attribute; each reports its solves on the returned object's ``attrs``:
    ``attrs["solver"] = {"n_solves": ..., "n_iter": ...}``, the number of
    series the call ran (one per test chunk) and the steps of each
    (``repeats * depth_``).

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from dataval import LiSSAInfluence
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = LogisticRegression(max_iter=1000).fit(X, y)
    >>> inf = LiSSAInfluence(damping=1.0, random_state=0).fit(clf, X, y)
    >>> inf.depth_ >= 125
    True
    >>> inf.score(X[:3], y[:3]).shape
    (3, 150)
    """

    _parameter_constraints = {
        **MatrixFreeInfluence._parameter_constraints,
        "depth": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "scale": [StrOptions({"auto"}), Interval(Real, 0, None, closed="neither")],
        "repeats": [Interval(Integral, 1, None, closed="left")],
        "hessian_batch_size": [None, Interval(Integral, 1, None, closed="left")],
    }
    _saved_state = MatrixFreeInfluence._saved_state + (
        "largest_eigenvalue_",
        "scale_",
        "depth_",
        "_seed",
    )

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
        curvature="auto",
        depth="auto",
        tol=0.1,
        scale="auto",
        repeats=1,
        hessian_batch_size=256,
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
        self.curvature = curvature
        self.depth = depth
        self.tol = tol
        self.scale = scale
        self.repeats = repeats
        self.hessian_batch_size = hessian_batch_size

    def _fit_operator(self):
        self.largest_eigenvalue_ = None
        if self.scale == "auto":
            self.largest_eigenvalue_ = self._largest_eigenvalue()
            self.scale_ = AUTO_SCALE_MARGIN * self.largest_eigenvalue_
        else:
            self.scale_ = float(self.scale)
        self._seed = draw_seed(self._random)
        if self.depth == "auto":
            try:
                self.depth_ = self._choose_depth()
            except FloatingPointError:
                if self.scale != "auto":
                    raise
                # the mini-batches' curvature exceeds twice the scale: the
                # solves run the same mini-batches, so take the safe margin
                self.scale_ = AUTO_SCALE_FALLBACK * self.largest_eigenvalue_
                self.depth_ = self._choose_depth()
        else:
            self.depth_ = self.depth
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
                f"6 * scale / damping = {needed:.0f}. Increase depth or damping, "
                "or use depth='auto'.",
                ConvergenceWarning,
                stacklevel=5,
            )

    def _choose_depth(self):
        """The first checked depth whose tail average agrees with the previous one's."""
        generator = self._generator()
        rows = torch.randperm(self.n_train_, generator=generator)[:AUTO_DEPTH_PROBES]
        X, y = self.model_.prepare(self._X_train[rows], self._y_train[rows])
        signs = torch.randint(0, 2, (len(rows),), generator=generator) * 2.0 - 1.0
        # one series for all the rows: their random-sign sum (1, p), whose
        # squared change is, in expectation over the signs, the sum of theirs
        G = signs.to(self.device_, self.dtype_) @ self._featurizer().gradients(X, y)
        G = G[None]
        steps = self._series(G, torch_generator(self._seed))
        depths = auto_depths()
        window_starts = {depth // 2 for depth in depths}
        total, sums = torch.zeros_like(G), {}
        previous, change = None, math.inf
        for step in range(1, depths[-1] + 1):
            total += next(steps)  # the sum of the first `step` iterates
            if step in window_starts:
                sums[step] = total.clone()
            if step not in depths:
                continue
            # tail average over the iterates depth // 2 .. depth - 1, as _solve
            average = (total - sums.pop(step // 2)) / (step - step // 2)
            if previous is not None:
                change = float((average - previous).norm() / average.norm())
                if change <= self.tol:
                    break
            previous = average
        if change > self.tol:
            warnings.warn(
                f"LiSSAInfluence's tail average still changed by {change:.2g} "
                f"(above tol={self.tol:g}) at depth {step}, the largest depth='auto' "
                f"tries (scale={self.scale_:.3g}, damping={self.damping_:g}). "
                "Increase damping, pass a larger depth, or use CGInfluence.",
                ConvergenceWarning,
                stacklevel=5,
            )
        return step

    def _step_rows(self, generator):
        """Positions of one step's mini-batch of rows, or ``None`` for all rows."""
        size = self.hessian_batch_size
        if size is None:
            return None
        return torch.randint(self.n_train_, (size,), generator=generator)

    def _series(self, G, generator):
        """Yield the iterates ``v_t`` (m, p) of one run of the series from ``G``.

        ``generator`` draws the mini-batches.
        """
        g_norm = G.norm(dim=1)
        V = G.clone()  # (m, p)
        step = 0
        while True:
            AV = self._product(V, rows=self._step_rows(generator))  # fresh
            V = AV.mul_(-1 / self.scale_).add_(V).add_(G)  # G + V - AV / s
            self._check_divergence(V, g_norm, step)
            yield V
            step += 1

    def _curvature(self):
        return Solver(self._solve)

    def _solve(self, G):
        # every solve draws the same mini-batches: the map is fixed by the fit;
        # each repeat continues the generator where the previous one ended
        generator = torch_generator(self._seed)
        total = torch.zeros_like(G)
        first_averaged = self.depth_ // 2
        for _ in range(self.repeats):
            steps = self._series(G, generator)
            for step in self._iterations(self.depth_, "LiSSA"):
                V = next(steps)
                if step >= first_averaged:
                    total += V
        n_averaged = self.repeats * (self.depth_ - first_averaged)
        statistics = {"n_iter": self.repeats * self.depth_}
        return total / (n_averaged * self.scale_), statistics

    def _check_divergence(self, V, g_norm, step):
        # a convergent series has ||v_t|| <= (t + 1) ||g||; 2x leaves room
        # for mini-batch noise
        norm = V.norm(dim=1)
        bound = 2 * (step + 2) * g_norm
        if bool(torch.isfinite(norm).all()) and bool((norm <= bound).all()):
            return
        raise FloatingPointError(
            f"LiSSAInfluence diverged at step {step + 1}: a "
            f"row's norm grew to {float(norm.max()):.3g} from {float(g_norm.max()):.3g}. "
            f"scale={self.scale_:.4g} is too small for the curvature (it must exceed "
            "half its largest eigenvalue; scale='auto' is 0.6 times that of the "
            "whole training set, which the mini-batches of a small "
            "hessian_batch_size can exceed), or H + damping I has negative "
            f"eigenvalues (damping={self.damping_:g}). Use a larger scale or "
            "hessian_batch_size, a larger damping, or curvature='ggn'."
        )
