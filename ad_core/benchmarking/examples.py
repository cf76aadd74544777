"""A few fixed test images per category with each model's anomaly maps, for side-by-side comparison.

Every cell of a category picks the same images (chosen by path, not by score), stores them with its
normalised maps (0.5 = the model's own threshold, so colours mean the same for every model), and the
report lays them out as a grid image x model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ad_core.api import atomic_path

EXAMPLES_NAME = "examples.safetensors"
MAX_SIDE = 128  # pixels; the report shows thumbnails


def pick_examples(records: list[Any], count: int) -> list[int]:
    """Indices of `count` test records: anomalous ones spread over the sorted paths, plus one normal image."""
    order = sorted(range(len(records)), key=lambda i: str(records[i].path))
    anomalous = [i for i in order if int(records[i].label) == 1]
    normal = [i for i in order if int(records[i].label) == 0]
    n_normal = min(1, len(normal)) if count > 1 else 0
    n_anomalous = min(len(anomalous), count - n_normal)
    step = len(anomalous) / n_anomalous if n_anomalous else 0
    chosen = [anomalous[int(k * step)] for k in range(n_anomalous)]
    chosen += normal[: count - len(chosen)]
    return chosen


def _thumbnail(tensor: torch.Tensor, mode: str) -> torch.Tensor:
    """[B,C,H,W] scaled so the longer side is at most MAX_SIDE."""
    h, w = tensor.shape[-2:]
    scale = MAX_SIDE / max(h, w)
    if scale >= 1:
        return tensor
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    kwargs = {"align_corners": False, "antialias": True} if mode == "bilinear" else {}
    return F.interpolate(tensor, size=size, mode=mode, **kwargs)


def write_examples(detector: Any, test_set: Any, out_dir: str | Path, count: int,
                   device: torch.device | str = "cpu") -> int:
    """Predict the chosen test images and write `examples.safetensors`; returns how many were written.

    Datasets without `records` (label per item known without loading) get no examples.
    """
    records = getattr(test_set, "records", None)
    if count <= 0 or not records:
        return 0
    indices = pick_examples(records, count)
    samples = [test_set[i] for i in indices]
    images = torch.stack([s.image for s in samples])
    with torch.inference_mode():
        detection = detector.detect(images.to(device))
    if detection.normalized_map is None:
        return 0
    masks = torch.stack([s.mask if s.mask is not None else torch.zeros(images.shape[-2:]) for s in samples])
    maps = detection.normalized_map.detach().float().cpu()
    tensors = {
        "images": (_thumbnail(images.float(), "bilinear").clamp(0, 1) * 255).round().to(torch.uint8).contiguous(),
        "masks": (_thumbnail(masks[:, None].float(), "nearest")[:, 0] > 0.5).to(torch.uint8).contiguous(),
        "maps": _thumbnail(maps[:, None], "bilinear")[:, 0].to(torch.float16).contiguous(),
        "scores": detection.normalized_score.detach().float().cpu().contiguous(),
    }
    meta = {"paths": json.dumps([s.path for s in samples]), "labels": json.dumps([int(s.label) for s in samples])}
    with atomic_path(Path(out_dir) / EXAMPLES_NAME) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return len(samples)


def read_examples(path: str | Path) -> dict[str, Any] | None:
    """The stored examples as numpy arrays plus `paths` and `labels`; None when the file is absent."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    tensors = load_file(str(path))
    out: dict[str, Any] = {k: v.float().numpy() if k == "maps" else v.numpy() for k, v in tensors.items()}
    out["paths"] = json.loads(meta.get("paths", "[]"))
    out["labels"] = json.loads(meta.get("labels", "[]"))
    return out
