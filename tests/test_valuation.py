"""Data valuation by retraining: DataOOB, KNNShapley, ShapleyValuation, BanzhafValuation.

References are computed independently here: exact Shapley and Banzhaf values
by enumerating every subset of a tiny training set, KNN-Shapley by
enumerating the subsets of the nearest-neighbour utility.
"""

import pickle
from itertools import combinations
from math import comb

import numpy as np
import pandas as pd
import pytest
from joblib import parallel_config
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.linear_model import LinearRegression, LogisticRegression, SGDClassifier
from sklearn.metrics import check_scoring
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils._param_validation import InvalidParameterError

from dataval import BanzhafValuation, DataOOB, KNNShapley, ShapleyValuation
from dataval._valuation._banzhaf import BanzhafValuation as _Banzhaf
from dataval._valuation._utility import Utility
from dataval.datasets import load_mislabeled_digits
from dataval.metrics import mislabel_detection_auc

# ----------------------------------------------------------- exact references


def _tiny(n=8, seed=0):
    """``n`` training rows and 30 validation rows of two overlapping blobs."""
    X, y = make_blobs(
        n + 30, n_features=2, centers=2, cluster_std=2.5, random_state=seed
    )
    return X[:n], y[:n], X[n:], y[n:]


def _reference_utility(model, X, y, X_val, y_val):
    """``U(S)`` for a classifier scored by accuracy, degenerate subsets as documented."""

    def utility(rows):
        rows = list(rows)
        labels = np.unique(y[rows])
        if len(labels) == 0:
            values, counts = np.unique(y, return_counts=True)
            return float(np.mean(y_val == values[np.argmax(counts)]))
        if len(labels) == 1:
            return float(np.mean(y_val == labels[0]))
        return clone(model).fit(X[rows], y[rows]).score(X_val, y_val)

    return utility


def _all_utilities(utility, n):
    return {
        frozenset(S): utility(S)
        for size in range(n + 1)
        for S in combinations(range(n), size)
    }


def _exact_shapley(U, n):
    values = np.zeros(n)
    for i in range(n):
        for S, u in U.items():
            if i not in S:
                weight = 1 / (n * comb(n - 1, len(S)))
                values[i] += weight * (U[S | {i}] - u)
    return values


def _exact_banzhaf(U, n):
    values = np.zeros(n)
    for i in range(n):
        for S, u in U.items():
            if i not in S:
                values[i] += (U[S | {i}] - u) / 2 ** (n - 1)
    return values


@pytest.fixture(scope="module")
def tiny_game():
    X, y, X_val, y_val = _tiny()
    model = GaussianNB()
    U = _all_utilities(_reference_utility(model, X, y, X_val, y_val), len(y))
    return model, X, y, X_val, y_val, U


# -------------------------------------------------------------- Shapley, Banzhaf


def test_shapley_efficiency_is_exact(tiny_game):
    model, X, y, X_val, y_val, U = tiny_game
    shapley = ShapleyValuation(
        truncation_tol=None, max_fits=70, tol=None, random_state=0
    )
    values = shapley.fit(model, X, y).value(X_val, y_val)
    assert shapley.n_samples_ == 10 and shapley.n_fits_ == 70
    full, empty = U[frozenset(range(len(y)))], U[frozenset()]
    assert values.sum() == pytest.approx(full - empty, abs=1e-12)


@pytest.mark.slow
def test_shapley_matches_exact_enumeration(tiny_game):
    model, X, y, X_val, y_val, U = tiny_game
    exact = _exact_shapley(U, len(y))
    shapley = ShapleyValuation(
        truncation_tol=None, max_fits=1400, tol=None, random_state=0
    )
    values = shapley.fit(model, X, y).value(X_val, y_val).to_numpy()
    assert values.sum() == pytest.approx(exact.sum(), abs=1e-12)
    stderr = shapley.stderr_.to_numpy()
    assert np.all(np.abs(values - exact) <= 4 * stderr + 1e-12)
    assert stderr.max() < 0.3 * np.abs(exact).max()


