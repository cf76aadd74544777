"""Metrics and thresholds: image curves, streamed pixel metrics, threshold rules, and the default Scorer."""

from ad_core.metrics.curves import aupr, auroc, f1_max, pr_curve, roc_curve
from ad_core.metrics.aupimo import AupimoMetric
from ad_core.metrics.evaluate import ORACLE_METHODS, THRESHOLD_METHODS, DefaultScorer, evaluate
from ad_core.metrics.maps import MapMetrics
from ad_core.metrics.pixel import PixelMetrics
from ad_core.metrics.thresholds import (
    confusion,
    f1_threshold_percentile,
    f1_threshold_uniform,
    mean_ksigma_threshold,
    normal_fpr_threshold,
    percentile_threshold,
    youden_threshold,
)

__all__ = [
    "ORACLE_METHODS",
    "THRESHOLD_METHODS",
    "AupimoMetric",
    "DefaultScorer",
    "MapMetrics",
    "PixelMetrics",
    "aupr",
    "auroc",
    "confusion",
    "evaluate",
    "f1_max",
    "f1_threshold_percentile",
    "f1_threshold_uniform",
    "mean_ksigma_threshold",
    "normal_fpr_threshold",
    "percentile_threshold",
    "pr_curve",
    "roc_curve",
    "youden_threshold",
]
