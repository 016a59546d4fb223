"""Retrain a model on subsets of its training rows, the same way every time.

Ground truth for influence is a difference of test losses between models
trained on different rows. Everything else must stay equal: the same
estimator settings, the same random seed, the same fixed preprocessing, and
the test loss measured in the units the influence estimators use.
"""

import copy
from numbers import Integral

import numpy as np
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from .._adapters import adapt_model
from .._adapters._sklearn import SUPPORTED_SKLEARN
from .._functional import FunctionalModel
from .._numerics.seeding import draw_seed
from .._validation import final_step, is_fitted
from .._valuation._base import seeded_clone

# rows per forward pass when measuring test losses
_LOSS_BATCH = 4096
#: the models whose gradients dataval reads and that Retrainer refits
WITH_GRADIENTS = (
    "a skorch net, or one of "
    + ", ".join(c.__name__ for c in SUPPORTED_SKLEARN)
    + " alone or at the end of a Pipeline"
)


def take_rows(data, rows):
    """Rows ``rows`` (integer positions) of an array, pandas object or tensor."""
    if hasattr(data, "iloc"):
        return data.iloc[rows]
    if isinstance(data, torch.Tensor):
        return data[torch.as_tensor(rows, dtype=torch.long)]
    return np.asarray(data)[rows]


def _is_skorch_net(model):
    from skorch import NeuralNet

    return isinstance(model, NeuralNet)


def _reset_parameters(module):
    for submodule in module.modules():
        if hasattr(submodule, "reset_parameters"):
            submodule.reset_parameters()