def test_shapley_truncation_saves_fits_and_stays_close(tiny_game):
    model, X, y, X_val, y_val, U = tiny_game
    exact = _exact_shapley(U, len(y))
    shapley = ShapleyValuation(
        truncation_tol=0.2, max_fits=700, tol=None, random_state=0
    )
    values = shapley.fit(model, X, y).value(X_val, y_val).to_numpy()
    assert shapley.n_samples_ > 700 / 7  # truncated permutations cost fewer fits
    # the truncated rows' marginals are within the tolerance of the full score
    gap = 0.2 * abs(U[frozenset(range(len(y)))] - U[frozenset()])
    assert abs(values.sum() - exact.sum()) <= gap + 1e-12
    assert np.corrcoef(values, exact)[0, 1] > 0.8


def test_banzhaf_maximum_sample_reuse_on_every_subset_is_exact(tiny_game):
    """MSR over all 2^n subsets, each once, is the exact Banzhaf value."""
    model, X, y, X_val, y_val, U = tiny_game
    n = len(y)
    masks = np.array([[i in S for i in range(n)] for S in U])
    utilities = np.array(list(U.values()))
    banzhaf = _Banzhaf().fit(model, X, y)
    stats = banzhaf._start(None)
    banzhaf._update(stats, masks, utilities)
    values, _ = banzhaf._estimates(stats)
    np.testing.assert_allclose(values, _exact_banzhaf(U, n), atol=1e-12)


@pytest.mark.slow
def test_banzhaf_matches_exact_enumeration(tiny_game):
    model, X, y, X_val, y_val, U = tiny_game
    exact = _exact_banzhaf(U, len(y))
    banzhaf = BanzhafValuation(max_fits=1000, tol=None, random_state=0)
    values = banzhaf.fit(model, X, y).value(X_val, y_val).to_numpy()
    assert banzhaf.n_fits_ == 1000
    assert np.all(np.abs(values - exact) <= 4 * banzhaf.stderr_.to_numpy())
    assert np.corrcoef(values, exact)[0, 1] > 0.9


@pytest.mark.parametrize("cls", [ShapleyValuation, BanzhafValuation])
def test_degenerate_subsets_follow_the_documented_utility(cls):
    """Empty and single-class subsets are scored as a constant model.

    LogisticRegression cannot be fitted on one class; the sampled methods
    still run and agree with the reference utility, which scores those
    subsets by hand.
    """
    X, y, X_val, y_val = _tiny(n=6, seed=1)
    model = LogisticRegression(solver="liblinear")
    utility = Utility(model, X, y, X_val, y_val, None, "raise")
    reference = _reference_utility(model, X, y, X_val, y_val)
    for rows in ([], [0], [int(np.flatnonzero(y == 1)[0])], list(range(6))):
        assert utility(np.array(rows, dtype=int)) == reference(rows)
    values = cls(max_fits=20, random_state=0).fit(model, X, y).value(X_val, y_val)
    assert np.isfinite(values).all()


def test_degenerate_regression_subsets():
    rng = np.random.RandomState(0)
    X, y = rng.normal(size=(8, 2)), rng.normal(size=8)
    X_val, y_val = rng.normal(size=(5, 2)), rng.normal(size=5)
    utility = Utility(
        LinearRegression(), X, y, X_val, y_val, "neg_mean_squared_error", 0
    )
    empty = utility(np.arange(0))
    assert empty == pytest.approx(-np.mean((y_val - y.mean()) ** 2))
    one = utility(np.array([3]))  # a single row is fitted as usual
    assert one == pytest.approx(-np.mean((y_val - y[3]) ** 2))


def _blobs_as_text(X, y, X_val, y_val):
    names = np.array(["cat", "dog"])
    return X, names[y], X_val, names[y_val]


def _noisy_line(X, y, X_val, y_val):
    return X, X[:, 0] + y, X_val, X_val[:, 0] + y_val


def _constant_targets(X, y, X_val, y_val):
    return X, X[:, 0], X_val, np.full(len(y_val), 0.5)


