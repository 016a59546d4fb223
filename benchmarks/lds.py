"""Linear datamodeling score of the accurate estimators on the noisy-digits MLP.

The 64-64-10 ``MLPClassifier`` of ``benchmarks/_digits.py`` (4,810
parameters, 1,497 training rows with 10 % flipped labels, 50 test rows,
damping 1e-2) is scored by preconditioned Gauss-Newton CG, the exact
Gauss-Newton and Hessian influence and EK-FAC; the model is then retrained
on ``--subsets`` random halves of the training rows (one shared set of
refits), and :func:`dataval.metrics.linear_datamodeling_score` says how well
each estimator's summed scores rank the refits' test losses (its steps,
shared by the estimators: the public function refits at every call). The
standard error is over the test rows' ``LDS_i``.

Run from the repository root (the refits dominate: about 4 s each on one
core)::

    PYTHONPATH=. python benchmarks/lds.py --subsets 50
"""

import argparse
import time
import warnings

import numpy as np
import torch
from _digits import DAMPING, fitted, noisy_digits, noisy_digits_mlp
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

from dataval import CGInfluence, EKFACInfluence, ExactInfluence
from dataval._evaluation._ground_truth import lds_per_test, subset_losses
from dataval._evaluation._retrain import Retrainer

ESTIMATORS = {
    "CGInfluence(curvature='ggn', preconditioner='ekfac', max_iter=5)": CGInfluence(
        damping=DAMPING, curvature="ggn", preconditioner="ekfac", max_iter=5
    ),
    "ExactInfluence(curvature='ggn')": ExactInfluence(damping=DAMPING, curvature="ggn"),
    "ExactInfluence(curvature='hessian')": ExactInfluence(
        damping=DAMPING, curvature="hessian"
    ),
    "EKFACInfluence()": EKFACInfluence(damping=DAMPING),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subsets", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the machine is shared: avoid oversubscription
    data = noisy_digits(args.seed)
    model = fitted(data, args.seed)
    print(
        f"noisy-digits MLP 64-64-10: train accuracy {model.score(data[0], data[1]):.3f}"
        f", {args.subsets} retrained halves, damping {DAMPING:g}"
    )
    scores = {}
    for name, estimator in ESTIMATORS.items():
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the Hessian is indefinite here
            scores[name] = estimator.fit(model, data[0], data[1]).score(*data[2:])
        print(f"  {name}: {time.perf_counter() - start:.1f} s", flush=True)
    start = time.perf_counter()
    masks, measured = shared_refits(data, args.subsets, args.seed)
    print(f"{args.subsets} refits: {time.perf_counter() - start:.0f} s")
    print(f"{'estimator':<66} {'LDS':>6} {'s.e.':>6}")
    for name, frame in scores.items():
        per_test = lds_per_test(frame.to_numpy(), masks, measured)
        per_test = per_test[np.isfinite(per_test)]
        error = per_test.std(ddof=1) / np.sqrt(len(per_test))
        print(f"{name:<66} {per_test.mean():>6.3f} {error:>6.3f}")


def shared_refits(data, n_subsets, seed):
    """The subsets and refits of ``linear_datamodeling_score(random_state=seed)``.

    The same steps as the public function, once for every estimator (it
    refits at each call): with ``random_state=seed`` it returns the LDS
    printed here for each estimator's scores.
    """
    retrainer = Retrainer(noisy_digits_mlp(seed), data[0], data[1], random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return subset_losses(
            retrainer, n_subsets, 0.5, data[2], data[3], check_random_state(seed)
        )


if __name__ == "__main__":
    main()
