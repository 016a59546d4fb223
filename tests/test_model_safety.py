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
from test_parallel import ESTIMATORS, _estimator

N_THREADS = 4
CALLS_PER_THREAD = 2


def _module():
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)
    )
    module[2].register_forward_hook(lambda m, i, o: None)
    module[0].weight.grad = torch.ones_like(module[0].weight)
    return module.train()


def _fingerprint(module):
    """Everything about the module dataval promises to leave alone."""
    return {
        "objects": [id(p) for p in module.parameters()],
        "types": [type(p) for p in module.parameters()],
        "values": [p.detach().clone() for p in module.parameters()],
        "dtypes": [p.dtype for p in module.parameters()],
        "requires_grad": [p.requires_grad for p in module.parameters()],
        "grads": [
            None if p.grad is None else p.grad.clone() for p in module.parameters()
        ],
        "modes": [m.training for m in module.modules()],
        "hooks": [
            (dict(m._forward_hooks), dict(m._forward_pre_hooks))
            for m in module.modules()
        ],
    }


def _assert_unchanged(before, module):
    after = _fingerprint(module)
    for key in ("objects", "types", "dtypes", "requires_grad", "modes", "hooks"):
        assert before[key] == after[key], key
    for a, b in zip(before["values"], after["values"]):
        assert torch.equal(a, b)
    for a, b in zip(before["grads"], after["grads"]):
        assert (a is None and b is None) or torch.equal(a, b)


@pytest.fixture
def data(iris):
    X, y, X_test, y_test = iris
    as_float = dict(dtype=torch.float32)
    return (
        torch.tensor(X, **as_float),
        torch.tensor(y),
        torch.tensor(X_test[:6], **as_float),
        torch.tensor(y_test[:6]),
    )


def _outputs(estimator, X_test, y_test):
    return (
        estimator.score(X_test, y_test),
        estimator.top_k(X_test, y_test, k=3),
        estimator.value(X_test, y_test),
    )


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_threads_scoring_one_estimator_agree_and_leave_the_model(cls, data):
    X, y, X_test, y_test = data
    module = _module()
    before = _fingerprint(module)
    estimator = _estimator(cls).fit(module, X, y)
    _assert_unchanged(before, module)
    # from a twin, so that the threads are the first to score (lazy caches)
    expected = _outputs(_estimator(cls).fit(module, X, y), X_test, y_test)

    def work(_):
        return [_outputs(estimator, X_test, y_test) for _ in range(CALLS_PER_THREAD)]

    with ThreadPoolExecutor(N_THREADS) as pool:
        results = [r for rs in pool.map(work, range(N_THREADS)) for r in rs]
    for score, top, value in results:
        pd.testing.assert_frame_equal(score, expected[0], rtol=1e-5, atol=1e-8)
        pd.testing.assert_frame_equal(top, expected[1], rtol=1e-5, atol=1e-8)
        pd.testing.assert_series_equal(value, expected[2], rtol=1e-5, atol=1e-8)
    _assert_unchanged(before, module)


def test_two_estimators_on_one_model_in_two_threads(data):
    import dataval

    X, y, X_test, y_test = data
    module = _module()
    before = _fingerprint(module)
    classes = [dataval.EKFACInfluence, dataval.CGInfluence]
    serial = [
        _estimator(cls).fit(module, X, y).score(X_test, y_test) for cls in classes
    ]

    def fit_and_score(cls):
        return _estimator(cls).fit(module, X, y).score(X_test, y_test)

    with ThreadPoolExecutor(2) as pool:
        for _ in range(3):
            for got, expected in zip(pool.map(fit_and_score, classes), serial):
                pd.testing.assert_frame_equal(got, expected, rtol=1e-5, atol=1e-8)
    _assert_unchanged(before, module)


def test_training_the_model_after_fit_does_not_change_the_estimator(data):
    import dataval

    X, y, X_test, y_test = data
    module = _module()
    estimator = dataval.ExactInfluence(damping=0.1, curvature="ggn").fit(module, X, y)
    expected = estimator.score(X_test, y_test)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(1.0)
    pd.testing.assert_frame_equal(estimator.score(X_test, y_test), expected)


def test_failed_refit_leaves_the_estimator_unfitted(data):
    from sklearn.exceptions import NotFittedError

    import dataval

    X, y, X_test, y_test = data
    estimator = dataval.EKFACInfluence(damping=0.1).fit(_module(), X, y)
    with pytest.raises(ValueError):
        estimator.fit(_module(), X, y[:-1])
    assert not hasattr(estimator, "n_train_")
    with pytest.raises(NotFittedError):
        estimator.score(X_test, y_test)


def test_module_with_a_backward_hook_is_refused(data):
    import dataval

    X, y, _, _ = data
    module = _module()
    module[0].register_full_backward_hook(lambda m, gi, go: None)
    before = _fingerprint(module)
    with pytest.raises(ValueError, match="backward hook on submodule '0'.*remove"):
        dataval.ExactInfluence().fit(module, X, y)
    _assert_unchanged(before, module)


def test_module_returning_a_tuple_is_refused(data):
    import dataval

    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 3)

        def forward(self, x):
            return self.linear(x), x

    X, y, _, _ = data
    with pytest.raises(TypeError, match="returns a tuple.*Wrap the model"):
        dataval.ExactInfluence().fit(TwoHeads(), X, y)


def test_module_without_trainable_parameters_is_refused(data):
    import dataval

    X, y, _, _ = data
    module = _module().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters.*requires_grad"):
        dataval.ExactInfluence().fit(module, X, y)


def test_tied_weights_are_refused_by_kronecker_estimators(data):
    import dataval

    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(4, 4)
            self.b = torch.nn.Linear(4, 4)
            self.b.weight = self.a.weight
            self.head = torch.nn.Linear(4, 3)

        def forward(self, x):
            return self.head(torch.tanh(self.b(torch.tanh(self.a(x)))))

    X, y, X_test, y_test = data
    module = Tied()
    with pytest.raises(ValueError, match="ties the weight of layer 'a'.*CGInfluence"):
        dataval.EKFACInfluence().fit(module, X, y)
    # the dense estimators handle the shared weight
    exact = dataval.ExactInfluence(damping=0.1, curvature="ggn").fit(module, X, y)
    assert exact.score(X_test, y_test).notna().all().all()
