"""A cost model of every influence estimator, checked against measured runs.

For each estimator the model counts, for ``fit`` and for ``score``:

- **passes** over rows of data, by kind: per-sample gradients (``vmap`` of
  ``grad``), K-FAC layer signals (a forward and a backward to the layer
  outputs), Gauss-Newton-vector products with one or ``m`` vectors,
  per-sample output Jacobians. ``n`` rows are one pass over the training set;
- **flop** of the matrix products outside those passes (Kronecker factors,
  rotations, projections, solves, the pair scores ``2 m n p``), in float32 or
  float64;
- **bytes** of memory traffic outside them (the subnormal flush of flat
  per-sample gradients, Lanczos re-orthogonalization, concatenations);
- **eigh**: the ``d^3`` of the dense eigendecompositions;
- **randn**: random numbers drawn (TRAK's projection, drawn again at every
  batch when larger than an eighth of the working memory);
- **state**: the bytes the fitted estimator holds (checked against the
  fitted tensors).

Time = sum over kinds of rows x seconds per row + flop / GEMM rate + bytes /
copy bandwidth + eigh x seconds per d^3 + randn / numbers per second. The
rates are measured in the same run: a float32 and a float64 GEMM, a large
copy, a float64 ``eigh`` and ``randn`` once, and, for each model, a plain
forward+backward epoch and two batches of each kind of pass on dataval's
functional layer (outside any estimator). The script then predicts ``fit``
and ``score`` of each estimator on MLPs of three sizes, measures them and
prints measured / predicted. Everything is timed in CPU seconds of this
process with one torch thread, so that other jobs on a shared machine do
not enter the ratios.

Finally it costs the seed's setting with the same formulas: 10^8 training
tokens, 10^3 queries, a Llama-like 1B-parameter transformer, TF-IDF
candidates, low-rank queries and LoGra projection, on H100-class GPUs.

Usage::

    PYTHONPATH=. python benchmarks/cost_model.py           # three sizes
    PYTHONPATH=. python benchmarks/cost_model.py --quick   # smaller sizes only
"""

import argparse
import copy
import math
import platform
import time
import warnings
from dataclasses import dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import dataval
from dataval._adapters import adapt_model
from dataval._estimators.kronecker.fisher import output_vectors
from dataval._functional import FunctionalModel
from dataval._layers import capture, select_layers

BATCH = 256
# dataval's default working_memory: a chunk of queries, the training
# features kept between query chunks, EK-FAC's signals kept for the
# eigenvalue correction; an eighth of it: TRAK's projection kept whole
WORKING_MEMORY = 512 * 2**20
PROJECTION_CACHE = WORKING_MEMORY // 8
PASS_KINDS = ("epoch", "grad", "capture", "ggn1", "ggnm", "jac")
KRONECKER = ("K-FAC", "EK-FAC", "LoGra (k=32)")
# a phase predicted below this is call overhead, not work: no ratio
MIN_PREDICTED = 0.05
# bytes moved per element, per byte of its dtype, by the subnormal flush
FLUSH_TRAFFIC = 4.5


# ---------------------------------------------------------------------- rates
@dataclass
class Machine:
    """Rates measured once: flop/s, bytes/s, seconds per d^3, numbers/s."""

    gemm32: float
    gemm64: float
    bandwidth: float
    eigh64: float
    randn: float


@dataclass
class Passes:
    """Seconds per row of each kind of pass, measured on one model."""

    epoch: float  # plain forward+backward of the torch model
    grad: float  # per-sample gradients (vmap of grad)
    capture: float  # K-FAC layer signals (forward, backward to layer outputs)
    ggn1: float  # Gauss-Newton-vector products, 1 vector
    ggnm: float  # Gauss-Newton-vector products, m vectors at once
    jac: float  # per-sample output Jacobians


def cpu_seconds(function):
    """CPU seconds of this process spent in ``function()``."""
    start = time.process_time()
    function()
    return time.process_time() - start


def best_seconds(function, repeats=3):
    function()  # warm-up
    return min(cpu_seconds(function) for _ in range(repeats))