# (model, scoring, data): the refit shortcuts of Utility.refits() must give
# sklearn's own score of a fresh clone on every non-degenerate subset
REFIT_CASES = [
    (LogisticRegression(solver="liblinear", random_state=0), "accuracy", None),
    (GaussianNB(), None, None),  # ClassifierMixin.score: accuracy of predict
    (make_pipeline(StandardScaler(), LogisticRegression()), "accuracy", None),
    (LogisticRegression(), "accuracy", _blobs_as_text),
    (LogisticRegression(), "neg_log_loss", None),  # no shortcut: sklearn's scorer
    # refits that a reused clone would change: a fresh clone each
    (SGDClassifier(warm_start=True, max_iter=3, tol=None, random_state=0), None, None),
    (
        DecisionTreeClassifier(
            splitter="random", max_depth=2, random_state=np.random.RandomState(0)
        ),
        "accuracy",
        None,
    ),
    (LinearRegression(), None, _noisy_line),  # RegressorMixin.score: r2
    (LinearRegression(), "r2", _noisy_line),
    (LinearRegression(), "r2", _constant_targets),  # r2 of a constant y_val
]


@pytest.mark.parametrize(
    "model, scoring, data",
    REFIT_CASES,
    ids=[
        "logistic",
        "nb-score",
        "pipeline",
        "text-labels",
        "log-loss",
        "warm-start",
        "random-state-instance",
        "linear-score",
        "linear-r2",
        "r2-constant-y_val",
    ],
)
def test_refit_shortcuts_give_sklearns_scores(model, scoring, data):
    X, y, X_val, y_val = _tiny(n=12, seed=2)
    if data is not None:
        X, y, X_val, y_val = data(X, y, X_val, y_val)
    utility = Utility(clone(model), X, y, X_val, y_val, scoring, "raise")
    scorer = check_scoring(model, scoring=scoring)
    rng = np.random.RandomState(0)
    subsets = [np.sort(rng.permutation(12)[: rng.randint(4, 13)]) for _ in range(12)]
    subsets = [rows for rows in subsets if len(np.unique(y[rows])) > 1]
    with utility.refits() as evaluate:
        ours = [evaluate(rows) for rows in subsets]
    expected = [
        scorer(clone(model).fit(X[rows], y[rows]), X_val, y_val) for rows in subsets
    ]
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)


def test_model_parameters_are_checked_before_the_refits_skip_it():
    X, y, X_val, y_val = _tiny(n=8)
    with pytest.raises(InvalidParameterError, match="'C' parameter"):
        BanzhafValuation(max_fits=10).fit(LogisticRegression(C=-1.0), X, y).value(
            X_val, y_val
        )
    with pytest.raises(InvalidParameterError, match="'C' parameter"):
        pipe = make_pipeline(StandardScaler(), LogisticRegression(C=-1.0))
        BanzhafValuation(max_fits=10).fit(pipe, X, y).value(X_val, y_val)


