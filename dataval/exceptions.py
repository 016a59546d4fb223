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
