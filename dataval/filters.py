"""Find mislabeled training rows and fit models without them.

:class:`MislabelFilter` scores each row (higher = more suspicious) and drops
the worst, as an imbalanced-learn resampler; :class:`FilteredEstimator` wraps
any scikit-learn model so that it is fitted on the rows the filter keeps;
:func:`suspects` and :func:`plot_suspects` show the flagged rows in a notebook.
"""

from ._filters._filtered import FilteredEstimator
from ._filters._mislabel import MislabelFilter
from ._filters._report import plot_suspects, suspects

__all__ = ["FilteredEstimator", "MislabelFilter", "plot_suspects", "suspects"]