def test_non_finite_features_still_reach_the_models_check():
    X, y, X_val, y_val = _tiny(n=8)
    X[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        BanzhafValuation(max_fits=10, random_state=0).fit(
            LogisticRegression(), X, y
        ).value(X_val, y_val)


def test_failing_subsets_raise_naming_error_score_or_get_it():
    X, y, X_val, y_val = _tiny(n=8)
    model = KNeighborsClassifier(n_neighbors=5)  # cannot predict from < 5 rows
    with pytest.raises(ValueError, match="error_score=0.0"):
        ShapleyValuation(max_fits=20, random_state=0).fit(model, X, y).value(
            X_val, y_val
        )
    shapley = ShapleyValuation(
        max_fits=70, error_score=0.0, tol=None, truncation_tol=None
    )
    values = shapley.fit(model, X, y).value(X_val, y_val)
    empty = _reference_utility(model, X, y, X_val, y_val)([])
    full = clone(model).fit(X, y).score(X_val, y_val)
    assert values.sum() == pytest.approx(full - empty, abs=1e-12)


def test_budget_and_convergence():
    X, y, X_val, y_val = _tiny(n=10)
    model = GaussianNB()
    shapley = ShapleyValuation(
        max_fits=100, tol=None, truncation_tol=None, batch_size=4
    )
    shapley.fit(model, X, y).value(X_val, y_val)
    assert 100 <= shapley.n_fits_ < 100 + 9 and not shapley.converged_
    quick = ShapleyValuation(max_fits=10_000, tol=10.0, random_state=0, batch_size=4)
    quick.fit(model, X, y).value(X_val, y_val)
    assert quick.converged_ and quick.n_samples_ == 4
    timed = BanzhafValuation(max_fits=10**6, max_time=1e-9, batch_size=32, tol=None)
    timed.fit(model, X, y).value(X_val, y_val)
    assert timed.n_fits_ == 32  # one round, then the time is up
    with pytest.raises(ValueError, match="raise the budget"):
        BanzhafValuation(max_fits=2).fit(model, X, y).value(X_val, y_val)


# ------------------------------------------------------------------- KNN-Shapley


def _knn_utility(X, y, x, label, K):
    order = np.argsort(np.linalg.norm(X - x, axis=1), kind="stable")

    def utility(S):
        members = [i for i in order if i in S][:K]
        return sum(y[i] == label for i in members) / K

    return utility


def _brute_knn_shapley(X, y, X_val, y_val, K, exclude=None):
    """(n_val, n) exact Shapley values of the KNN utility, by enumeration."""
    n = len(y)
    out = np.zeros((len(y_val), n))
    for t, (x, label) in enumerate(zip(X_val, y_val)):
        players = [i for i in range(n) if exclude is None or i != exclude[t]]
        utility = _knn_utility(X, y, x, label, K)
        U = {
            frozenset(players[j] for j in S): None
            for size in range(len(players) + 1)
            for S in combinations(range(len(players)), size)
        }
        U = {S: utility(S) for S in U}
        m = len(players)
        for i in players:
            out[t, i] = sum(
                (U[S | {i}] - u) / (m * comb(m - 1, len(S)))
                for S, u in U.items()
                if i not in S
            )
    return out


@pytest.mark.parametrize("K", [1, 3, 12])
def test_knn_shapley_matches_brute_force(K):
    rng = np.random.RandomState(K)
    X, y = rng.normal(size=(9, 2)), rng.randint(3, size=9)
    X_val, y_val = rng.normal(size=(4, 2)), rng.randint(3, size=4)
    knn = KNNShapley().fit(KNeighborsClassifier(n_neighbors=K), X, y)
    brute = _brute_knn_shapley(X, y, X_val, y_val, K)
    np.testing.assert_allclose(knn.score(X_val, y_val).to_numpy(), brute, atol=1e-6)
    np.testing.assert_allclose(
        knn.value(X_val, y_val).to_numpy(), brute.mean(0), atol=1e-12
    )


def test_knn_shapley_leave_one_out_matches_brute_force():
    rng = np.random.RandomState(0)
    X, y = rng.normal(size=(8, 2)), rng.randint(2, size=8)
    values = KNNShapley().fit(KNeighborsClassifier(n_neighbors=3), X, y).value()
    brute = _brute_knn_shapley(X, y, X, y, 3, exclude=np.arange(8))
    np.testing.assert_allclose(values.to_numpy(), brute.mean(0), atol=1e-12)


def test_knn_shapley_pipeline_and_index():
    X, y, X_val, y_val = _tiny(n=40)
    X = pd.DataFrame(
        X * [1, 100], index=[f"r{i}" for i in range(40)], columns=["a", "b"]
    )
    X_val = pd.DataFrame(X_val * [1, 100], columns=["a", "b"])
    pipe = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=3))
    values = KNNShapley().fit(pipe, X, y).value(X_val, y_val)
    scaler = StandardScaler().fit(X)
    plain = (
        KNNShapley()
        .fit(KNeighborsClassifier(n_neighbors=3), scaler.transform(X), y)
        .value(scaler.transform(X_val), y_val)
    )
    assert values.index.equals(pd.Index(X.index, name="train"))
    np.testing.assert_allclose(values.to_numpy(), plain.to_numpy(), atol=1e-12)
    assert not hasattr(pipe, "n_features_in_")


