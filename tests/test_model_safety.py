"""The user's model is never touched, and one fitted estimator serves many threads.

Every estimator works on a private copy of the module made at ``fit``: after
``fit`` returns, nothing the estimator does, in any thread, reaches the user's
parameters (the same objects, values, dtypes, ``requires_grad``, ``.grad``),
modes or hooks.
"""

from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
import torch
from catalogue import (
    CATALOGUE,
    assert_same_outputs,
    checkpoints,
    frames,
    trained_user_module,
)
from user_model import assert_unchanged, fingerprint

import dataval

N_THREADS = 4
CALLS_PER_THREAD = 1


# LiSSA runs 5 steps of its series in the catalogue: fast, and warned as short
@pytest.mark.filterwarnings("ignore:depth=5 is short")
def test_threads_scoring_one_estimator_agree_and_leave_the_model(entry):
    X, y, X_test, y_test = frames()
    X_test, y_test = X_test[:6], y_test[:6]
    module, states = trained_user_module(), checkpoints()
    before = fingerprint(module)
    estimator = entry.make(states).fit(module, X, y)
    assert_unchanged(before, module)
    # from a twin, so that the threads are the first to score (lazy caches)
    expected = _scored(entry.make(states).fit(module, X, y), X_test, y_test)

    def work(_):
        return [_scored(estimator, X_test, y_test) for _ in range(CALLS_PER_THREAD)]

    with ThreadPoolExecutor(N_THREADS) as pool:
        results = [r for rs in pool.map(work, range(N_THREADS)) for r in rs]
    for got in results:
        assert_same_outputs(got, expected, rtol=1e-5, atol=1e-8)
    assert_unchanged(before, module)


def _scored(estimator, X_test, y_test):
    return {
        "score": estimator.score(X_test, y_test),
        "top_k": estimator.top_k(X_test, y_test, k=3),
        "value": estimator.value(X_test, y_test),
    }


def test_two_estimators_on_one_model_in_two_threads():
    X, y, X_test, y_test = frames()
    X_test, y_test = X_test[:6], y_test[:6]
    module = trained_user_module()
    before = fingerprint(module)
    entries = [e for e in CATALOGUE if e.id in ("EKFACInfluence", "CGInfluence")]

    def fit_and_score(entry):
        return entry.make().fit(module, X, y).score(X_test, y_test)

    serial = [fit_and_score(entry) for entry in entries]
    with ThreadPoolExecutor(2) as pool:
        for _ in range(3):
            for got, expected in zip(pool.map(fit_and_score, entries), serial):
                pd.testing.assert_frame_equal(got, expected, rtol=1e-5, atol=1e-8)
    assert_unchanged(before, module)


def test_training_the_model_after_fit_does_not_change_the_estimator():
    X, y, X_test, y_test = frames()
    module = trained_user_module()
    estimator = dataval.ExactInfluence(damping=0.1, curvature="ggn").fit(module, X, y)
    expected = estimator.score(X_test, y_test)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(1.0)
    pd.testing.assert_frame_equal(estimator.score(X_test, y_test), expected)


def test_module_with_a_backward_hook_is_refused():
    X, y, _, _ = frames()
    module = trained_user_module()
    module[0].register_full_backward_hook(lambda m, gi, go: None)
    before = fingerprint(module)
    with pytest.raises(ValueError, match="backward hook on submodule '0'.*remove"):
        dataval.ExactInfluence().fit(module, X, y)
    assert_unchanged(before, module)


def test_module_returning_a_tuple_is_refused():
    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 3)

        def forward(self, x):
            return self.linear(x), x

    X, y, _, _ = frames()
    with pytest.raises(TypeError, match="returns a tuple.*Wrap the model"):
        dataval.ExactInfluence().fit(TwoHeads(), X, y)


def test_module_without_trainable_parameters_is_refused():
    X, y, _, _ = frames()
    module = trained_user_module().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters.*requires_grad"):
        dataval.ExactInfluence().fit(module, X, y)


def test_tied_weights_are_refused_by_kronecker_estimators():
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(4, 4)
            self.b = torch.nn.Linear(4, 4)
            self.b.weight = self.a.weight
            self.head = torch.nn.Linear(4, 3)

        def forward(self, x):
            return self.head(torch.tanh(self.b(torch.tanh(self.a(x)))))

    X, y, X_test, y_test = frames()
    module = Tied()
    with pytest.raises(ValueError, match="ties the weight of layer 'a'.*CGInfluence"):
        dataval.EKFACInfluence().fit(module, X, y)
    # the dense estimators handle the shared weight
    exact = dataval.ExactInfluence(damping=0.1, curvature="ggn").fit(module, X, y)
    assert exact.score(X_test, y_test).notna().all().all()


def test_torch_thread_count_survives_concurrent_calls():
    # the Kronecker eigendecompositions run on one thread: the main thread
    # lowers torch's (process-wide) count and restores it; other threads
    # leave it alone, so concurrent calls cannot leave it at 1
    from concurrent.futures import ThreadPoolExecutor

    from dataval import EKFACInfluence

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)
    )
    X, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fitted = EKFACInfluence(damping=0.1, query_rank=2).fit(net, X, y)
        with ThreadPoolExecutor(4) as pool:
            jobs = [
                pool.submit(
                    lambda: (
                        EKFACInfluence(damping=0.1, query_rank=2)
                        .fit(net, X, y)
                        .score(X[:5], y[:5])
                    )
                )
                for _ in range(4)
            ]
            fitted.score(X[:5], y[:5])
            for job in jobs:
                job.result()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
