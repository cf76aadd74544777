"""A run's evaluation: calibrate the detector on the validation source, then score the test split once.

Every decision stored with the model (image threshold and score range, pixel threshold and map range) is
made on the validation source (`ad_core.validation`); the test split only measures. Test-label thresholds
are computed too, as labelled oracle figures, and become the saved threshold only when the user names one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ad_core.detector import Detector
from ad_core.io import write_json
from ad_core.metrics import MapMetrics, auroc, evaluate
from ad_core.metrics.evaluate import DEFAULT_TARGET_FPR, ORACLE_METHODS, THRESHOLD_METHODS
from ad_core.metrics.thresholds import normal_fpr_threshold
from ad_core.reports import plot_histogram, plot_roc, save_map_panels, write_results
from ad_core.settings import settings
from ad_core.types import Batch

MAX_MAP_PANELS = 12
MAP_PANEL_TILE = 256  # pixels on the short side of each `maps/` panel, enlarged from the model input
SCORES_NAME = "scores.json"  # per test image: path, label, raw score (for histograms and ensembles)
PIXELS_PER_IMAGE = 1 << 16  # normal-map pixels kept per validation image for the pixel threshold (evenly strided)


@dataclass
class Calibration:
    """What the validation source says: normal scores, ranges, the pixel threshold, and its own AUROC."""

    normal_scores: np.ndarray
    score_range: tuple[float, float]
    image_auroc: float
    pixel_auroc: float = float("nan")
    pixel_threshold: dict[str, Any] | None = None
    map_range: tuple[float, float] | None = None
    selected_on: str = "validation"
    info: dict[str, Any] = field(default_factory=dict)

    def apply_pixels(self, detector: Detector) -> None:
        """Store the pixel threshold and map range (before the test: map panels use them)."""
        if self.pixel_threshold is not None and self.map_range is not None:
            detector.post.calibrate_pixels(self.pixel_threshold["value"], *self.map_range)

    def apply_image(self, detector: Detector, image_threshold: float) -> None:
        """Store the chosen image threshold with the validation score range."""
        detector.post.calibrate(image_threshold, *self.score_range)

    def decisions(self, threshold: dict[str, Any]) -> dict[str, Any]:
        """Each stored decision with what it was selected on, for results.json."""
        out: dict[str, Any] = {
            "image_threshold": threshold,
            "score_range": {"min": self.score_range[0], "max": self.score_range[1], "selected_on": self.selected_on},
        }
        if self.pixel_threshold is not None and self.map_range is not None:
            out["pixel_threshold"] = self.pixel_threshold
            out["map_range"] = {"min": self.map_range[0], "max": self.map_range[1], "selected_on": self.selected_on}
        return out


def threshold_method_for(name: str, run: dict[str, Any], explicit: bool,
                         own_methods: dict[str, float] | None, notes: list[str]) -> str:
    """The image threshold rule of a run: the user's named choice, else the spec's own deployable rule
    (e.g. U-Flow's `nfa`) when this configuration has it, else `normal_fpr`.

    A test-label (oracle) rule is used only when the user names it; a spec cannot make it the default.
    """
    import warnings

    method = str(run.get("threshold_method", "normal_fpr"))
    if explicit:
        return method
    if method in ORACLE_METHODS or method not in THRESHOLD_METHODS + tuple(own_methods or ()):
        reason = ("reads the test labels" if method in ORACLE_METHODS
                  else "is not available with these options")  # U-Flow's NFA without the NFA map
        message = f"{name}: its default threshold_method {method!r} {reason}; using 'normal_fpr'"
        warnings.warn(message, stacklevel=3)
        notes.append(message)
        return "normal_fpr"
    return method


def calibrate(detector: Detector, loader: Iterable[Batch], device: torch.device, selected_on: str,
              target_fpr: float = DEFAULT_TARGET_FPR, info: dict[str, Any] | None = None) -> Calibration:
    """Score the validation source: normal scores, score and map ranges, and the pixel threshold at
    `target_fpr` of the normal validation images' pixels (up to `PIXELS_PER_IMAGE` per image)."""
    scores, labels, normal_pixels = [], [], []
    map_low, map_high = np.inf, -np.inf
    pixel = MapMetrics()
    for batch in loader:
        pred = detector.predict(batch.image.to(device))
        scores.extend(pred.score.cpu().tolist())
        labels.extend(batch.label.tolist())
        if pred.anomaly_map is None:
            continue
        maps = pred.anomaly_map.cpu()
        if batch.mask is not None:
            pixel.update(maps, batch.mask, batch.label, batch.mask_known)
        map_low, map_high = min(map_low, float(maps.min())), max(map_high, float(maps.max()))
        for amap, label in zip(maps, batch.label.tolist()):
            if label == 0:
                flat = amap.reshape(-1)
                normal_pixels.append(flat[:: max(1, flat.numel() // PIXELS_PER_IMAGE)].numpy().copy())
    s, y = np.asarray(scores, dtype=np.float32), np.asarray(labels, dtype=np.int64)
    if not (y == 0).any():
        raise ValueError("the validation source holds no normal image: thresholds need held-out normal images")
    calibration = Calibration(s[y == 0], (float(s.min()), float(s.max())),
                              float(auroc(s, y)) if 0 < y.sum() < y.size else float("nan"), selected_on=selected_on,
                              info=dict(info or {}))
    if pixel.pixel.has_masks:
        calibration.pixel_auroc = float(pixel.pixel.compute()["pixel_auroc"])
    if normal_pixels:
        pixels = np.concatenate(normal_pixels)
        calibration.pixel_threshold = {"method": "normal_fpr", **normal_fpr_threshold(pixels, target_fpr),
                                       "selected_on": f"{selected_on}; normal images' pixels"}
        calibration.map_range = (float(map_low), float(map_high))
    return calibration


def score_split(detector: Detector, loader: Iterable[Batch], device: torch.device, keep: int = 0
                ) -> tuple[np.ndarray, np.ndarray, list[str], list[str], dict[str, Any] | None, list[tuple]]:
    """Scores, labels, paths and defect types, streamed map metrics, and up to `keep` examples for map panels.

    What outlives a batch is Python numbers or copies, never views: a view keeps its whole batch alive, and small
    tensors kept between the large maps freed at every batch pin glibc's heap (see `TeacherStatistics` in ad-kd).
    """
    scores, labels, paths, types, kept = [], [], [], [], []
    maps = MapMetrics()
    has_maps = False
    for batch in tqdm(loader, desc="scoring", unit="batch", disable=not settings.progress, leave=False):
        pred = detector.predict(batch.image.to(device))
        scores.extend(pred.score.cpu().tolist())
        labels.extend(batch.label.tolist())
        paths.extend(batch.path)
        types.extend(batch.defect_type or ["unknown"] * len(batch))
        has_maps = has_maps or pred.anomaly_map is not None
        if pred.anomaly_map is not None and batch.mask is not None:
            maps.update(pred.anomaly_map.cpu(), batch.mask, batch.label, batch.mask_known, batch.defect_type or None)
        if keep and pred.anomaly_map is not None:
            for i in range(len(batch)):
                known = batch.mask is not None and (batch.mask_known is None or bool(batch.mask_known[i]))
                kept.append((batch.image[i].clone(), pred.anomaly_map[i].cpu().clone(),
                             batch.mask[i].clone() if known else None, batch.path[i], int(batch.label[i])))
            kept = _balanced(kept, keep)
    map_results = maps.compute() if has_maps and maps.pixel.images + maps.without_mask else None
    return (np.asarray(scores, dtype=np.float32), np.asarray(labels, dtype=np.int64), paths, types, map_results,
            kept)


def _balanced(kept: list, keep: int) -> list:
    """Keep up to `keep` examples, anomalous ones first, a few normal ones too."""
    anomalous = [k for k in kept if k[4] == 1][: keep - keep // 3]
    normal = [k for k in kept if k[4] == 0][: keep - len(anomalous)]
    return anomalous + normal


def _peak_rss_mb() -> float:
    import resource  # Unix only: imported here so that ad_core imports on Windows

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def evaluate_detector(detector: Detector, test_loader: Iterable[Batch], out: Path, header: dict[str, Any],
                      device: torch.device, normal_scores: np.ndarray | None = None,
                      threshold_method: str = "normal_fpr", k_sigma: float = 3.0,
                      target_fpr: float = DEFAULT_TARGET_FPR, normal_source: str = "held-out normal images",
                      fixed_thresholds: dict[str, float] | None = None, write_maps: bool = True,
                      calibration: Calibration | None = None) -> dict[str, Any]:
    """Score the test split, compute metrics and thresholds, and write results, per-image scores, plots and maps.

    With a `calibration` (the validation source scored by `calibrate`), its normal scores set `normal_fpr`
    and `mean_ksigma`, and results record the validation set and each decision's `selected_on`; otherwise
    `normal_scores` (described by `normal_source`) do. Map panels use the detector's pixel threshold and map
    range; a detector without them (a checkpoint older than pixel thresholds) shows the test maps' own range
    and its mid-point. `header` is completed in place with the test timing and memory figures.
    """
    if calibration is not None:
        normal_scores, normal_source = calibration.normal_scores, calibration.selected_on
    start = time.perf_counter()
    scores, labels, paths, types, map_results, kept = score_split(detector, test_loader, device,
                                                                  keep=MAX_MAP_PANELS if write_maps else 0)
    test_seconds = time.perf_counter() - start
    results = evaluate(scores, labels, map_results, train_scores=normal_scores, threshold_method=threshold_method,
                       k_sigma=k_sigma, fixed_thresholds=fixed_thresholds, normal_scores=normal_scores,
                       target_fpr=target_fpr, defect_types=types, normal_source=normal_source)
    header.update({
        "test_images": len(scores),
        "test_seconds": round(test_seconds, 3),
        "test_images_per_second": round(len(scores) / max(test_seconds, 1e-9), 3),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    })
    if calibration is not None:
        results["validation"] = {**calibration.info, "image_auroc": calibration.image_auroc,
                                 "pixel_auroc": calibration.pixel_auroc}
        results["decisions"] = calibration.decisions(results["threshold"])
    write_results(out, results, header)
    threshold = results["threshold"]["value"]
    title = f"{header.get('model', '')} · {header.get('category', '')}"
    write_json(out / SCORES_NAME, {"paths": paths, "labels": labels, "scores": scores})
    plot_histogram(scores, labels, threshold, out / "histogram.png", title=title)
    plot_roc(scores, labels, out / "roc.png", title=title)
    if kept:
        post = detector.post
        if post.pixel_calibrated:
            pixel_threshold, low, high = float(post.pixel_threshold), float(post.map_min), float(post.map_max)
        else:  # no validation maps (an old checkpoint): the test maps' own range, the mid-point as a guide
            values = torch.stack([k[1] for k in kept])
            low, high = float(values.min()), float(values.max())
            pixel_threshold = (low + high) / 2.0
        masks = torch.stack([k[2] for k in kept]) if all(k[2] is not None for k in kept) else None
        threshold_name = "pixel" if post.pixel_calibrated else "mid-range (no pixel)"
        save_map_panels(out / "maps", torch.stack([k[0] for k in kept]), torch.stack([k[1] for k in kept]),
                        pixel_threshold, [k[3] for k in kept], masks, vmin=low, vmax=high,
                        threshold_name=threshold_name, min_tile=MAP_PANEL_TILE)
    return results