def test_knn_shapley_finds_flipped_labels():
    X, y, flipped = load_mislabeled_digits(noise=0.1, random_state=3)
    values = (
        KNNShapley().fit(KNeighborsClassifier(n_neighbors=5), X[:600], y[:600]).value()
    )
    # measured 0.998-1.0 over seeds 0-3
    assert mislabel_detection_auc(-values, flipped[:600]) > 0.95


# ------------------------------------------------------------------------ Data-OOB


def test_data_oob_finds_flipped_labels():
    X, y, flipped = load_mislabeled_digits(noise=0.1, random_state=2)
    X, y, flipped = X[:400], y[:400], flipped[:400]
    for model in (DecisionTreeClassifier(), GaussianNB()):
        values = DataOOB(n_estimators=30, random_state=0).fit(model, X, y).value()
        # measured 0.97-0.995 over seeds (GaussianNB the lower)
        assert mislabel_detection_auc(-values, flipped) > 0.9
        assert values.between(0, 1).all()


def test_data_oob_regression_finds_corrupted_targets():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 3))
    y = X @ [1.0, -2.0, 0.5] + 0.1 * rng.normal(size=200)
    corrupted = np.zeros(200, dtype=bool)
    corrupted[rng.choice(200, 20, replace=False)] = True
    y[corrupted] += rng.choice([-4.0, 4.0], 20)
    values = (
        DataOOB(n_estimators=30, random_state=0).fit(LinearRegression(), X, y).value()
    )
    assert (values <= 0).all()
    assert mislabel_detection_auc(-values, corrupted) > 0.95


def test_data_oob_counts_and_single_class_bags():
    X, y, _, _ = _tiny(n=6)
    oob = DataOOB(n_estimators=200, random_state=0).fit(
        LogisticRegression(solver="liblinear"), X, y
    )
    counts = oob.n_out_of_bag_
    # each row is out of a bag with probability (5/6)^6
    assert abs(counts.mean() / 200 - (5 / 6) ** 6) < 0.05
    with pytest.raises(ValueError, match="raise n_estimators"):
        DataOOB(n_estimators=1, random_state=0).fit(GaussianNB(), X, y)


# ------------------------------------------------------------------ the contract

ESTIMATORS = [
    (DataOOB(n_estimators=20, random_state=0), GaussianNB(), False),
    (KNNShapley(), KNeighborsClassifier(n_neighbors=3), True),
    (ShapleyValuation(max_fits=60, random_state=0), GaussianNB(), True),
    (BanzhafValuation(max_fits=60, random_state=0), GaussianNB(), True),
]
IDS = ["oob", "knn", "shapley", "banzhaf"]


def _values(estimator, model, X, y, X_val, y_val, needs_validation):
    fitted = clone(estimator).fit(model, X, y)
    return fitted.value(X_val, y_val) if needs_validation else fitted.value()


@pytest.mark.parametrize("estimator, model, needs_val", ESTIMATORS, ids=IDS)
def test_model_is_never_modified(estimator, model, needs_val):
    X, y, X_val, y_val = _tiny(n=20)
    for given in (clone(model), clone(model).fit(X[:10], y[:10])):
        before = pickle.dumps(given)
        _values(estimator, given, X, y, X_val, y_val, needs_val)
        assert pickle.dumps(given) == before


@pytest.mark.parametrize("estimator, model, needs_val", ESTIMATORS, ids=IDS)
def test_n_jobs_gives_identical_values(estimator, model, needs_val):
    X, y, X_val, y_val = _tiny(n=20)
    serial = _values(estimator, model, X, y, X_val, y_val, needs_val)
    with parallel_config(backend="threading"):
        threads = _values(
            estimator.set_params(n_jobs=2), model, X, y, X_val, y_val, needs_val
        )
    pd.testing.assert_series_equal(serial, threads)


