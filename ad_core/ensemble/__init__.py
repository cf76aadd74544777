"""Ensembles of trained detectors: pick the top models, normalise each on normal images, fuse, evaluate, save."""

from ad_core.ensemble.build import EnsembleResult, best_rule, build_ensemble, build_ensembles
from ad_core.ensemble.cells import METRICS, Cell, find_cells, select_top
from ad_core.ensemble.fusion import FUSION_RULES, combine, fuse
from ad_core.ensemble.model import EnsembleModel
from ad_core.ensemble.normalization import NormalStats
from ad_core.ensemble.report import ensemble_table
from ad_core.ensemble.storage import EnsembleError, is_ensemble, load_ensemble

__all__ = [
    "FUSION_RULES",
    "METRICS",
    "Cell",
    "EnsembleError",
    "EnsembleModel",
    "EnsembleResult",
    "NormalStats",
    "best_rule",
    "build_ensemble",
    "build_ensembles",
    "combine",
    "ensemble_table",
    "find_cells",
    "fuse",
    "is_ensemble",
    "load_ensemble",
    "select_top",
]
