"""Value the training rows of a model without gradients: a random forest.

The digits of scikit-learn with 10 % flipped labels. A random forest has no
gradients, so influence functions do not apply; valuation by retraining
does:

* ``DataOOB``: bagged clones of the forest, each row valued by how well the
  clones that never saw it predict its label (no validation set);
* ``KNNShapley``: exact Shapley values of a 5-nearest-neighbour classifier,
  each row valued on the others (seconds for the whole set);
* ``ShapleyValuation`` and ``BanzhafValuation``: Monte Carlo retraining of
  any model on a validation set (here 60 rows, to keep it short).

It prints the ROC AUC of each ranking for the flipped labels, the most
suspicious rows, and the point-removal curve: accuracy on held-out rows
after removing the lowest- or highest-valued rows.

Run: ``python examples/valuation.py`` (about a minute on a laptop CPU).
"""

from sklearn.ensemble import RandomForestClassifier
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier

from dataval import BanzhafValuation, DataOOB, KNNShapley, ShapleyValuation
from dataval.datasets import load_mislabeled_digits
from dataval.metrics import mislabel_detection_auc, point_removal_curve

X, y, flipped = load_mislabeled_digits(noise=0.1, random_state=0, as_frame=True)
X_train, y_train, flipped_train = X[:1400], y[:1400], flipped[:1400]
X_val, y_val = X[1400:], y[1400:]  # labels of these rows are only used to score
forest = RandomForestClassifier(n_estimators=30, random_state=0)

oob = DataOOB(n_estimators=30, random_state=0).fit(forest, X_train, y_train)
oob_values = oob.value()
knn_values = KNNShapley().fit(KNeighborsClassifier(5), X_train, y_train).value()
print("ROC AUC for the flipped labels (higher is better):")
print(
    f"  Data-OOB (random forest)  {mislabel_detection_auc(-oob_values, flipped_train):.3f}"
)
print(
    f"  KNN-Shapley (5 neighbours) {mislabel_detection_auc(-knn_values, flipped_train):.3f}"
)

suspects = oob_values.nsmallest(5).to_frame()
suspects["label"] = y_train[suspects.index]
suspects["flipped"] = flipped_train[suspects.index]
print("\nLowest Data-OOB values:")
print(suspects)

# Shapley and Banzhaf values on a small subset: every value is a refit
small = slice(0, 60)
for valuation in (
    ShapleyValuation(max_fits=3000, random_state=0),
    BanzhafValuation(max_fits=1500, random_state=0),
):
    values = valuation.fit(GaussianNB(), X_train[small], y_train[small]).value(
        X_val, y_val
    )
    auc = mislabel_detection_auc(-values, flipped_train[small])
    print(
        f"\n{type(valuation).__name__} of 60 rows for GaussianNB: {valuation.n_fits_} "
        f"refits, converged={valuation.converged_}, ROC AUC {auc:.3f}"
    )

curve = point_removal_curve(
    oob_values, forest, X_train, y_train, X_val, y_val, fractions=[0.05, 0.1, 0.2]
)
print("\nHeld-out accuracy after removing rows by Data-OOB value:")
print(curve.pivot(index="fraction", columns="order", values="score").round(3))