def test_n_jobs_with_processes():
    X, y, X_val, y_val = _tiny(n=20)
    oob = DataOOB(n_estimators=20, random_state=0)
    serial = oob.fit(GaussianNB(), X, y).value()
    parallel = clone(oob).set_params(n_jobs=2).fit(GaussianNB(), X, y).value()
    pd.testing.assert_series_equal(serial, parallel)


def test_knn_chunks_do_not_change_values():
    import dataval

    X, y, X_val, y_val = _tiny(n=300)
    knn = KNNShapley().fit(KNeighborsClassifier(n_neighbors=3), X, y)
    whole = knn.value(X_val, y_val)
    with dataval.config_context(working_memory=0.05):  # chunks of ~5 rows
        with parallel_config(backend="threading"):
            chunked = knn.set_params(n_jobs=2).value(X_val, y_val)
    np.testing.assert_allclose(whole.to_numpy(), chunked.to_numpy(), atol=1e-15)


@pytest.mark.parametrize("estimator, model, needs_val", ESTIMATORS, ids=IDS)
def test_pickle_clone_and_index(estimator, model, needs_val):
    X, y, X_val, y_val = _tiny(n=20)
    X = pd.DataFrame(X, index=pd.Index(np.arange(100, 120), name="id"))
    X_val = pd.DataFrame(X_val)
    fitted = clone(estimator).fit(model, X, y)
    values = fitted.value(X_val, y_val) if needs_val else fitted.value()
    assert values.index.equals(pd.Index(np.arange(100, 120), name="train"))
    restored = pickle.loads(pickle.dumps(fitted))
    again = restored.value(X_val, y_val) if needs_val else restored.value()
    pd.testing.assert_series_equal(values, again)
    assert clone(estimator).get_params() == estimator.get_params()


@pytest.mark.parametrize("estimator, model, needs_val", ESTIMATORS, ids=IDS)
def test_verbose_runs(estimator, model, needs_val, capsys):
    X, y, X_val, y_val = _tiny(n=20)
    _values(
        clone(estimator).set_params(verbose=1), model, X, y, X_val, y_val, needs_val
    )


@pytest.mark.parametrize(
    "estimator, match",
    [
        (DataOOB(n_estimators=0), "n_estimators"),
        (DataOOB(max_samples=1.5), "max_samples"),
        (ShapleyValuation(max_fits=0), "max_fits"),
        (ShapleyValuation(tol=-1.0), "tol"),
        (ShapleyValuation(truncation_tol=2.0), "truncation_tol"),
        (BanzhafValuation(error_score="ignore"), "error_score"),
        (BanzhafValuation(n_jobs=0), "n_jobs"),
        (KNNShapley(n_jobs=1.5), "n_jobs"),
    ],
)
def test_bad_parameters_are_named(estimator, match):
    X, y, _, _ = _tiny(n=10)
    with pytest.raises(InvalidParameterError, match=match):
        estimator.fit(GaussianNB(), X, y)
    assert not hasattr(estimator, "n_train_")


def test_errors_name_the_cure():
    X, y, X_val, y_val = _tiny(n=10)
    with pytest.raises(TypeError, match="scikit-learn estimator"):
        DataOOB().fit(object(), X, y)
    with pytest.raises(TypeError, match="KNeighborsClassifier"):
        KNNShapley().fit(GaussianNB(), X, y)
    with pytest.raises(ValueError, match="weights='uniform'"):
        KNNShapley().fit(KNeighborsClassifier(weights="distance"), X, y)
    with pytest.raises(ValueError, match="value\\(\\) with no"):
        DataOOB(n_estimators=20).fit(GaussianNB(), X, y).value(X_val, y_val)
    with pytest.raises(ValueError, match="value\\(X_val, y_val\\)"):
        ShapleyValuation().fit(GaussianNB(), X, y).value(None, None)
    with pytest.raises(ValueError, match="X_val has 30 rows but y_val has 3"):
        BanzhafValuation().fit(GaussianNB(), X, y).value(X_val, y_val[:3])
    with pytest.raises(ValueError, match="at least 2 training rows"):
        ShapleyValuation().fit(GaussianNB(), X[:1], y[:1])
    with pytest.raises(ValueError, match="NaN"):
        DataOOB().fit(GaussianNB(), np.where(X > 1, np.nan, X), y)