class Retrainer:
    """Refit ``model`` on chosen training rows and measure per-row test losses.

    scikit-learn estimators are cloned and refitted; a ``random_state``
    parameter left at ``None`` is set to the shared seed. skorch nets are
    cloned and fitted (which initializes them) with ``torch.manual_seed(seed)``,
    so that every refit starts from the same weights and draws the same
    shuffles; a module given as an instance is re-initialized by the
    ``reset_parameters()`` of its submodules. The leading steps of a Pipeline are fitted once on all rows (or
    kept, when the Pipeline is already fitted) and then held fixed, as the
    influence estimators treat them.

    Parameters
    ----------
    model : scikit-learn estimator, Pipeline or skorch net, fitted or not
    X, y : the full training data
    loss : "auto" or callable
        Passed to the model adapter: the per-row loss of the estimators.
    warm_start : bool
        Start each refit of a LogisticRegression from the full-data solution.
    random_state : int, RandomState instance or None
        The seed shared by every refit: an int is used as is, otherwise one
        is drawn.
    """

    def __init__(
        self, model, X, y, *, loss="auto", warm_start=False, random_state=None
    ):
        self.model = model
        self.X, self.y = X, y
        self.loss = loss
        self.seed = (
            int(random_state)
            if isinstance(random_state, Integral)
            else draw_seed(random_state)
        )
        self.leading = []
        self.warm_start = warm_start
        self.final = self._check_model(model)
        self.X_fit = X
        if isinstance(model, Pipeline) and len(model.steps) > 1:
            self.leading = model.steps[:-1]
            if not is_fitted(model):
                fitted = clone(Pipeline(self.leading)).fit(X, y)
                self.leading = fitted.steps
            self.X_fit = Pipeline(self.leading).transform(X)
        self.full_ = None
        self.full_ = self.fit(np.arange(len(y)))

    def _check_model(self, model):
        if _is_skorch_net(model):
            if self.warm_start:
                raise ValueError(self._warm_start_message(model))
            return model
        final = final_step(model)
        if isinstance(final, SUPPORTED_SKLEARN):
            if self.warm_start and not isinstance(final, LogisticRegression):
                raise ValueError(self._warm_start_message(final))
            return final
        if isinstance(model, torch.nn.Module):
            raise TypeError(
                "Retraining needs a model that knows how to train itself; got a "
                f"plain torch module ({type(model).__name__}). Wrap it in a skorch "
                "NeuralNetClassifier or NeuralNetRegressor."
            )
        raise TypeError(
            f"Cannot retrain a {type(final).__name__}: the model must be "
            f"{WITH_GRADIENTS}."
        )

    @staticmethod
    def _warm_start_message(model):
        return (
            f"warm_start=True is only allowed for LogisticRegression, whose L2 "
            f"objective has one optimum that every start reaches; got "
            f"{type(model).__name__}, where starting from the full-data model would "
            "bias the result towards it. Use warm_start=False."
        )

    def fit(self, rows):
        """The model fitted on training rows ``rows``, as the estimators take it."""
        X_rows, y_rows = take_rows(self.X_fit, rows), take_rows(self.y, rows)
        if _is_skorch_net(self.final):
            net = clone(self.final)
            with torch.random.fork_rng():
                torch.manual_seed(self.seed)
                if isinstance(net.module, torch.nn.Module):
                    # skorch keeps an instantiated module's weights (those of a
                    # fitted net): draw fresh ones, as for a module class
                    _reset_parameters(net.module)
                return net.fit(X_rows, y_rows)
        if self.warm_start and self.full_ is not None:
            final = copy.deepcopy(self.full_final).set_params(warm_start=True)
        else:
            final = clone(self.final)
        if "random_state" in final.get_params() and final.random_state is None:
            final.set_params(random_state=self.seed)
        final.fit(X_rows, y_rows)
        self._check_classes(final, len(rows))
        if self.leading:
            name = self.model.steps[-1][0]
            return Pipeline([*self.leading, (name, final)])
        return final

    @property
    def full_final(self):
        return self.full_.steps[-1][1] if self.leading else self.full_

    def _check_classes(self, final, n_rows):
        if self.full_ is None or not hasattr(final, "classes_"):
            return
        missing = np.setdiff1d(self.full_final.classes_, final.classes_)
        if len(missing):
            raise ValueError(
                f"A refit on {n_rows} of {len(self.y)} training rows saw no example "
                f"of class {missing.tolist()}, so its test losses are not comparable; "
                "use more rows per refit (a larger frac) or drop classes this rare."
            )

    def losses(self, model, X_test, y_test):
        """Per-row test losses (n_test,) in float64, in the estimators' units."""
        adapted = adapt_model(model, self.loss, X_test, y_test)
        functional = FunctionalModel(adapted, torch.device("cpu"), torch.float64)
        X_t, y_t = adapted.prepare_X(X_test), adapted.prepare_y(y_test)
        return np.concatenate(
            [
                functional.losses(
                    *functional.prepare(
                        X_t[start : start + _LOSS_BATCH],
                        y_t[start : start + _LOSS_BATCH],
                    )
                ).numpy()
                for start in range(0, len(X_t), _LOSS_BATCH)
            ]
        )

    def losses_without(self, rows, X_test, y_test):
        """Test losses of the model refitted on all training rows but ``rows``."""
        keep = np.setdiff1d(np.arange(len(self.y)), rows)
        return self.losses(self.fit(keep), X_test, y_test)

    def losses_on(self, rows, X_test, y_test):
        """Test losses of the model refitted on training rows ``rows`` only."""
        return self.losses(self.fit(rows), X_test, y_test)


def has_gradients(model):
    """Whether dataval reads the gradients of ``model`` (and can retrain it).

    A skorch net, or a supported scikit-learn model alone or at the end of a
    Pipeline: the models :class:`Retrainer` refits.
    """
    if _is_skorch_net(model):
        return True
    final = final_step(model)
    return isinstance(final, SUPPORTED_SKLEARN)


def model_for_estimators(model, X, y, seed):
    """``model`` as the estimators compared on ``(X, y)`` take it.

    A model with gradients comes fitted on all rows by :class:`Retrainer`
    (the model the influence estimators explain and the ground truth
    refits). Any other scikit-learn estimator is only handed to valuation
    estimators, which fit clones of it themselves: it comes unfitted, each
    ``random_state`` left at None set to ``seed``.
    """
    if has_gradients(model):
        return Retrainer(model, X, y, random_state=seed).full_
    return seeded_clone(model, seed)
