"""dataval: which training examples helped or hurt your model.

Influence functions and data valuation for scikit-learn, skorch and torch
models, with a scikit-learn API.
"""

from . import analysis, filters, metrics, model_selection, text
from ._config import config_context, get_config, set_config
from ._estimators._arnoldi import ArnoldiInfluence
from ._estimators._cg import CGInfluence
from ._estimators._ekfac import EKFACInfluence
from ._estimators._exact import ExactInfluence
from ._estimators._kfac import KFACInfluence
from ._estimators._lissa import LiSSAInfluence
from ._estimators._logra import LoGraInfluence
from ._estimators._source import SourceInfluence
from ._estimators._tracin import TracIn
from ._estimators._trak import TRAKInfluence
from ._filters._filtered import FilteredEstimator
from ._filters._mislabel import MislabelFilter
from ._persistence import load, save
from ._valuation._knn import KNNShapley
from ._valuation._montecarlo import BanzhafValuation, ShapleyValuation
from ._valuation._oob import DataOOB

__version__ = "0.1.0.dev0"

__all__ = [
    "ArnoldiInfluence",
    "BanzhafValuation",
    "CGInfluence",
    "DataOOB",
    "EKFACInfluence",
    "ExactInfluence",
    "FilteredEstimator",
    "KFACInfluence",
    "KNNShapley",
    "LoGraInfluence",
    "LiSSAInfluence",
    "MislabelFilter",
    "ShapleyValuation",
    "SourceInfluence",
    "TRAKInfluence",
    "TracIn",
    "analysis",
    "config_context",
    "filters",
    "get_config",
    "load",
    "metrics",
    "model_selection",
    "save",
    "set_config",
    "text",
]
