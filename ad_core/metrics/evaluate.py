"""One call from scores, labels and pixel metrics to the results a run writes (DESIGN §4 Scorer)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ad_core.metrics.curves import as_labels, as_scores, aupr, auroc, f1_max, to_numpy
from ad_core.metrics.maps import MapMetrics
from ad_core.metrics.thresholds import (
    confusion,
    f1_threshold_percentile,
    f1_threshold_uniform,
    mean_ksigma_threshold,
    normal_fpr_threshold,
    percentile_threshold,
    youden_threshold,
)

if TYPE_CHECKING:
    from ad_core.types import Batch, Prediction

ORACLE_METHODS = ("f1_percentile", "f1_uniform", "roc_youden", "percentile_95")  # read off the test labels
THRESHOLD_METHODS = ("normal_fpr", "mean_ksigma") + ORACLE_METHODS
DEFAULT_TARGET_FPR = 0.01
NAN = float("nan")
ORACLE = "test labels (oracle: for reference, not a deployable setting)"
ON_NORMALS = "held-out normal images"


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


def _pixel(maps_metrics: dict | None) -> dict[str, Any] | None:
    """`PixelMetrics.compute()` output renamed for the report; None when there were no masks."""
    if maps_metrics is None:
        return None
    pixel: dict[str, Any] = {
        "auroc": float(maps_metrics.get("pixel_auroc", maps_metrics.get("auroc", NAN))),
        "aupro": float(maps_metrics.get("pixel_aupro", maps_metrics.get("aupro", NAN))),
    }
    if all(np.isnan(v) for v in pixel.values()):
        return None
    for key in ("aupimo", "per_defect_pixel_auroc"):
        if key in maps_metrics:
            pixel[key] = maps_metrics[key]
    return pixel


def _choose(thresholds: dict[str, dict], oracle: dict[str, dict], method: str) -> dict[str, Any]:
    """The requested threshold, or the documented fallback when the data cannot support it."""
    for pool in (thresholds, oracle):
        if method in pool:
            return {"method": method, "value": pool[method]["value"], "selected_on": pool[method]["selected_on"]}
    for fallback in ("normal_fpr", "mean_ksigma"):
        if fallback in thresholds:
            return {"method": fallback, "value": thresholds[fallback]["value"],
                    "selected_on": thresholds[fallback]["selected_on"], "fallback_from": method}
    if "percentile_95" in oracle:
        return {"method": "percentile_95", "value": oracle["percentile_95"]["value"],
                "selected_on": oracle["percentile_95"]["selected_on"], "fallback_from": method}
    raise ValueError(
        f"cannot set a threshold by {method!r}: no held-out normal scores, no train_scores and no normal test image"
    )


def per_defect_recall(scores: np.ndarray, labels: np.ndarray, defect_types: list[str],
                      threshold: float) -> dict[str, dict[str, Any]]:
    """Per defect type of the anomalous images: how many, and the share flagged at `score >= threshold`."""
    out: dict[str, dict[str, Any]] = {}
    for kind in sorted({t for t, y in zip(defect_types, labels) if y == 1}):
        chosen = np.array([t == kind and y == 1 for t, y in zip(defect_types, labels)])
        out[kind] = {"images": int(chosen.sum()), "recall": float(np.mean(scores[chosen] >= threshold))}
    return out


def evaluate(
    scores: Any,
    labels: Any,
    maps_metrics: dict | None = None,
    train_scores: Any = None,
    threshold_method: str = "normal_fpr",
    k_sigma: float = 3.0,
    fixed_thresholds: dict[str, float] | None = None,
    normal_scores: Any = None,
    target_fpr: float = DEFAULT_TARGET_FPR,
    defect_types: list[str] | None = None,
    normal_source: str = ON_NORMALS,
) -> dict[str, Any]:
    """Image metrics, the deployable thresholds, the oracle ones, the chosen one and its confusion matrix.

    Deployable thresholds need no test label: `normal_fpr` (the target false-positive rate on
    `normal_scores`, scores of held-out normal images, described by `normal_source`), `mean_ksigma`
    (on `train_scores`) and the model's own `fixed_thresholds` (e.g. U-Flow's a-contrario `nfa`).
    `oracle_thresholds` are read off the test labels (F1 on percentiles and on a uniform grid, Youden's J,
    the 95th percentile of normal test scores): reported with their confusion matrices, chosen only when
    `threshold_method` names one. When the chosen method cannot be set (a one-class test set for an
    oracle, no normal scores for `normal_fpr`), the fallback is `normal_fpr`, `mean_ksigma`, then
    `percentile_95`, and `threshold.fallback_from` records what was asked for.
    """
    check_threshold_method(threshold_method, train_scores, fixed_thresholds)
    s = as_scores(scores)
    y = as_labels(labels, s.shape[0])
    normal = s[y == 0]
    n_anomalous = int(y.sum())
    both_classes = 0 < n_anomalous < s.shape[0]

    thresholds: dict[str, dict] = {}
    if normal_scores is not None:
        thresholds["normal_fpr"] = {**normal_fpr_threshold(normal_scores, target_fpr), "selected_on": normal_source}
    if train_scores is not None:
        thresholds["mean_ksigma"] = {**mean_ksigma_threshold(train_scores, k_sigma), "selected_on": normal_source}
    for name, value in (fixed_thresholds or {}).items():
        thresholds[name] = {"value": float(value), "fixed": True, "selected_on": "the model itself (no data)"}

    oracle: dict[str, dict] = {}
    if both_classes:
        image = {"auroc": auroc(s, y), "aupr": aupr(s, y), "f1_max": f1_max(s, y)[0]}
        oracle["f1_percentile"] = f1_threshold_percentile(s, y)
        oracle["f1_uniform"] = f1_threshold_uniform(s, y)
        oracle["roc_youden"] = youden_threshold(s, y)
    else:
        image = {"auroc": NAN, "aupr": NAN, "f1_max": NAN}
    if normal.size:
        oracle["percentile_95"] = percentile_threshold(normal, 95)
    for entry in oracle.values():
        entry["selected_on"] = ORACLE
        entry["confusion"] = confusion(s, y, entry["value"])

    chosen = _choose(thresholds, oracle, threshold_method)
    results = {
        "image": image,
        "pixel": _pixel(maps_metrics),
        "thresholds": thresholds,
        "oracle_thresholds": oracle,
        "threshold": chosen,
        "confusion": confusion(s, y, chosen["value"]),
        "score_range": {"min": float(s.min()), "max": float(s.max())},
        "counts": {"normal": int(normal.size), "anomalous": n_anomalous},
    }
    if maps_metrics is not None and "anomalous_without_mask" in maps_metrics:
        results["counts"]["anomalous_without_mask"] = int(maps_metrics["anomalous_without_mask"])
    if defect_types is not None:
        results["per_defect"] = per_defect_recall(s, y, list(defect_types), chosen["value"])
    return results


class DefaultScorer:
    """The core's Scorer: image and map metrics, thresholds and a confusion matrix from model outputs.

    `normal_scores` are scores of held-out normal images, for the default `normal_fpr` threshold.
    """

    def __init__(
        self,
        train_scores: Any = None,
        threshold_method: str = "normal_fpr",
        k_sigma: float = 3.0,
        fpr_limit: float = 0.3,
        fixed_thresholds: dict[str, float] | None = None,
        normal_scores: Any = None,
        target_fpr: float = DEFAULT_TARGET_FPR,
    ) -> None:
        check_threshold_method(threshold_method, train_scores, fixed_thresholds)
        self.train_scores = train_scores
        self.fixed_thresholds = fixed_thresholds
        self.threshold_method = threshold_method
        self.k_sigma = float(k_sigma)
        self.fpr_limit = float(fpr_limit)
        self.normal_scores = normal_scores
        self.target_fpr = float(target_fpr)

    def __call__(self, predictions: list[Prediction], targets: list[Batch]) -> dict[str, Any]:
        """Concatenate scores and labels, stream maps and known masks into MapMetrics, and `evaluate`."""
        if len(predictions) != len(targets):
            raise ValueError(f"{len(predictions)} predictions for {len(targets)} target batches")
        if not predictions:
            raise ValueError("no predictions to score")
        maps = MapMetrics(self.fpr_limit)
        scores, labels, types = [], [], []
        for prediction, target in zip(predictions, targets):
            score = to_numpy(prediction.score).reshape(-1)
            label = to_numpy(target.label).reshape(-1)
            if score.shape != label.shape:
                raise ValueError(
                    f"a prediction has {score.shape[0]} scores for a batch of {label.shape[0]} labels"
                )
            scores.append(score)
            labels.append(label)
            types.extend(target.defect_type or ["unknown"] * label.shape[0])
            if prediction.anomaly_map is not None and target.mask is not None:
                maps.update(prediction.anomaly_map, target.mask, label, target.mask_known, target.defect_type or None)
        return evaluate(
            np.concatenate(scores),
            np.concatenate(labels),
            maps.compute() if maps.pixel.images else None,
            train_scores=self.train_scores,
            threshold_method=self.threshold_method,
            k_sigma=self.k_sigma,
            fixed_thresholds=self.fixed_thresholds,
            normal_scores=self.normal_scores,
            target_fpr=self.target_fpr,
            defect_types=types,
        )
