"""The damping ``lambda`` of ``(H + lambda I)^{-1}``, and its one ``"auto"`` rule.

Every estimator with a ``damping`` parameter resolves it here into
``damping_``, a float: the ``lambda`` of the influence equation. ``"auto"`` is
``AUTO_DAMPING_FRACTION`` times the mean eigenvalue ``trace(C) / p`` of the
curvature ``C`` the estimator uses (its Hessian, Gauss-Newton or
Kronecker-factored matrix, the model's L2 term included), however the
estimator obtains that trace: exactly from a dense matrix, by a Hutchinson
estimate from products, from Kronecker eigenvalues, or from a projection.
"""

from numbers import Real

from sklearn.utils._param_validation import Interval, StrOptions

#: ``damping="auto"`` is this fraction of the mean eigenvalue ``trace(C) / p``
AUTO_DAMPING_FRACTION = 0.1

#: the ``_parameter_constraints`` entry of ``damping``
DAMPING_CONSTRAINT = [Interval(Real, 0, None, closed="left"), StrOptions({"auto"})]


def resolve_damping(damping, mean_eigenvalue, what="trace(C) / p", cure=""):
    """``damping_``: ``damping`` as a float, or the ``"auto"`` rule.

    Parameters
    ----------
    damping : "auto" or float
        The estimator's parameter.
    mean_eigenvalue : callable
        Returns ``trace(C) / p``; called only for ``"auto"`` (it may cost
        passes over the data).
    what : str
        How the mean eigenvalue was obtained, for the error.
    cure : str
        A remedy specific to the estimator, appended to the error.

    Returns
    -------
    damping_ : float
    """
    if damping != "auto":
        return float(damping)
    mean = float(mean_eigenvalue())
    if not mean > 0:
        raise ValueError(
            f"damping='auto' needs a positive mean curvature eigenvalue, but "
            f"{what} is {mean:.3g}. Pass a positive number as damping{cure}."
        )
    return AUTO_DAMPING_FRACTION * mean
