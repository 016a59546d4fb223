"""Find mislabeled training rows and fit models without them.

:func:`find_label_issues` ranks every row in one call and estimates how many
labels are wrong; :func:`label_report` summarizes the result.
:class:`MislabelFilter` scores each row (higher = more suspicious) and drops
the worst, as an imbalanced-learn resampler; :class:`FilteredEstimator` wraps
any scikit-learn model so that it is fitted on the rows the filter keeps;
:func:`suspects` and :func:`plot_suspects` show the flagged rows in a notebook.
"""

from ._filters._audit import LabelReport, find_label_issues, label_report
from ._filters._filtered import FilteredEstimator
from ._filters._mislabel import MislabelFilter
from ._filters._report import plot_suspects, suspects

__all__ = [
    "FilteredEstimator",
    "LabelReport",
    "MislabelFilter",
    "find_label_issues",
    "label_report",
    "plot_suspects",
    "suspects",
]
