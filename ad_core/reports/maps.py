"""Anomaly-map pictures: four-panel comparisons for a run's `maps/` and plain map PNGs for `predict`.

Panels are composed with numpy and PIL rather than matplotlib subplots: a run writes many of them
and a figure per image would dominate its time. Only matplotlib's colormap table is used.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ad_core.io import atomic_path

PANEL_GAP = 4  # pixels between panels
LABEL_HEIGHT = 14  # pixels of caption strip above the panels
PANELS = 4
OVERLAY_ALPHA = 0.5
_BACKGROUND = (255, 255, 255)
_NO_MASK_GREY = (96, 96, 96)
_PNG_LEVEL = 1  # fast zlib level: panels are previews, not archives
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
_MAX_NAME = 120


def tile_size(height: int, width: int, min_tile: int = 0) -> tuple[int, int]:
    """(height, width) of one panel: the image's, times the whole factor that brings its short side to
    `min_tile` (small model inputs are enlarged so that a defect can be seen)."""
    scale = max(1, math.ceil(min_tile / min(height, width))) if min_tile else 1
    return height * scale, width * scale


def panel_size(height: int, width: int, min_tile: int = 0) -> tuple[int, int]:
    """(width, height) of a panel PNG for maps of `height` x `width`, so callers and tests agree."""
    height, width = tile_size(height, width, min_tile)
    return PANELS * width + (PANELS - 1) * PANEL_GAP, LABEL_HEIGHT + height


@functools.lru_cache(maxsize=4)
def _lut(name: str = "jet") -> np.ndarray:
    """A 256-entry uint8 RGB table from matplotlib's colormap (importing it picks no backend)."""
    import matplotlib

    return (matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


def _numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float32).numpy()
    return np.asarray(values, dtype=np.float32)


def colorize(amap: Any, vmin: float, vmax: float) -> np.ndarray:
    """Map scores to jet RGB on a fixed vmin..vmax scale, so colours mean the same across images."""
    values = _numpy(amap)
    if values.ndim != 2:
        raise ValueError(f"an anomaly map must be [H,W], got shape {tuple(values.shape)}")
    span = float(vmax) - float(vmin)
    scaled = (values - float(vmin)) / span if span > 0 else (values > float(vmin)).astype(np.float32)
    index = np.nan_to_num(scaled, nan=0.0, posinf=1.0, neginf=0.0).clip(0.0, 1.0) * 255
    return _lut()[index.round().astype(np.uint8)]


def save_map_png(path: str | Path, map: Any, vmin: float, vmax: float) -> Path:
    """Write one anomaly map as a colour-mapped PNG at its own resolution, atomically."""
    return _write_png(Path(path), colorize(map, vmin, vmax))


def denormalize(images: torch.Tensor, mean: Sequence[float] | torch.Tensor | None,
                std: Sequence[float] | torch.Tensor | None) -> torch.Tensor:
    """Undo per-channel normalisation (e.g. ImageNet's) so images can be shown; clamped to [0, 1]."""
    out = images.detach().float()
    shape = (-1, 1, 1)
    if std is not None:
        out = out * torch.as_tensor(std, dtype=out.dtype, device=out.device).reshape(shape)
    if mean is not None:
        out = out + torch.as_tensor(mean, dtype=out.dtype, device=out.device).reshape(shape)
    return out.clamp(0.0, 1.0)


def sanitize_name(name: str) -> str:
    """A safe file stem from a sample path or URI: `demo://weave/test/scratch/003` → `weave_test_scratch_003`."""
    text = re.sub(r"^[A-Za-z][A-Za-z0-9+.-]*://", "", str(name))
    suffix = re.search(r"\.[A-Za-z0-9]+$", text)
    if suffix and suffix.group(0).lower() in _IMAGE_SUFFIXES:
        text = text[: suffix.start()]
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    text = text[-_MAX_NAME:].lstrip("._-")
    return text or "image"