def calibrate_machine():
    size = 1024
    rates = {}
    for dtype in (torch.float32, torch.float64):
        A = torch.randn(size, size, dtype=dtype)
        rates[dtype] = 2 * size**3 / best_seconds(lambda A=A: A @ A)
    big = torch.randn(2**25)  # 128 MiB
    out = torch.empty_like(big)
    bandwidth = 2 * big.nbytes / best_seconds(lambda: out.copy_(big))
    d = 512
    S = torch.randn(d, d, dtype=torch.float64)
    S = S @ S.T
    eigh = best_seconds(lambda: torch.linalg.eigh(S)) / d**3
    numbers = 2**23
    randn = numbers / best_seconds(lambda: torch.randn(numbers))
    return Machine(rates[torch.float32], rates[torch.float64], bandwidth, eigh, randn)


def calibrate_passes(model, X, y, m, kinds=PASS_KINDS):
    """Seconds per row of the ``kinds`` of pass on ``model``, from two batches.

    Timed on dataval's functional layer (what every estimator calls for its
    passes), outside any estimator. Kinds not measured are NaN.
    """
    dtype = next(model.parameters()).dtype
    adapted = adapt_model(model, "auto", X, y)
    functional = FunctionalModel(adapted, torch.device("cpu"), dtype)
    layers = select_layers(adapted.module, None)
    generator = torch.Generator().manual_seed(0)
    rows = min(len(X), 2 * BATCH)
    p = functional.n_params

    def per_row(step, batch_rows=BATCH):
        parts = [
            (X[i : i + batch_rows], y[i : i + batch_rows])
            for i in range(0, rows, batch_rows)
        ]
        return best_seconds(lambda: [step(X_b, y_b) for X_b, y_b in parts], 2) / rows

    def epoch_step(X_b, y_b):
        model.zero_grad()
        F.cross_entropy(model(X_b), y_b).backward()

    def capture_step(X_b, y_b):
        vectors = output_vectors("true", adapted.loss, y_b, generator)
        capture(functional, layers, X_b, vectors)

    V1, Vm = torch.randn(1, p, dtype=dtype), torch.randn(m, p, dtype=dtype)
    steps = {
        "epoch": epoch_step,
        "grad": lambda X_b, y_b: functional.per_sample_grads(X_b, y_b),
        "capture": capture_step,
        "ggn1": lambda X_b, y_b: functional.curvature_matvec(V1, X_b, y_b, "ggn"),
        "ggnm": lambda X_b, y_b: functional.curvature_matvec(Vm, X_b, y_b, "ggn"),
        "jac": lambda X_b, y_b: functional.per_sample_jacobians(X_b),
    }
    result = Passes(
        **{kind: per_row(steps[kind]) if kind in kinds else math.nan for kind in steps}
    )
    model.zero_grad()
    return result


# ---------------------------------------------------------------------- costs
@dataclass
class Cost:
    """What one phase (``fit`` or ``score``) of an estimator spends.

    Passes are counted in rows (``n`` rows = one pass over the training set).
    """

    grad: float = 0.0  # rows of per-sample gradients
    capture: float = 0.0  # rows of K-FAC layer signals
    ggn1: float = 0.0  # rows of Gauss-Newton products with one vector
    ggnm: float = 0.0  # rows of Gauss-Newton products with m vectors
    jac: float = 0.0  # rows of per-sample Jacobians
    flop32: float = 0.0
    flop64: float = 0.0
    bytes: float = 0.0  # memory traffic beyond the passes
    eigh: float = 0.0  # sum of d^3
    randn: float = 0.0  # random numbers drawn
    state: float = 0.0  # bytes the fitted estimator holds (fit only)

    def __add__(self, other):
        return Cost(
            *(getattr(self, f.name) + getattr(other, f.name) for f in fields(self))
        )

    def rows(self):
        return self.grad + self.capture + self.ggn1 + self.ggnm + self.jac

    def seconds(self, machine, passes):
        rows = sum(
            getattr(self, kind) * getattr(passes, kind)
            for kind in PASS_KINDS[1:]
            if getattr(self, kind)
        )
        return (
            rows
            + self.flop32 / machine.gemm32
            + self.flop64 / machine.gemm64
            + self.bytes / machine.bandwidth
            + self.eigh * machine.eigh64
            + self.randn / machine.randn
        )


@dataclass
class Net:
    """An MLP seen as Linear layers: ``(d_in with bias, d_out)`` each, ``c`` outputs."""

    layers: list
    c: int
    p: int = field(init=False)

    def __post_init__(self):
        self.p = sum(i * o for i, o in self.layers)


