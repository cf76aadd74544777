"""One call from scores, labels and pixel metrics to the results a run writes (DESIGN §4 Scorer)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ad_core.metrics.curves import as_labels, as_scores, aupr, auroc, f1_max, to_numpy
from ad_core.metrics.pixel import PixelMetrics
from ad_core.metrics.thresholds import (
    confusion,
    f1_threshold_percentile,
    f1_threshold_uniform,
    mean_ksigma_threshold,
    percentile_threshold,
    youden_threshold,
)

if TYPE_CHECKING:
    from ad_core.types import Batch, Prediction

THRESHOLD_METHODS = ("f1_percentile", "f1_uniform", "roc_youden", "percentile_95", "mean_ksigma")
NAN = float("nan")


def check_threshold_method(threshold_method: str, train_scores: Any = None,
                           fixed_thresholds: dict[str, float] | None = None) -> None:
    """Fail before any work when the method is unknown, or needs training scores that are missing.

    `fixed_thresholds` are the model's own thresholds (see `evaluate`); their names are valid methods too.
    """
    valid = THRESHOLD_METHODS + tuple(fixed_thresholds or ())
    if threshold_method not in valid:
        raise ValueError(f"unknown threshold_method {threshold_method!r}; valid ones: {', '.join(valid)}")
    if threshold_method == "mean_ksigma" and train_scores is None:
        raise ValueError(
            "threshold_method 'mean_ksigma' needs train_scores (scores of normal training images)"
        )


def _pixel(maps_metrics: dict | None) -> dict[str, float] | None:
    """`PixelMetrics.compute()` output renamed for the report; None when there were no masks."""
    if maps_metrics is None:
        return None
    pixel = {
        "auroc": float(maps_metrics.get("pixel_auroc", maps_metrics.get("auroc", NAN))),
        "aupro": float(maps_metrics.get("pixel_aupro", maps_metrics.get("aupro", NAN))),
    }
    return None if all(np.isnan(v) for v in pixel.values()) else pixel


def _choose(thresholds: dict[str, dict], method: str) -> dict[str, Any]:
    """The requested threshold, or the documented fallback when the test set cannot support it."""
    if method in thresholds:
        return {"method": method, "value": thresholds[method]["value"]}
    for fallback in ("mean_ksigma", "percentile_95"):
        if fallback in thresholds:
            return {"method": fallback, "value": thresholds[fallback]["value"], "fallback_from": method}
    raise ValueError(
        f"cannot set a threshold by {method!r}: the test set has no normal images and no train_scores were given"
    )


def evaluate(
    scores: Any,
    labels: Any,
    maps_metrics: dict | None = None,
    train_scores: Any = None,
    threshold_method: str = "f1_percentile",
    k_sigma: float = 3.0,
    fixed_thresholds: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Image metrics, every threshold, the chosen one and its confusion matrix, as JSON-ready numbers.

    A test set with one class has no image metrics (NaN) and no label-based thresholds; the chosen
    method then falls back to mean + k sigma (with train scores) or the 95th normal percentile, and
    `threshold.fallback_from` records what was asked for.

    `fixed_thresholds` are thresholds a model sets by itself, with no data (e.g. U-Flow's a-contrario
    `nfa`, 0 on its -log NFA score): they join the others under their own names, marked `fixed`.
    """
    check_threshold_method(threshold_method, train_scores, fixed_thresholds)
    s = as_scores(scores)
    y = as_labels(labels, s.shape[0])
    normal = s[y == 0]
    n_anomalous = int(y.sum())
    both_classes = 0 < n_anomalous < s.shape[0]

    thresholds: dict[str, dict] = {}
    if both_classes:
        image = {"auroc": auroc(s, y), "aupr": aupr(s, y), "f1_max": f1_max(s, y)[0]}
        thresholds["f1_percentile"] = f1_threshold_percentile(s, y)
        thresholds["f1_uniform"] = f1_threshold_uniform(s, y)
        thresholds["roc_youden"] = youden_threshold(s, y)
    else:
        image = {"auroc": NAN, "aupr": NAN, "f1_max": NAN}
    if normal.size:
        thresholds["percentile_95"] = percentile_threshold(normal, 95)
    if train_scores is not None:
        thresholds["mean_ksigma"] = mean_ksigma_threshold(train_scores, k_sigma)
    for name, value in (fixed_thresholds or {}).items():
        thresholds[name] = {"value": float(value), "fixed": True}

    chosen = _choose(thresholds, threshold_method)
    return {
        "image": image,
        "pixel": _pixel(maps_metrics),
        "thresholds": thresholds,
        "threshold": chosen,
        "confusion": confusion(s, y, chosen["value"]),
        "score_range": {"min": float(s.min()), "max": float(s.max())},
        "counts": {"normal": int(normal.size), "anomalous": n_anomalous},
    }


class DefaultScorer:
    """The core's Scorer: image and pixel metrics, thresholds and a confusion matrix from model outputs."""

    def __init__(
        self,
        train_scores: Any = None,
        threshold_method: str = "f1_percentile",
        k_sigma: float = 3.0,
        fpr_limit: float = 0.3,
        fixed_thresholds: dict[str, float] | None = None,
    ) -> None:
        check_threshold_method(threshold_method, train_scores, fixed_thresholds)
        self.train_scores = train_scores
        self.fixed_thresholds = fixed_thresholds
        self.threshold_method = threshold_method
        self.k_sigma = float(k_sigma)
        self.fpr_limit = float(fpr_limit)

    def __call__(self, predictions: list[Prediction], targets: list[Batch]) -> dict[str, Any]:
        """Concatenate scores and labels, stream maps and masks into PixelMetrics, and `evaluate`."""
        if len(predictions) != len(targets):
            raise ValueError(f"{len(predictions)} predictions for {len(targets)} target batches")
        if not predictions:
            raise ValueError("no predictions to score")
        pixel = PixelMetrics()
        scores, labels = [], []
        for prediction, target in zip(predictions, targets):
            score = to_numpy(prediction.score).reshape(-1)
            label = to_numpy(target.label).reshape(-1)
            if score.shape != label.shape:
                raise ValueError(
                    f"a prediction has {score.shape[0]} scores for a batch of {label.shape[0]} labels"
                )
            scores.append(score)
            labels.append(label)
            if prediction.anomaly_map is not None and target.mask is not None:
                pixel.update(prediction.anomaly_map, target.mask)
        return evaluate(
            np.concatenate(scores),
            np.concatenate(labels),
            pixel.compute(self.fpr_limit) if pixel.has_masks else None,
            train_scores=self.train_scores,
            threshold_method=self.threshold_method,
            k_sigma=self.k_sigma,
            fixed_thresholds=self.fixed_thresholds,
        )
