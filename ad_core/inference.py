"""Scoring image files with a trained detector: `Detector.predict_paths` and `adcore predict`.

Files are decoded and resized by the functions the datasets use (`read_image`, `ImageTransform`), so a score
from here equals the score of the same file in an evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ad_core.data.images import IMAGE_SUFFIXES, ImageReadError, read_image
from ad_core.data.transforms import ImageTransform

if TYPE_CHECKING:
    from ad_core.detector import Detector


@dataclass
class PathDetection:
    """One file's result: raw and 0-1 score (0.5 = the stored threshold), label, maps at the model's size."""

    path: Path
    original_size: tuple[int, int]  # (height, width) of the file
    score: float
    normalized_score: float
    label: int
    anomaly_map: np.ndarray | None
    normalized_map: np.ndarray | None


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders expanded recursively to their images, in a stable order."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found.extend(sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            found.append(item)
    if not found:
        raise FileNotFoundError(f"no images found in {', '.join(map(str, inputs))} "
                                f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return found


def detect_paths(detector: Detector, inputs: Sequence[str | Path], batch_size: int = 16,
                 unreadable: list[tuple[Path, str]] | None = None) -> list[PathDetection]:
    """Score image files (and folders of them) as the detector was trained: decoded, resized, thresholded.

    With `unreadable`, a file that cannot be decoded is recorded there (path, reason) and the others are still
    scored; without it, the first such file raises its `ImageReadError`.
    """
    transform = ImageTransform(detector.image_size)
    device = next(iter(detector.buffers())).device
    results: list[PathDetection] = []
    paths = collect_images(inputs)
    for start in range(0, len(paths), batch_size):
        chunk, pictures = [], []
        for path in paths[start : start + batch_size]:
            try:
                pictures.append(read_image(path))
            except ImageReadError as exc:
                if unreadable is None:
                    raise
                unreadable.append((path, str(exc)))
                continue
            chunk.append(path)
        if not chunk:
            continue
        det = detector.detect(torch.stack([transform(p) for p in pictures]).to(device))
        for i, (path, picture) in enumerate(zip(chunk, pictures)):
            results.append(PathDetection(
                path=path,
                original_size=(picture.height, picture.width),
                score=float(det.score[i]),
                normalized_score=float(det.normalized_score[i]),
                label=int(det.label[i]),
                anomaly_map=None if det.anomaly_map is None else det.anomaly_map[i].float().cpu().numpy(),
                normalized_map=None if det.normalized_map is None else det.normalized_map[i].float().cpu().numpy(),
            ))
    return results


def overlay_names(paths: Sequence[Path], inputs: Sequence[Path]) -> list[Path]:
    """Output names after the input files: `<name>_anomaly.png`, under the sub-folders of a folder given."""
    names: list[Path] = []
    seen: set[Path] = set()
    roots = [p for p in map(Path, inputs) if p.is_dir()]
    for path in paths:
        root = next((r for r in roots if path.is_relative_to(r)), None)
        relative = path.relative_to(root) if root is not None else Path(path.name)
        name = relative.with_name(f"{relative.stem}_anomaly.png")
        count = 1
        while name in seen:  # two inputs with the same name (e.g. a.png and a.jpg)
            count += 1
            name = relative.with_name(f"{relative.stem}_{count}_anomaly.png")
        seen.add(name)
        names.append(name)
    return names


def predict_paths(checkpoint: str | Path, inputs: list[Path], output_dir: Path | None = None,
                  batch_size: int = 16, device: str | None = None,
                  category: str | None = None) -> list[dict[str, Any]]:
    """`adcore predict`: per image the raw score, 0-1 score, label at the stored threshold and, with
    `output_dir`, an overlay picture at the image's original size. `category`: a unified run decides with
    that category's thresholds (see `load_model`)."""
    from ad_core.checkpoint import load_model
    from ad_core.reports.overlay import save_overlay
    from ad_core.settings import resolve_device

    detector = load_model(checkpoint, device=resolve_device(device), category=category)
    unreadable: list[tuple[Path, str]] = []
    results = detect_paths(detector, inputs, batch_size, unreadable)
    names = overlay_names([r.path for r in results], inputs) if output_dir is not None else []
    rows: list[dict[str, Any]] = []
    for i, result in enumerate(results):
        row: dict[str, Any] = {
            "path": str(result.path),
            "score": result.score,
            "normalized_score": result.normalized_score,
            "label": result.label,
            "threshold": float(detector.post.threshold),
        }
        if output_dir is not None and result.normalized_map is not None:
            target = Path(output_dir) / names[i]
            save_overlay(target, read_image(result.path), result.normalized_map, result.score,
                         result.normalized_score, result.label)
            row["map"] = str(target)
        rows.append(row)
    rows.extend({"path": str(path), "error": reason} for path, reason in unreadable)
    return rows