def test_non_finite_utility_raises_floating_point_error():
    X, y, X_val, y_val = _tiny(n=8)

    def scorer(estimator, X, y):
        return np.inf

    with pytest.raises(FloatingPointError, match="rows"):
        ShapleyValuation(max_fits=14, scoring=scorer, tol=None).fit(
            GaussianNB(), X, y
        ).value(X_val, y_val)


# ---------------------------------------------- filters, removal curve, comparison


@pytest.mark.parametrize("method", ["data-oob", "knn-shapley", "instance"])
def test_mislabel_filter_uses_valuation(method):
    from dataval import MislabelFilter

    X, y, flipped = load_mislabeled_digits(noise=0.1, random_state=1, as_frame=True)
    X, y, flipped = X[:300], y[:300], flipped[:300]
    model = DecisionTreeClassifier().fit(X, y)
    before = pickle.dumps(model)
    chosen = DataOOB(n_estimators=20) if method == "instance" else method
    filt = MislabelFilter(estimator=model, method=chosen, frac=0.1, random_state=0)
    filt.fit(X, y)
    assert pickle.dumps(model) == before
    assert filt.method_ == ("data-oob" if method == "instance" else method)
    assert filt.scores_.index.equals(X.index)
    np.testing.assert_allclose(filt.scores_, -filt.valuation_.value())
    # measured 0.97-1.0
    assert mislabel_detection_auc(filt.scores_, flipped) > 0.9
    assert filt.mask_.sum() == 270


def test_point_removal_curve_refits_on_the_kept_rows():
    from dataval.metrics import point_removal_curve

    X, y, X_val, y_val = _tiny(n=40)
    values = np.arange(40.0)  # row 39 is the most valuable
    curve = point_removal_curve(
        values, GaussianNB(), X, y, X_val, y_val, fractions=[0.25]
    )
    assert curve["order"].tolist() == ["highest", "highest", "lowest", "lowest"]
    by = curve.set_index(["order", "fraction"])["score"]
    assert by["highest", 0.25] == GaussianNB().fit(X[:30], y[:30]).score(X_val, y_val)
    assert by["lowest", 0.25] == GaussianNB().fit(X[10:], y[10:]).score(X_val, y_val)
    assert (
        by["lowest", 0.0]
        == by["highest", 0.0]
        == GaussianNB().fit(X, y).score(X_val, y_val)
    )
    with pytest.raises(ValueError, match="one finite value per training row"):
        point_removal_curve(values[:5], GaussianNB(), X, y, X_val, y_val)


def test_compare_estimators_with_valuation_and_influence():
    from sklearn.datasets import load_iris

    from dataval import ExactInfluence
    from dataval.model_selection import compare_estimators

    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    results = compare_estimators(
        {
            "exact": ExactInfluence(),
            "oob": DataOOB(n_estimators=30),
            "knn": KNNShapley(),
        },
        LogisticRegression(solver="newton-cholesky"),
        X,
        y,
        scoring=["lds", "mislabel_auc", "removal"],
        cv=2,
        n_subsets=5,
        removal_fractions=[0.2],
        random_state=0,
    )
    table = results.groupby(["metric", "estimator"])["value"].mean()
    assert set(table["lds"].index) == {"exact"}  # valuations value rows, not pairs
    for metric in ("mislabel_auc", "removal_highest", "removal_lowest"):
        assert set(table[metric].index) == {"exact", "oob", "knn"}
    assert (table["mislabel_auc"] > 0.8).all()
    assert np.isfinite(results["value"]).all()
