import numpy as np
import pytest
import torch
from iterative_cases import (
    CASE_IDS,
    CASES,
    assert_close,
    build,
    exact_scores,
    fit_scores,
    mean_row_pearson,
)

from dataval import ExactInfluence, LiSSAInfluence
from dataval._estimators.krylov import base as _krylov_base
from dataval._estimators.krylov import lissa as _lissa
from dataval.exceptions import ConvergenceWarning

# a damping this large makes the series converge in ~100 steps on every case
DAMPING = 0.5


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("curvature", ["hessian", "ggn"])
def test_full_batch_series_matches_exact(case, curvature):
    lissa = LiSSAInfluence(
        damping=DAMPING,
        curvature=curvature,
        depth=160,
        hessian_batch_size=None,
        dtype="float64",
        random_state=0,
    )
    reference = exact_scores(case, damping=DAMPING, curvature=curvature)
    assert_close(fit_scores(lissa, case), reference, rtol=1e-5)
    eigenvalues = ExactInfluence(damping=DAMPING, curvature=curvature)
    top = float(eigenvalues.fit(*build(case)).eigenvalues_[-1]) + DAMPING
    assert lissa.largest_eigenvalue_ == pytest.approx(top, rel=0.05)
    assert lissa.scale_ == pytest.approx(
        _lissa.AUTO_SCALE_MARGIN * lissa.largest_eigenvalue_
    )


def test_mini_batch_series_is_reproducible_and_close():
    case = CASES[1]
    kwargs = {"damping": DAMPING, "depth": 100, "hessian_batch_size": 32}
    first = fit_scores(LiSSAInfluence(**kwargs, repeats=2, random_state=1), case)
    again = fit_scores(LiSSAInfluence(**kwargs, repeats=2, random_state=1), case)
    np.testing.assert_array_equal(first, again)
    assert mean_row_pearson(first, exact_scores(case, damping=DAMPING)) > 0.95


@pytest.mark.parametrize(
    "params, message",
    [
        ({"scale": 0.05, "damping": DAMPING}, "scale=0.05.*damping=0.5"),
        # the torch case's smallest Hessian eigenvalue is about -0.07
        ({"damping": 0.0, "curvature": "hessian"}, "negative eigenvalues.*damping=0"),
    ],
    ids=["scale-too-small", "negative-eigenvalues"],
)
def test_divergence_raises_instead_of_nan(params, message):
    lissa = LiSSAInfluence(depth=500, random_state=0, **params)
    with pytest.raises(FloatingPointError, match=message):
        fit_scores(lissa, CASES[0])


def test_auto_scale_falls_back_when_the_depth_probe_diverges(monkeypatch):
    # a margin below one half diverges along the largest eigenvalue: the fit
    # takes the safe margin instead, and the scores are the influence
    case = CASES[1]
    monkeypatch.setattr(_lissa, "AUTO_SCALE_MARGIN", 0.3)
    lissa = LiSSAInfluence(damping=DAMPING, hessian_batch_size=None, random_state=0)
    scores = fit_scores(lissa, case)
    assert lissa.scale_ == pytest.approx(
        _lissa.AUTO_SCALE_FALLBACK * lissa.largest_eigenvalue_
    )
    assert mean_row_pearson(scores, exact_scores(case, damping=DAMPING)) > 0.99
    # a scale given by the user is not second-guessed
    with pytest.raises(FloatingPointError, match="diverged"):
        fit_scores(
            LiSSAInfluence(
                damping=DAMPING, scale=0.3 * lissa.largest_eigenvalue_, random_state=0
            ),
            case,
        )


def test_damping_auto_and_value_use_the_same_map():
    case = CASES[0]
    model, X, y = build(case)
    lissa = LiSSAInfluence(damping="auto", depth=20, random_state=0)
    lissa.fit(model, X, y)
    assert lissa.damping_ > 0
    assert_close(
        lissa.value(X[:4], y[:4]), lissa.score(X[:4], y[:4]).mean(axis=0), 1e-5
    )


def test_warns_when_depth_is_too_short():
    model, X, y = build(CASES[0])
    with pytest.warns(ConvergenceWarning, match="depth=10 is short.*damping=0.5"):
        LiSSAInfluence(damping=DAMPING, depth=10, random_state=0).fit(model, X, y)