def _unique_names(names: Sequence[str]) -> list[str]:
    """Sanitised names, with `_2`, `_3`... where two samples would otherwise overwrite each other."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        stem = sanitize_name(name)
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return out


def _write_png(path: Path, rgb: np.ndarray) -> Path:
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG", compress_level=_PNG_LEVEL)
    return path


def _fit(tensor: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Bring a [B,H,W] map or mask to the image's resolution when a model returned another one."""
    if tuple(tensor.shape[-2:]) == size:
        return tensor
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(tensor[:, None].float(), size=size, mode=mode, **kwargs)[:, 0]


def _image_rgb(image: torch.Tensor) -> np.ndarray:
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    return (image.clamp(0.0, 1.0).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def _binary_rgb(mask: np.ndarray) -> np.ndarray:
    return np.repeat((mask.astype(np.uint8) * 255)[..., None], 3, axis=2)


def _compose(tiles: list[np.ndarray], captions: list[str]) -> Image.Image:
    height, width = tiles[0].shape[:2]
    canvas = Image.new("RGB", panel_size(height, width), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for i, (tile, caption) in enumerate(zip(tiles, captions)):
        x = i * (width + PANEL_GAP)
        canvas.paste(Image.fromarray(tile), (x, LABEL_HEIGHT))
        draw.text((x + 2, 1), caption, fill=(0, 0, 0))
    return canvas


def save_map_panels(out_dir: str | Path, images: torch.Tensor, maps: torch.Tensor, threshold: float,
                    names: Sequence[str], masks: torch.Tensor | None, vmin: float, vmax: float,
                    threshold_name: str = "", min_tile: int = 0) -> list[Path]:
    """Write `<out_dir>/<name>.png` per image: image | map overlay | predicted mask | ground truth.

    The overlay uses one vmin..vmax scale for every image so maps can be compared across images;
    the predicted mask is `map >= threshold`, the same rule the detector applies, and its caption names the
    threshold (`threshold_name`). Panels are enlarged to `min_tile` pixels on their short side.
    """
    images = images.detach().to("cpu", torch.float32)
    maps = maps.detach().to("cpu", torch.float32)
    if images.ndim != 4 or maps.ndim != 3 or len(images) != len(maps) or len(names) != len(images):
        raise ValueError(
            f"expected images [B,C,H,W], maps [B,H,W] and B names; got {tuple(images.shape)}, "
            f"{tuple(maps.shape)} and {len(names)} names"
        )
    size = tile_size(*images.shape[-2:], min_tile)
    if tuple(images.shape[-2:]) != size:
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    maps = _fit(maps, size, "bilinear")
    if masks is not None:
        masks = _fit(masks.detach().to("cpu", torch.float32), size, "nearest")
    out_dir = Path(out_dir)
    rule = f"map >= {threshold_name} threshold {threshold:.3g}" if threshold_name else f"map >= {threshold:.3g}"
    captions = ["image", f"map {vmin:.3g}..{vmax:.3g}", rule, "ground truth"]
    paths = []
    for i, stem in enumerate(_unique_names(names)):
        rgb = _image_rgb(images[i])
        amap = maps[i].numpy()
        overlay = (rgb * (1 - OVERLAY_ALPHA) + colorize(amap, vmin, vmax) * OVERLAY_ALPHA).round().astype(np.uint8)
        predicted = _binary_rgb(amap >= threshold)
        if masks is None:
            truth = np.empty_like(rgb)
            truth[:] = _NO_MASK_GREY
        else:
            truth = _binary_rgb(masks[i].numpy() > 0.5)
        canvas = _compose([rgb, overlay, predicted, truth], captions)
        if masks is None:
            ImageDraw.Draw(canvas).text((3 * (size[1] + PANEL_GAP) + 4, LABEL_HEIGHT + 4), "no mask",
                                        fill=(255, 255, 255))
        path = out_dir / f"{stem}.png"
        with atomic_path(path) as tmp:
            canvas.save(tmp, format="PNG", compress_level=_PNG_LEVEL)
        paths.append(path)
    return paths
