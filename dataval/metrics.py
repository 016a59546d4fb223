"""Measure how right influence estimates are.

Ground truth by retraining (:func:`loo_influence`,
:func:`linear_datamodeling_score`) and how well a ranking of training rows
finds the mislabeled ones (:func:`detection_curve`,
:func:`mislabel_detection_auc`), and how a data valuation ranks rows
(:func:`point_removal_curve`).
"""

from ._evaluation._detection import detection_curve, mislabel_detection_auc
from ._evaluation._ground_truth import linear_datamodeling_score, loo_influence
from ._evaluation._plots import plot_detection_curve
from ._evaluation._removal import point_removal_curve

__all__ = [
    "detection_curve",
    "linear_datamodeling_score",
    "loo_influence",
    "mislabel_detection_auc",
    "plot_detection_curve",
    "point_removal_curve",
]
