"""Choose an influence estimator for your data and model, by cross-validation."""

from ._evaluation._compare import compare_estimators

__all__ = ["compare_estimators"]
