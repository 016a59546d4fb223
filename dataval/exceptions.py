"""Warnings and errors raised by dataval."""


class NotPositiveDefiniteWarning(UserWarning):
    """The damped curvature ``H + damping * I`` is not positive definite.

    Influence is then not meaningful: the estimates may look plausible while
    being dominated by directions of negative curvature. Increase ``damping``
    or use ``curvature="ggn"`` (the Gauss-Newton matrix is positive
    semi-definite).
    """


class ConvergenceWarning(UserWarning):
    """An iterative solver stopped before reaching its tolerance."""


class ObjectiveWarning(UserWarning):
    """The fitted model is not at a minimum of the objective dataval rebuilt.

    Influence functions assume the model minimizes its training objective.
    For a scikit-learn model, ``fit`` measures the gradient of the rebuilt
    objective (mean weighted loss plus L2 term) at the fitted parameters; a
    model fitted with ``sample_weight`` not given to ``fit``, on other data,
    or by a solver that stopped early is not at its minimum.
    """
