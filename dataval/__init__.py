"""dataval: which training examples helped or hurt your model.

Influence functions and data valuation for scikit-learn, skorch and torch
models, with a scikit-learn API.
"""

from . import analysis, filters, metrics, model_selection, text
from ._config import config_context, get_config, set_config
from ._estimators.dense.exact import ExactInfluence
from ._estimators.kronecker.ekfac import EKFACInfluence
from ._estimators.kronecker.kfac import KFACInfluence
from ._estimators.kronecker.logra import LoGraInfluence
from ._estimators.krylov.arnoldi import ArnoldiInfluence
from ._estimators.krylov.cg import CGInfluence
from ._estimators.krylov.lissa import LiSSAInfluence
from ._estimators.projection.trak import TRAKInfluence
from ._estimators.trajectory.source import SourceInfluence
from ._estimators.trajectory.tracin import TracIn
from ._filters._filtered import FilteredEstimator
from ._filters._mislabel import MislabelFilter
from ._persistence import load, save
from ._valuation._banzhaf import BanzhafValuation
from ._valuation._knn import KNNShapley
from ._valuation._oob import DataOOB
from ._valuation._shapley import ShapleyValuation

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
