"""Linear datamodeling score of the accurate estimators on the noisy-digits MLP.

A 64-64-10 ``MLPClassifier`` of ``benchmarks/_digits.py`` (4,810
parameters, 1,497 training rows with 10 % flipped labels, 50 test rows,
damping 1e-2) is scored by Gauss-Newton CG preconditioned by EK-FAC at
several iteration counts, the exact Gauss-Newton and Hessian influence
(float64), EK-FAC and K-FAC (``fisher="ggn"``); the model is then retrained
on ``--subsets`` random halves of the training rows (one shared set of
refits, the same recipe and seed as the model), and
:func:`dataval.metrics.linear_datamodeling_score` says how well each
estimator's summed scores rank the refits' test losses (its steps, shared by
the estimators: the public function refits at every call). The standard
error is over the test rows' ``LDS_i``, "- GGN" the mean paired difference
``LDS_i - LDS_i(exact GGN)`` and its standard error; "Pearson" and "vs GGN"
are the mean over test rows of the correlation with the exact Hessian and
Gauss-Newton influence.

``--model converged`` (default): the tanh network trained by full-batch
L-BFGS with ``alpha=1`` to ``tol=1e-9`` (at a minimum of its objective, as
influence functions assume; the script prints how close). ``--model adam``:
the ReLU network trained by Adam for 500 iterations (stopped far from a
minimum; its Hessian is indefinite).

Run from the repository root (the refits dominate: a few seconds each on one
core)::

    PYTHONPATH=. python benchmarks/lds.py --subsets 50
"""

import argparse
import time
import warnings

import numpy as np
import torch
from _digits import DAMPING, converged_digits_mlp, noisy_digits, noisy_digits_mlp
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

from dataval import CGInfluence, EKFACInfluence, ExactInfluence, KFACInfluence
from dataval._adapters import adapt_model
from dataval._evaluation._ground_truth import lds_per_test, subset_losses
from dataval._evaluation._retrain import Retrainer
from dataval._objective import stationarity

MODELS = {"converged": converged_digits_mlp, "adam": noisy_digits_mlp}
REFERENCE = "ExactInfluence(curvature='hessian')"
GGN = "ExactInfluence(curvature='ggn')"


def estimators(damping, cg_iterations, seed):
    exact = dict(damping=damping, dtype="float64")
    found = {
        REFERENCE: ExactInfluence(curvature="hessian", **exact),
        GGN: ExactInfluence(curvature="ggn", **exact),
    }
    for max_iter in cg_iterations:
        name = (
            f"CGInfluence(curvature='ggn', preconditioner='ekfac', max_iter={max_iter})"
        )
        found[name] = CGInfluence(
            damping=damping, curvature="ggn", preconditioner="ekfac", max_iter=max_iter
        )
    # its default fisher="true" samples the labels: seeded, for a repeatable run
    found["EKFACInfluence()"] = EKFACInfluence(damping=damping, random_state=seed)
    found["KFACInfluence(fisher='ggn')"] = KFACInfluence(damping=damping, fisher="ggn")
    return found


def describe(model, data):
    """Accuracies and how close the model is to a minimum of its objective."""
    adapted = adapt_model(model, "auto", data[0], data[1])
    X, y = adapted.prepare_X(data[0]), adapted.prepare_y(data[1])
    return (
        f"train accuracy {model.score(data[0], data[1]):.3f}, test accuracy "
        f"{model.score(data[2], data[3]):.3f}; the objective's gradient is "
        f"{stationarity(adapted, X, y, None, 512):.2g} of the per-row gradients' size"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subsets", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", choices=sorted(MODELS), default="converged")
    parser.add_argument("--damping", type=float, default=DAMPING)
    parser.add_argument(
        "--cg-iterations",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[1, 2, 3, 5, 8, 13],
        help="max_iter values of the preconditioned CG, comma-separated",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # the machine is shared: avoid oversubscription
    data = noisy_digits(args.seed)
    start = time.perf_counter()
    retrainer = Retrainer(
        MODELS[args.model](args.seed), data[0], data[1], random_state=args.seed
    )
    model = retrainer.full_
    print(
        f"noisy-digits MLP 64-64-10 ({args.model}, fitted in "
        f"{time.perf_counter() - start:.1f} s): "
        f"{describe(model, data)}; damping {args.damping:g}, {args.subsets} "
        "retrained halves",
        flush=True,
    )
    scores, seconds, notes = {}, {}, {}
    for name, estimator in estimators(
        args.damping, args.cg_iterations, args.seed
    ).items():
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scores[name] = estimator.fit(model, data[0], data[1]).score(*data[2:])
        seconds[name] = time.perf_counter() - start
        notes[name] = sorted(
            {w.category.__name__ for w in caught} - {"DeprecationWarning"}
        )
        if name == REFERENCE:
            values = estimator.eigenvalues_
            notes[name].append(
                f"(Hessian eigenvalues {float(values.min()):.3g} to "
                f"{float(values.max()):.3g})"
            )
        solver = scores[name].attrs.get("solver", {})
        if "max_residual" in solver:
            notes[name].append(f"residual {solver['max_residual']:.2g}")
        print(f"  {name}: {seconds[name]:.1f} s {' '.join(notes[name])}", flush=True)
    start = time.perf_counter()
    masks, measured = shared_refits(retrainer, data, args.subsets, args.seed)
    print(f"{args.subsets} refits: {time.perf_counter() - start:.0f} s")
    print(
        f"{'estimator':<76} {'LDS':>6} {'s.e.':>6} {'- GGN':>6} {'s.e.':>6} "
        f"{'Pearson':>8} {'vs GGN':>7} {'seconds':>8}"
    )
    lds = {
        name: lds_per_test(frame.to_numpy(), masks, measured)
        for name, frame in scores.items()
    }
    for name, frame in scores.items():
        finite = lds[name][np.isfinite(lds[name])]
        paired = lds[name] - lds[GGN]  # the same test rows: a paired difference
        paired = paired[np.isfinite(paired)]
        print(
            f"{name:<76} {finite.mean():>6.3f} {standard_error(finite):>6.3f} "
            f"{paired.mean():>+6.3f} {standard_error(paired):>6.3f} "
            f"{mean_row_pearson(frame, scores[REFERENCE]):>8.3f} "
            f"{mean_row_pearson(frame, scores[GGN]):>7.3f} {seconds[name]:>8.1f}"
        )


def standard_error(values):
    return values.std(ddof=1) / np.sqrt(len(values))


def mean_row_pearson(frame, reference):
    """Pearson correlation over training rows, averaged over the test rows."""
    return np.mean(
        [
            np.corrcoef(row, reference_row)[0, 1]
            for row, reference_row in zip(frame.to_numpy(), reference.to_numpy())
        ]
    )


def shared_refits(retrainer, data, n_subsets, seed):
    """The subsets and refits of ``linear_datamodeling_score(random_state=seed)``.

    The same steps as the public function, once for every estimator (it
    refits at each call): with ``random_state=seed`` it returns the LDS
    printed here for each estimator's scores.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return subset_losses(
            retrainer, n_subsets, 0.5, data[2], data[3], check_random_state(seed)
        )


if __name__ == "__main__":
    main()