def test_chunk(p_vector, itemsize=4):
    """Test rows per chunk: their preconditioned gradients fill working memory."""
    return max(1, WORKING_MEMORY // (p_vector * itemsize + 16 * BATCH))


def training_passes(row_bytes, n, m, p_vector, itemsize=4):
    """Passes over the training rows in a score: one per test chunk, or one if cached."""
    if n * row_bytes <= WORKING_MEMORY:
        return 1
    return math.ceil(m / test_chunk(p_vector, itemsize))


def flat_score(p, n, m, itemsize=4, queries=None, blocks=1):
    """Score on flat per-sample gradients (``blocks`` models side by side).

    The gradients' subnormal entries are set to zero (|x|, compare, fill:
    about 4.5 memory passes over them).
    """
    vector = blocks * p
    passes = training_passes(vector * itemsize, n, m, vector, itemsize)
    flop = 2 * m * n * vector
    rows = blocks * (m + passes * n)
    traffic = FLUSH_TRAFFIC * rows * p * itemsize
    cost = Cost(grad=rows, bytes=traffic) + (queries or Cost())
    return cost + (Cost(flop64=flop) if itemsize == 8 else Cost(flop32=flop))


def cost_exact(net, n, m):
    """ExactInfluence, Gauss-Newton matrix from per-sample Jacobians, float64."""
    p, c = net.p, net.c
    fit = Cost(
        jac=n,
        flop64=2 * n * c * p * p + 2 * n * c * c * p,
        eigh=p**3,
        state=p * p * 8 + p * 8,
    )
    return fit, flat_score(p, n, m, itemsize=8, queries=Cost(flop64=4 * m * p * p))


def cost_cg(net, n, m, max_iter):
    """CGInfluence (Gauss-Newton), ``max_iter`` iterations for every row."""
    # each iteration: one product pass, and ~12 (m, p) vector updates
    solve = Cost(ggnm=max_iter * n, bytes=max_iter * 12 * m * net.p * 4)
    return Cost(), flat_score(net.p, n, m, queries=solve)


def cost_lissa(net, n, m, depth, hessian_batch, power=30):
    """LiSSAInfluence: ``scale="auto"`` power iteration at fit, ``depth`` steps per solve."""
    fit = Cost(ggn1=power * n)
    solve = Cost(ggnm=depth * hessian_batch, bytes=depth * 6 * m * net.p * 4)
    return fit, flat_score(net.p, n, m, queries=solve)


def cost_arnoldi(net, n, m, rank):
    """ArnoldiInfluence: ``2 rank + 20`` Lanczos products, re-orthogonalized twice."""
    steps, p = 2 * rank + 20, net.p
    # step j: two Gram-Schmidt sweeps over j basis rows, 4 matrix-vector products
    fit = Cost(
        ggn1=steps * n,
        bytes=16 * p * steps * steps / 2,
        eigh=steps**3,
        state=p * rank * 8 + rank * 8,
    )
    return fit, flat_score(p, n, m, queries=Cost(flop32=6 * m * p * rank))


def kronecker(net, k=None):
    """``(dims, p, s2, s3, project)`` of the Kronecker layers, projected to ``k``."""
    dims = [(i, o) if k is None else (min(i, k), min(o, k)) for i, o in net.layers]
    p = sum(i * o for i, o in dims)
    s2 = sum(i * i + o * o for i, o in dims)
    s3 = sum(i**3 + o**3 for i, o in dims)
    # a P_in^T and g P_out^T per row, for the sides that are projected
    project = sum(
        (2 * i * ki if ki < i else 0) + (2 * o * ko if ko < o else 0)
        for (i, o), (ki, ko) in zip(net.layers, dims)
    )
    return dims, p, s2, s3, project


def cost_kfac(net, n, m, corrected, k=None):
    """K-FAC (``corrected=False``), EK-FAC, or LoGra with projection ``k``."""
    dims, p, s2, s3, project = kronecker(net, k)
    signals = Cost(capture=n, flop32=n * project)
    projection_state = (
        0
        if k is None
        else 4
        * sum(
            i * ki * (ki < i) + o * ko * (ko < o)
            for (i, o), (ki, ko) in zip(net.layers, dims)
        )
    )
    fit = signals + Cost(
        flop32=2 * n * s2,  # A = a^T a, S = g^T g
        eigh=s3,
        state=4 * (s2 + sum(i + o for i, o in dims) + p) + projection_state,
    )
    if corrected:
        signal_bytes = 4 * n * sum(i + o for i, o in dims)
        again = signals if signal_bytes > WORKING_MEMORY else Cost()
        # rotated signals, then Lambda = (g^2)^T (a^2)
        fit = fit + again + Cost(flop32=2 * n * s2 + 2 * n * p)
    row_bytes = 4 * sum(i + o for i, o in dims)
    passes = training_passes(row_bytes, n, m, p)
    score = Cost(capture=m, flop32=m * (project + 2 * s2 + p))
    score = score + Cost(capture=passes * n, flop32=passes * n * (project + 2 * s2))
    return fit, score + Cost(flop32=2 * m * n * p)  # the pair scores g^T R a


def cost_trak(net, n, m, k, ensemble):
    """TRAKInfluence: projected Jacobians at fit, projected gradients at score."""
    p, c = net.p, net.c
    cached = p * k * 4 <= PROJECTION_CACHE
    batches = math.ceil(n / BATCH)
    # the projection is drawn once when cached, else at every batch and for
    # each Gram matrix P diag(w) P^T (the L2 term per model, and P P^T)
    draws = 1 if cached else ensemble * (batches + 1) + 1
    fit = Cost(
        jac=ensemble * n,
        flop32=ensemble * (2 * n * c * p * k + 2 * n * c * k * k + 2 * p * k * k)
        + 2 * p * k * k,
        bytes=ensemble * 4 * n * c * p,  # the projection reads column slices of J
        eigh=ensemble * k**3,
        randn=draws * p * k,
        state=ensemble * (k * k + 2 * k) * 4,
    )
    vector = ensemble * k
    passes = training_passes(vector * 4, n, m, vector)
    rows = ensemble * (m + passes * n)
    score = Cost(
        grad=rows,
        bytes=FLUSH_TRAFFIC * rows * p * 4,  # flat gradients, flushed, then projected
        flop32=2 * rows * p * k + 2 * m * n * vector,
        randn=0 if cached else ensemble * p * k * (1 + passes * batches),
    )
    return fit, score


def cost_tracin(net, n, m, checkpoints):
    """TracIn: gradients at every checkpoint, learning-rate-weighted dot products."""
    # + torch.cat of the checkpoints' blocks
    copies = Cost(bytes=8 * n * checkpoints * net.p)
    # the fitted state: each checkpoint's learning rate repeated over its p
    fit = Cost(state=4 * checkpoints * net.p)
    return fit, flat_score(net.p, n, m, queries=copies, blocks=checkpoints)


def cost_source(net, n, m, segments):
    """SourceInfluence: an EK-FAC per segment; flat gradients at every segment."""
    fit = Cost()
    for _ in range(segments):
        fit = fit + cost_kfac(net, n, m, corrected=True)[0]
    cube = sum(i * o * (i + o) for i, o in net.layers)
    vector = segments * net.p
    passes = training_passes(vector * 4, n, m, vector)
    # flat gradients g a^T formed from the captured signals: they write the
    # same (rows, p) outer products as the per-sample gradient pass, which
    # that write dominates. Queries: the final checkpoint's gradients only,
    # then two spectral maps per segment
    rows = m + segments * passes * n
    score = Cost(
        capture=rows,
        grad=rows,
        flop32=segments * 8 * m * cube + 2 * m * n * vector,
    )
    return fit, score


# ---------------------------------------------------------------- measurement
def make_mlp(d_in, hidden, c, seed=0):
    torch.manual_seed(seed)
    sizes = [d_in, *hidden, c]
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    model = nn.Sequential(*layers)
    net = Net([(a + 1, b) for a, b in zip(sizes[:-1], sizes[1:])], c)
    return model, net


def make_problem(d_in, hidden, n, m, c=10, seed=0, dtype=torch.float32):
    """A trained MLP, its data, and two checkpoints (after epoch 1 and the last)."""
    model, net = make_mlp(d_in, hidden, c, seed)
    generator = torch.Generator().manual_seed(seed)
    teacher = torch.randn(d_in, c, generator=generator)
    X = torch.randn(n + m, d_in, generator=generator)
    y = (X @ teacher + torch.randn(n + m, c, generator=generator)).argmax(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    checkpoints = []
    for _ in range(2):
        for idx in torch.randperm(n, generator=generator).split(128):
            optimizer.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            optimizer.step()
        checkpoints.append(copy.deepcopy(model.state_dict()))
    model = model.to(dtype)
    return model, net, X[:n].to(dtype), y[:n], X[n:].to(dtype), y[n:], checkpoints


def state_bytes(estimator):
    """Bytes of the tensors the fitted estimator keeps (``dataval.save``'s state)."""

    def size(value):
        if isinstance(value, torch.Tensor):
            return value.nbytes
        if isinstance(value, np.ndarray):
            return value.nbytes
        if isinstance(value, dict):
            return sum(size(v) for v in value.values())
        if isinstance(value, (list, tuple)):
            return sum(size(v) for v in value)
        return 0

    return size(estimator._fitted_state())


def estimators(net, n, m, checkpoints):
    """``[(name, make estimator, (fit cost, score cost))]`` at one size."""
    common = {"batch_size": BATCH, "device": "cpu"}
    return [
        (
            "CG (3 iterations)",
            lambda: dataval.CGInfluence(
                damping=1e-2, curvature="ggn", tol=1e-30, max_iter=3, **common
            ),
            cost_cg(net, n, m, 3),
        ),
        (
            "LiSSA (depth 20)",
            lambda: dataval.LiSSAInfluence(
                damping=1e-2,
                curvature="ggn",
                depth=20,
                hessian_batch_size=BATCH,
                random_state=0,
                **common,
            ),
            cost_lissa(net, n, m, 20, BATCH),
        ),
        (
            "Arnoldi (rank 5)",
            lambda: dataval.ArnoldiInfluence(
                rank=5, damping=1e-2, curvature="ggn", random_state=0, **common
            ),
            cost_arnoldi(net, n, m, 5),
        ),
        (
            "K-FAC",
            lambda: dataval.KFACInfluence(damping=1e-3, random_state=0, **common),
            cost_kfac(net, n, m, corrected=False),
        ),
        (
            "EK-FAC",
            lambda: dataval.EKFACInfluence(damping=1e-3, random_state=0, **common),
            cost_kfac(net, n, m, corrected=True),
        ),
        (
            "LoGra (k=32)",
            lambda: dataval.LoGraInfluence(
                factor_dim=32, damping=1e-3, random_state=0, **common
            ),
            cost_kfac(net, n, m, corrected=True, k=32),
        ),
        (
            "TRAK (k=64)",
            lambda: dataval.TRAKInfluence(
                projection_dim=64, damping=1e-3, random_state=0, **common
            ),
            cost_trak(net, n, m, 64, 1),
        ),
        (
            "TracIn (2 checkpoints)",
            lambda: dataval.TracIn(checkpoints=checkpoints, **common),
            cost_tracin(net, n, m, 2),
        ),
        (
            "Source (2 segments)",
            lambda: dataval.SourceInfluence(
                segments=checkpoints, damping=1e-3, random_state=0, **common
            ),
            cost_source(net, n, m, 2),
        ),
    ]


def exact_estimator(net, n, m):
    make = lambda: dataval.ExactInfluence(  # noqa: E731
        damping=1e-2, curvature="ggn", batch_size=BATCH, device="cpu"
    )
    return [("Exact (GGN, float64)", make, cost_exact(net, n, m))]


def measure(make, model, X, y, X_test, y_test):
    estimator = make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = cpu_seconds(lambda: estimator.fit(model, X, y))
        score = cpu_seconds(lambda: estimator.score(X_test, y_test))
    return fit, score, state_bytes(estimator)


def check(machine, sizes, m):
    """Predicted and measured seconds of every estimator at every size."""
    ratios = []
    for label, d_in, hidden, n, group in sizes:
        dtype = torch.float64 if group == "exact" else torch.float32
        model, net, X, y, X_test, y_test, checkpoints = make_problem(
            d_in, hidden, n, m, dtype=dtype
        )
        if group == "exact":
            todo, kinds = exact_estimator(net, n, m), ("epoch", "jac", "grad")
        else:
            todo = [
                entry
                for entry in estimators(net, n, m, checkpoints)
                if (entry[0] in KRONECKER) == (group == "kronecker")
            ]
            kinds = ("epoch", "capture") if group == "kronecker" else PASS_KINDS
        passes = calibrate_passes(model, X, y, m, kinds)
        shape = f"{d_in}-{'-'.join(map(str, hidden))}-{net.c}"
        per_epoch = {kind: getattr(passes, kind) / passes.epoch for kind in kinds[1:]}
        print(
            f"\n{label}: MLP {shape}, p = {net.p:,}, n = {n:,}, m = {m}, {dtype}; "
            f"epoch {passes.epoch * n * 1e3:.0f} ms; passes in epochs: "
            + ", ".join(f"{kind} {value:.1f}" for kind, value in per_epoch.items())
        )
        print(
            f"{'estimator':<24}{'phase':<7}{'passes':>7}{'Gflop':>9}{'GB':>7}"
            f"{'MB held':>9}{'predicted s':>13}{'measured s':>12}{'ratio':>7}"
        )
        for name, make, costs in todo:
            fit, score, state = measure(make, model, X, y, X_test, y_test)
            for phase, cost, seconds in zip(("fit", "score"), costs, (fit, score)):
                predicted = cost.seconds(machine, passes)
                held = f"{state / 1e6:9.2f}" if phase == "fit" else " " * 9
                shown = (
                    f"{seconds / predicted:7.2f}"
                    if predicted >= MIN_PREDICTED
                    else "      -"
                )
                print(
                    f"{name:<24}{phase:<7}{cost.rows() / n:7.1f}"
                    f"{(cost.flop32 + cost.flop64) / 1e9:9.2f}{cost.bytes / 1e9:7.2f}"
                    f"{held}{predicted:13.2f}{seconds:12.2f}{shown}"
                )
                if predicted >= MIN_PREDICTED:
                    ratios.append((name, phase, label, seconds / predicted))
            if abs(state - costs[0].state) > 0.01 * max(state, 1):
                print(f"    state: predicted {costs[0].state:,.0f} B, held {state:,} B")
        again = calibrate_passes(model, X, y, m, ("epoch",)).epoch
        print(
            f"epoch after: {again * n * 1e3:.0f} ms (load drift {again / passes.epoch:.2f}x)"
        )
    return ratios


# ------------------------------------------------------------------ 1B costing
@dataclass
class GPU:
    """Assumed rates of one GPU (H100 SXM; an H200 has the same compute)."""

    name: str = "H100 SXM 80 GB"
    bf16: float = 989e12  # dense tensor-core peak, flop/s
    fp32: float = 67e12  # float32 without TF32 (torch's default for matmul)
    efficiency: float = 0.4  # of peak, for passes and products alike
    eigh: float = 1e12  # flop/s of a float64 eigendecomposition (10 d^3 flop)


def llama_1b():
    """Llama-3.2-1B-like: hidden 2048, 16 blocks, MLP 8192, 32 heads, 8 KV heads."""
    d, f, kv, blocks, vocab = 2048, 8192, 512, 16, 128_256
    block = [(d, d), (d, kv), (d, kv), (d, d), (d, f), (d, f), (f, d)]
    layers = block * blocks  # q, k, v, o, gate, up, down; no biases
    linear = sum(i * o for i, o in layers)
    return {
        "layers": layers,
        "linear_params": linear,
        "params": linear + vocab * d,  # embeddings tied with the output layer
        "blocks": blocks,
        "d": d,
        "vocab": vocab,
    }


def pair_flop(dims, positions, m, rank):
    """Flop of scoring one training row (``positions`` tokens) against ``m`` queries.

    As ``dataval._layers`` chooses: low-rank queries, the per-sample gradient
    ``sum_l g_l a_l^T`` when it is the smaller intermediate, else projections.
    """
    total = 0
    for i, o in dims:
        if rank:
            total += 2 * positions * m * min(rank, i, o) * (i + o)
        elif positions * m * min(i, o) >= i * o:
            total += 2 * positions * i * o + 2 * m * i * o
        else:
            total += 2 * positions * m * i * o
    return total


def cost_1b(
    gpu,
    k=None,
    candidates=None,
    rank=None,
    working_memory=512,
    batch_size=4,
    tokens=1e8,
    seq=2048,
    queries=1000,
):
    """GPU-hours and memory of EK-FAC (``k=None``) or LoGra influence on a 1B LLM.

    ``candidates``: TF-IDF candidates per query (``dataval.text.score_candidates``),
    else ``top_k`` over every training row. ``rank``: ``query_rank``.
    """
    llm = llama_1b()
    layers, d, blocks = llm["layers"], llm["d"], llm["blocks"]
    n = tokens / seq
    dims = [(i, o) if k is None else (min(i, k), min(o, k)) for i, o in layers]
    p = sum(i * o for i, o in dims)
    s2 = sum(i * i + o * o for i, o in dims)
    s3 = sum(i**3 + o**3 for i, o in dims)
    width = sum(i + o for i, o in dims)
    full_width = sum(i + o for i, o in layers)
    project = 0 if k is None else 2 * k * full_width  # per token
    # a token's forward: Linear layers, output layer, causal attention (QK^T, AV)
    forward = 2 * llm["linear_params"] + 2 * d * llm["vocab"] + 2 * blocks * d * seq
    capture = 2 * forward  # forward, and backward to the layer outputs only
    bf16 = gpu.bf16 * gpu.efficiency
    fp32 = gpu.fp32 * gpu.efficiency

    def signals(n_tokens):  # the pass and LoGra's projection, in bf16
        return n_tokens * (capture + project) / bf16

    # fit: a pass for the factors A, S (float32); EK-FAC's correction needs
    # a second when the signals exceed the working memory (always): their rotation
    # into the eigenbases, and Lambda from the rotated per-token gradients
    fit = 2 * signals(tokens) + tokens * (2 * s2 + 2 * s2 + 2 * p) / fp32
    fit += 10 * s3 / gpu.eigh
    chunk = max(1, int(working_memory * 2**20 // (4 * p + 16 * batch_size)))
    if candidates:
        # score_candidates: groups of batch_size queries; every test chunk of
        # a group takes the gradients of the group's whole candidate union
        groups = math.ceil(queries / batch_size)
        per_group = math.ceil(batch_size / chunk)
        rows = groups * per_group * min(batch_size * candidates, n)
        m_pair = min(chunk, batch_size)
    else:
        rows = math.ceil(queries / chunk) * n  # the signals are never cached
        m_pair = min(chunk, queries)
    scored = (rows + queries) * seq  # tokens, rotated like the fit's
    score = signals(scored) + scored * 2 * s2 / fp32
    score += rows * pair_flop(dims, seq, m_pair, rank) / fp32
    # memory of one GPU: bf16 weights; a batch's activations (flash
    # attention), the recorded layer outputs (a copy) and output gradients
    # in bf16, the float32 signals and their rotation; the largest pair-score
    # intermediate of a layer; a chunk of queries; the fitted state
    batch_tokens = batch_size * seq
    out_width = sum(o for _, o in layers)
    pair_memory = 0
    for i, o in dims:
        if rank:
            size = batch_tokens * m_pair * min(rank, i, o) * 2
        elif seq * m_pair * min(i, o) >= i * o:
            size = batch_size * i * o  # (B, d_out d_in) per-sample gradients
        else:
            size = batch_tokens * m_pair * min(i, o)
        pair_memory = max(pair_memory, 4 * size)
    memory = {
        "weights": 2 * llm["params"],
        "activations": 34 * batch_tokens * d * blocks,
        "recorded": 4 * batch_tokens * out_width + 8 * batch_tokens * width,
        "pair scores": pair_memory,
        "queries": min(queries, chunk) * p * 4,
        "state": 4 * (s2 + width + p) + (0 if k is None else 2 * k * full_width),
    }
    return {
        "fit": fit / 3600,
        "score": score / 3600,
        "rows": rows,
        "chunk": chunk,
        "memory": memory,
        "p": p,
    }


SETTINGS_1B = [
    ("LoGra k=64, top_k over all rows", {"k": 64}),
    ("LoGra k=64, top_k, working_memory=2048", {"k": 64, "working_memory": 2048}),
    (
        "LoGra k=64, 100 TF-IDF candidates, query_rank=8",
        {"k": 64, "candidates": 100, "rank": 8},
    ),
    (
        "LoGra k=64, 10 TF-IDF candidates, query_rank=8",
        {"k": 64, "candidates": 10, "rank": 8},
    ),
    ("EK-FAC, top_k over all rows", {"batch_size": 2}),
    (
        "EK-FAC, 100 TF-IDF candidates, query_rank=32",
        {"candidates": 100, "rank": 32, "batch_size": 2},
    ),
]


# dask workers scoring in parallel; dataval fits on one (the client's)
GPUS = 8


def print_1b(gpu):
    llm = llama_1b()
    print(
        f"\n1B costing: Llama-like, {llm['params'] / 1e9:.2f}B parameters "
        f"({llm['linear_params'] / 1e9:.2f}B in {len(llm['layers'])} Linear layers, "
        f"the ones scored), 1e8 training tokens in rows of 2048 (48,828 rows), 1e3 "
        f"queries; {gpu.name}: bf16 {gpu.bf16 / 1e12:.0f}, float32 "
        f"{gpu.fp32 / 1e12:.0f} TFLOP/s peak, {gpu.efficiency:.0%} of it reached"
    )
    print(
        f"{'setting':<50}{'fit GPU-h':>10}{'score GPU-h':>12}{'rows scored':>12}"
        f"{'queries/chunk':>14}{'GB/GPU':>8}{'wall h, 8 GPUs':>16}"
    )
    for label, setting in SETTINGS_1B:
        r = cost_1b(gpu, **setting)
        print(
            f"{label:<50}{r['fit']:10.2f}{r['score']:12.2f}{r['rows']:12.3g}"
            f"{r['chunk']:14,}{sum(r['memory'].values()) / 1e9:8.1f}"
            f"{r['fit'] + r['score'] / GPUS:16.2f}"
        )
    for label, setting in (SETTINGS_1B[2], SETTINGS_1B[5]):
        memory = cost_1b(gpu, **setting)["memory"]
        print(
            f"  memory of {label.split(',')[0]} (GB): "
            + ", ".join(f"{name} {value / 1e9:.1f}" for name, value in memory.items())
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the two smaller sizes of Exact, the smallest of the rest",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    # one thread, CPU seconds of this process: the other jobs of a shared
    # machine change wall-clock times by several times, not CPU time
    torch.set_num_threads(1)
    print(
        f"{platform.node()}, {platform.processor() or platform.machine()}, torch "
        f"{torch.__version__}, 1 thread, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    machine = calibrate_machine()
    print(
        f"float32 GEMM {machine.gemm32 / 1e9:.1f} Gflop/s, float64 GEMM "
        f"{machine.gemm64 / 1e9:.1f} Gflop/s, copy {machine.bandwidth / 1e9:.1f} GB/s, "
        f"eigh {machine.eigh64 * 1e9:.2f} ns per d^3, randn {machine.randn / 1e6:.0f} M/s"
    )
    sizes = [
        ("Exact S", 64, (16,), 500, "exact"),
        ("Exact M", 64, (32,), 500, "exact"),
        ("Exact L", 64, (48,), 500, "exact"),
        ("S", 128, (128, 128), 1000, "flat"),
        ("M", 256, (256, 256), 1000, "flat"),
        ("L", 512, (512,), 1500, "flat"),
        # the Kronecker family takes about one epoch: more rows to time
        ("Kronecker S", 128, (128, 128), 20_000, "kronecker"),
        ("Kronecker M", 256, (256, 256), 20_000, "kronecker"),
        ("Kronecker L", 512, (512,), 30_000, "kronecker"),
    ]
    if args.quick:
        sizes = [sizes[0], sizes[1], sizes[3], sizes[6], sizes[7]]
    ratios = check(machine, sizes, m=16)
    values = np.array([r for *_, r in ratios])
    print(
        f"\nmeasured / predicted over {len(values)} phases: median "
        f"{np.median(values):.2f}, geometric mean {np.exp(np.log(values).mean()):.2f}, "
        f"within 2x: {np.mean((values >= 0.5) & (values <= 2)):.0%}"
    )
    for name, phase, label, r in ratios:
        if not 0.5 <= r <= 2:
            print(f"  outside 2x: {name} {phase} at {label}: {r:.2f}")
    print_1b(GPU())


if __name__ == "__main__":
    main()
