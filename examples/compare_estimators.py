"""Which influence estimator can you trust on your model? Measure it.

Every influence estimator in dataval is compared, with its default settings
(except three, below), on a logistic regression of the breast cancer data of
scikit-learn, by 3-fold cross-validation and three metrics (higher is better
for all):

* ``lds``: linear datamodeling score, how well summed scores rank models
  retrained on random halves of the training fold;
* ``loo``: Pearson correlation with leave-one-out retraining;
* ``mislabel_auc``: ROC AUC for 10 % flipped labels of ``-value`` on the
  held-out fold (rows that raise the clean held-out loss), one solve per
  estimator (``self_influence`` would need one per training row).

Run ``python examples/compare_estimators.py --plot comparison.png`` to also
save a bar plot (needs matplotlib).
"""

import argparse
import inspect
import warnings

from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import dataval
from dataval.exceptions import ConvergenceWarning
from dataval.model_selection import compare_estimators

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--plot", metavar="FILE", help="save a bar plot to FILE")
parser.add_argument("--n-jobs", type=int, default=None, help="folds in parallel")
args = parser.parse_args()

# low-rank methods below the model's 31 parameters (their defaults are sized for
# large models), and a shorter LiSSA series on smaller batches than the default
# (depth=5000, 256 rows) to keep the example under a minute
SETTINGS = {
    "ArnoldiInfluence": dict(rank=20),
    "TRAKInfluence": dict(projection_dim=16),
    "LiSSAInfluence": dict(depth=500, hessian_batch_size=64),
}
# LiSSA rightly warns that depth=500 leaves near-zero curvature unconverged;
# the comparison measures what that costs
warnings.filterwarnings("ignore", category=ConvergenceWarning)

# every influence estimator the installed dataval provides, with its defaults
estimators = {
    name: obj(**SETTINGS.get(name, {}))
    for name, obj in vars(dataval).items()
    if name in dataval.__all__
    and inspect.isclass(obj)
    and hasattr(obj, "self_influence")
}

X, y = load_breast_cancer(return_X_y=True)
# a tight tolerance: retrained models must differ by the data, not the optimizer
model = make_pipeline(
    StandardScaler(), LogisticRegression(C=0.1, solver="newton-cholesky", tol=1e-10)
)

results = compare_estimators(
    estimators,
    model,
    X,
    y,
    scoring=["lds", "loo", "mislabel_auc"],
    cv=3,
    n_test=30,
    n_subsets=20,
    n_loo=20,
    noise=0.1,
    detection="value",
    n_jobs=args.n_jobs,
    random_state=0,
)

table = results.pivot_table(index="estimator", columns="metric", values="value")
times = results.groupby("estimator")[["fit_time", "score_time"]].mean()
table = table.join(times).sort_values("lds", ascending=False)
print(
    f"{len(estimators)} estimators, logistic regression (31 parameters) on "
    f"{len(y)} tumours, mean over 3 folds:\n"
)
print(table.to_string(float_format="{:.3f}".format))

if args.plot:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = table[["lds", "loo", "mislabel_auc"]].plot.bar(figsize=(7, 4), rot=0)
    ax.set_ylim(0, 1.05)
    ax.legend(title="metric", loc="lower right")
    ax.set_ylabel("score (higher is better)")
    ax.set_title("Influence estimators against retraining")
    plt.tight_layout()
    plt.savefig(args.plot)
    print(f"\nSaved the bar plot to {args.plot}.")