def test_auto_depth_stops_once_the_tail_average_settles():
    case = CASES[1]
    kwargs = {"damping": 2.0, "dtype": "float64", "random_state": 0}
    lissa = LiSSAInfluence(hessian_batch_size=None, tol=1e-2, **kwargs)
    scores = fit_scores(lissa, case)
    assert lissa.depth_ in _lissa.auto_depths()
    assert_close(scores, exact_scores(case, damping=2.0), rtol=1e-3)
    # the chosen depth is the one a fixed depth would use
    fixed = LiSSAInfluence(hessian_batch_size=None, depth=lissa.depth_, **kwargs)
    np.testing.assert_allclose(fit_scores(fixed, case), scores, rtol=1e-10)


def test_auto_depth_is_the_first_checked_depth_whose_tail_average_settles(
    monkeypatch,
):
    model, X, y = build(CASES[1])
    series, probes = LiSSAInfluence._series, []

    def recording(self, G, generator):
        probes.append(G)
        return series(self, G, generator)

    monkeypatch.setattr(LiSSAInfluence, "_series", recording)
    tol, damping = 0.05, CASES[1]["damping"]  # a depth of a few hundred steps
    lissa = LiSSAInfluence(damping=damping, tol=tol, dtype="float64", random_state=0)
    lissa.fit(model, X, y)
    # brute force: the probes' solve at each checked depth, by a fixed depth
    depths = _lissa.auto_depths()
    chosen = depths.index(lissa.depth_)
    averages = []
    for depth in depths[: chosen + 1]:
        lissa.depth_ = depth
        averages.append(lissa._solve(probes[0])[0])
    changes = [float((a - b).norm() / a.norm()) for a, b in zip(averages[1:], averages)]
    assert chosen >= 2
    assert all(change > tol for change in changes[:-1])
    assert changes[-1] <= tol


def test_kept_output_hessians_give_the_loss_differentiated_products():
    model, X, y = build(CASES[0])
    weights = np.linspace(0.5, 2.0, len(X))
    lissa = LiSSAInfluence(damping=DAMPING, depth=20, dtype="float64", random_state=0)
    lissa.fit(model, X, y, sample_weight=weights)
    assert lissa.curvature_ == "ggn"
    assert lissa._output_hessians.shape == (len(X), 3, 3)
    V = torch.randn(4, lissa.n_params_, dtype=torch.float64)
    rows = torch.arange(7, 40)
    kept = lissa._product(V, rows=rows)
    lissa._output_hessians = None
    np.testing.assert_allclose(kept, lissa._product(V, rows=rows), rtol=1e-10)


def test_output_hessians_above_the_cap_are_not_kept(monkeypatch):
    monkeypatch.setattr(_krylov_base, "MAX_KEPT_OUTPUT_HESSIANS", 60 * 3 * 3 - 1)
    model, X, y = build(CASES[0])
    lissa = LiSSAInfluence(damping=DAMPING, depth=20, random_state=0).fit(model, X, y)
    assert lissa._output_hessians is None


def test_auto_depth_warns_at_its_cap(monkeypatch):
    monkeypatch.setattr(_lissa, "MAX_AUTO_DEPTH", 250)
    model, X, y = build(CASES[0])
    lissa = LiSSAInfluence(damping=DAMPING, tol=1e-12, random_state=0)
    with pytest.warns(ConvergenceWarning, match="still changed.*depth 250"):
        lissa.fit(model, X, y)
    assert lissa.depth_ == 250


def test_batch_size_does_not_change_the_series():
    model, X, y = build(CASES[1])
    kwargs = {"damping": DAMPING, "depth": 30, "dtype": "float64", "random_state": 0}
    small = LiSSAInfluence(batch_size=7, **kwargs).fit(model, X, y)
    large = LiSSAInfluence(batch_size=256, **kwargs).fit(model, X, y)
    np.testing.assert_allclose(
        small.self_influence(), large.self_influence(), rtol=1e-8
    )
    np.testing.assert_allclose(
        small.score(X[:9], y[:9]), large.score(X[:9], y[:9]), rtol=1e-6, atol=1e-12
    )
