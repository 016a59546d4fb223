"""verbose: one progress bar per phase of the work, not one per loop."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

from dataval import CGInfluence, ExactInfluence, _progress
from dataval._filters import _mislabel
from dataval.datasets import load_mislabeled_digits
from dataval.filters import FilteredEstimator, MislabelFilter, find_label_issues


@pytest.fixture
def bars(monkeypatch):
    """Descriptions of the bars opened, with their final counts and totals."""
    opened = []

    class Recorder(_progress.tqdm):
        def __init__(self, *args, **kwargs):
            shown = not kwargs.get("disable", False)
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.record = {"desc": kwargs.get("desc"), "n": 0}
            if shown:
                opened.append(self.record)

        def update(self, n=1):
            self.record["n"] += n

        def close(self):
            self.record["total"] = self.total
            super().close()

    monkeypatch.setattr(_progress, "tqdm", Recorder)
    monkeypatch.setattr(_mislabel, "tqdm", Recorder)
    return opened


def _data(n=200):
    X, y, _ = load_mislabeled_digits(noise=0.1)
    return X[:n], y[:n]


@pytest.mark.filterwarnings("ignore::dataval.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("estimator", [ExactInfluence, CGInfluence], ids=repr)
def test_one_bar_per_phase(estimator, bars):
    X, y = _data()
    model = MLPClassifier((8,), max_iter=300, random_state=0).fit(X, y)
    params = {"max_iter": 5, "damping": 0.1} if estimator is CGInfluence else {}
    fitted = estimator(verbose=1, batch_size=32, **params).fit(model, X, y)
    fitted.top_k(X[:40], y[:40], k=3)
    # with a fixed damping, CG's fit makes one pass: the rows' loss Hessians
    # in their outputs, kept for its Gauss-Newton products
    assert [bar["desc"] for bar in bars] == ["curvature", "scoring"]
    assert all(bar["n"] == bar["total"] > 1 for bar in bars)


def test_silent_by_default(bars):
    X, y = _data()
    model = LogisticRegression(max_iter=500).fit(X, y)
    ExactInfluence().fit(model, X, y).self_influence()
    MislabelFilter(estimator=model, method="loss", frac=0.1).fit(X, y)
    assert bars == []


def test_filter_shows_one_bar_over_its_fits(bars):
    X, y = _data()
    issues = find_label_issues(LogisticRegression(max_iter=500), X, y, verbose=1)
    assert [bar["desc"] for bar in bars] == ["label audit"]
    assert bars[0]["n"] == bars[0]["total"] == 6
    assert np.isfinite(issues["score"]).all()


def test_filtered_estimator_passes_verbose_to_its_filter(bars):
    X, y = _data()
    model = FilteredEstimator(
        LogisticRegression(max_iter=500),
        filter=MislabelFilter(method="cross-fit", cv=3),
        verbose=1,
    ).fit(X, y)
    assert model.filter_.verbose == 1
    assert [bar["desc"] for bar in bars] == ["label audit"]
    assert bars[0]["n"] == 3
