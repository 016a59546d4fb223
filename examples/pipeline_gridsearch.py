"""Tune how many suspicious rows to drop, inside an ordinary scikit-learn search.

``FilteredEstimator`` fits its model only on the rows a ``MislabelFilter``
keeps, so the fraction removed (``filter__frac``) is one more hyperparameter
for ``GridSearchCV``. The digits carry 10 % flipped training labels; the test
rows keep their true labels, so the test accuracy says whether dropping rows
helped.
"""

from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dataval.datasets import load_mislabeled_digits
from dataval.filters import FilteredEstimator, MislabelFilter, suspects

X, y_noisy, is_flipped = load_mislabeled_digits(noise=0.1, random_state=0)
y_true = load_digits().target  # the same rows, labels before flipping
X_train, X_test, y_train, _, flipped_train, _, _, y_test = train_test_split(
    X, y_noisy, is_flipped, y_true, test_size=0.3, random_state=1
)  # (random_state=0 would reuse the flips' random draws: all flips in the test set)

pipe = make_pipeline(
    StandardScaler(),
    FilteredEstimator(
        LogisticRegression(C=0.01, max_iter=1000), filter=MislabelFilter()
    ),
)
search = GridSearchCV(
    pipe, {"filteredestimator__filter__frac": ["auto", 0.0, 0.1, 0.2]}, cv=3
)
search.fit(X_train, y_train)

print("Mean cross-validated accuracy (on noisy labels) by fraction removed:")
for frac, score in zip(
    search.cv_results_["param_filteredestimator__filter__frac"],
    search.cv_results_["mean_test_score"],
):
    print(f"  filter__frac={frac:<5} {score:.3f}")
best = search.best_estimator_[-1]
print(f"Chosen: filter__frac={search.best_params_['filteredestimator__filter__frac']}")
print(
    f"It removed {len(best.removed_)} training rows, "
    f"{flipped_train[best.removed_].mean():.0%} of them truly flipped."
)

unfiltered = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=1000))
unfiltered.fit(X_train, y_train)
print(
    f"Test accuracy (true labels), unfiltered: {unfiltered.score(X_test, y_test):.3f}"
)
print(f"Test accuracy (true labels), filtered:   {search.score(X_test, y_test):.3f}")
print("\nMost suspicious training rows:")
print(suspects(best, n=5))
