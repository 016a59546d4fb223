"""Choose an influence estimator for your data and model, by cross-validation."""

from ._evaluation._compare import compare_estimators
from ._evaluation._plots import plot_comparison

__all__ = ["compare_estimators", "plot_comparison"]
