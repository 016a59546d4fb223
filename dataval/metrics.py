"""Measure how right influence estimates are.

Ground truth by retraining, the linear datamodeling score, and how well a
ranking of training rows finds mislabeled ones.
"""

from ._evaluation._detection import detection_curve, mislabel_detection_auc

__all__ = ["detection_curve", "mislabel_detection_auc"]
