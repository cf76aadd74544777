"""Scoring new images with a saved detector: what `adcore predict` does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ad_core.checkpoint import load_model
from ad_core.data import ImageTransform, read_image
from ad_core.data.images import IMAGE_SUFFIXES, ImageReadError
from ad_core.reports import save_map_png
from ad_core.settings import resolve_device


def collect_images(inputs: list[Path]) -> list[Path]:
    """Files as given, folders expanded recursively to their images, in a stable order."""
    found: list[Path] = []
    for item in inputs:
        if item.is_dir():
            found.extend(sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            found.append(item)
    if not found:
        raise FileNotFoundError(f"no images found in {', '.join(map(str, inputs))} "
                                f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return found


def predict_paths(checkpoint: str | Path, inputs: list[Path], output_dir: Path | None = None,
                  batch_size: int = 16, device: str | None = None) -> list[dict[str, Any]]:
    """Score every image: raw score, 0–1 score, label at the stored threshold, optional map PNG.

    An image that cannot be read gets a row with its `error` instead; the others are still scored.
    """
    dev = resolve_device(device)
    detector = load_model(checkpoint, device=dev)
    transform = ImageTransform(detector.meta["image_size"])
    paths = collect_images(inputs)
    rows: list[dict[str, Any]] = []
    for start in range(0, len(paths), batch_size):
        chunk, tensors = [], []
        for index, path in enumerate(paths[start : start + batch_size], start):
            try:
                tensors.append(transform(read_image(path)))
                chunk.append((index, path))
            except ImageReadError as exc:
                rows.append({"path": str(path), "error": str(exc)})
        if not chunk:
            continue
        det = detector.detect(torch.stack(tensors).to(dev))
        for i, (index, path) in enumerate(chunk):
            row: dict[str, Any] = {
                "path": str(path),
                "score": float(det.score[i]),
                "normalized_score": float(det.normalized_score[i]),
                "label": int(det.label[i]),
                "threshold": float(detector.post.threshold),
            }
            if output_dir is not None and det.normalized_map is not None:
                target = Path(output_dir) / f"{index:05d}_{path.stem}_map.png"
                save_map_png(target, det.normalized_map[i].cpu().numpy(), vmin=0.0, vmax=1.0)
                row["map"] = str(target)
            rows.append(row)
    return rows
