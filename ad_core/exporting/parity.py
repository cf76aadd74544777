"""Parity of an exported graph with the torch detector, measured at every export on real images.

Differences are judged on each output's own scale: the span of the post-processor's range (the span that
maps onto [0, 1] in `normalized_score` / `normalized_map`), so one tolerance means the same for a model
whose scores are hundreds and one whose scores are hundredths. A label may differ only for an image whose
score lies within the score tolerance of the threshold: anywhere else a flipped label is a failure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from ad_core.detector import Detection, Detector
from ad_core.exporting.errors import ExportError

# Runs the exported graph: float32 [N,3,H,W] images -> its outputs by name.
GraphRunner = Callable[[np.ndarray], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class Tolerance:
    """Largest allowed difference, as a fraction of the score range (`score`) and of the map range (`map`)."""

    score: float
    map: float

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "unit": "fraction of the post-processor's range (score_max - score_min, "
                                        "map_max - map_min)", "labels": "may differ only within the score tolerance "
                                                                         "of the threshold"}


FP32_TOLERANCE = Tolerance(score=1e-3, map=1e-3)
FP16_TOLERANCE = Tolerance(score=2e-2, map=2e-2)  # half-precision constants: ~3 significant digits


def run_in_batches(run: GraphRunner, images: np.ndarray, batch: int | None) -> dict[str, np.ndarray]:
    """All images through a graph of fixed batch size (the last batch padded by repeating its first image), or in
    one call for a dynamic batch (which then also checks that the batch really is dynamic)."""
    if batch is None:
        return {k: np.asarray(v) for k, v in run(images).items()}
    parts: list[Mapping[str, np.ndarray]] = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        filled = np.concatenate([chunk, np.repeat(chunk[:1], batch - len(chunk), axis=0)]) if len(chunk) < batch else chunk
        parts.append({k: np.asarray(v)[: len(chunk)] for k, v in run(filled).items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _span(low: torch.Tensor, high: torch.Tensor, values: np.ndarray) -> float:
    """The post-processor's range, or the range of the reference values where none is stored."""
    span = float(high - low)
    if not np.isfinite(span) or span <= 0:
        span = float(values.max() - values.min()) if values.size else 0.0
    return max(span, 1e-12)


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0


def measure(detector: Detector, reference: Detection, outputs: Mapping[str, np.ndarray],
            tolerance: Tolerance) -> dict[str, Any]:
    """The largest differences between the torch reference and the graph's outputs, checked against `tolerance`.

    Raises `ExportError` naming each exceeded figure; returns the figures otherwise.
    """
    post = detector.post
    score = reference.score.cpu().numpy()
    score_tol = tolerance.score * _span(post.score_min, post.score_max, score)
    threshold = float(post.threshold)
    flipped = outputs["label"].astype(np.int64) != reference.label.cpu().numpy()
    figures: dict[str, Any] = {
        "images": int(len(score)),
        "max_score_diff": _max_diff(outputs["score"], score),
        "max_normalized_score_diff": _max_diff(outputs["normalized_score"], reference.normalized_score.cpu().numpy()),
        "max_map_diff": None,
        "max_normalized_map_diff": None,
        "label_mismatches": int(flipped.sum()),
    }
    failures = []
    if not np.isfinite(outputs["score"]).all():
        failures.append("the graph's scores are not all finite")
    if figures["max_score_diff"] > score_tol:
        failures.append(f"score differs by {figures['max_score_diff']:.3g} (allowed {score_tol:.3g})")
    far = np.abs(score - threshold) > score_tol
    if (flipped & far).any():
        failures.append(f"{int((flipped & far).sum())} label(s) differ for images whose score is not at the threshold")
    if reference.anomaly_map is not None:
        amap = reference.anomaly_map.cpu().numpy()
        map_tol = tolerance.map * _span(post.map_min, post.map_max, amap)
        figures["max_map_diff"] = _max_diff(outputs["anomaly_map"], amap)
        if figures["max_map_diff"] > map_tol:
            failures.append(f"anomaly map differs by {figures['max_map_diff']:.3g} (allowed {map_tol:.3g})")
    if reference.normalized_map is not None:
        figures["max_normalized_map_diff"] = _max_diff(outputs["normalized_map"],
                                                       reference.normalized_map.cpu().numpy())
    if failures:
        raise ExportError("the exported graph disagrees with the torch detector on "
                          f"{len(score)} image(s): {'; '.join(failures)}. Nothing was written.")
    return figures


def check_parity(detector: Detector, reference: Detection, run: GraphRunner, images: torch.Tensor,
                 batch: int | None, tolerance: Tolerance) -> dict[str, Any]:
    """Score `images` with the graph (through `run`) and compare with the torch detector's `reference` outputs
    on them (see `measure`)."""
    try:
        outputs = run_in_batches(run, images.cpu().numpy().astype(np.float32), batch)
    except Exception as exc:  # the runtime's own error types: onnxruntime's and OpenVINO's
        shape = "dynamic" if batch is None else batch
        raise ExportError(f"the exported graph (batch {shape}) fails on {len(images)} image(s): "
                          f"{str(exc).splitlines()[0][:300]}. A model whose graph fixes its batch size exports with "
                          "a fixed --batch N only. Nothing was written.") from exc
    return {**measure(detector, reference, outputs, tolerance), "tolerance": tolerance.as_json()}
