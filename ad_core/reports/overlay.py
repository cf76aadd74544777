"""The picture `adcore predict --output` writes per image: the anomaly map over the image at its original size.

A user looks at these one by one, so each is self-explanatory: the image at the pixel size of the file, the
0-1 map blended over it (0.5 = the stored threshold), a colour scale, and the score and label written in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ad_core.io import atomic_path
from ad_core.reports.maps import OVERLAY_ALPHA, colorize

BAR_WIDTH = 16  # pixels of the colour scale
SIDE = 64  # pixels right of the image: the scale and its tick labels
HEADER = 18  # pixels above the image: the score line
_BACKGROUND = (255, 255, 255)
_ANOMALOUS = (200, 0, 0)
_NORMAL = (0, 110, 0)


def upsample_map(normalized_map: torch.Tensor | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A [h,w] map brought to (height, width) with bilinear interpolation, as a float32 array."""
    values = torch.as_tensor(np.asarray(normalized_map, dtype=np.float32))
    if tuple(values.shape) != tuple(size):
        values = F.interpolate(values[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    return values.numpy()


def overlay_image(image: Image.Image, normalized_map: torch.Tensor | np.ndarray, score: float,
                  normalized_score: float, label: int) -> Image.Image:
    """The RGB `image` (its own size) with the 0-1 map blended in, a colour scale and a score line."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    height, width = rgb.shape[:2]
    heat = colorize(upsample_map(normalized_map, (height, width)), 0.0, 1.0).astype(np.float32)
    blended = (rgb * (1 - OVERLAY_ALPHA) + heat * OVERLAY_ALPHA).round().astype(np.uint8)
    canvas = Image.new("RGB", (width + SIDE, height + HEADER), _BACKGROUND)
    canvas.paste(Image.fromarray(blended), (0, HEADER))
    draw = ImageDraw.Draw(canvas)
    verdict = "ANOMALOUS" if label else "normal"
    draw.text((2, 3), f"{verdict}  score {score:.4g}  (0-1: {normalized_score:.3f})",
              fill=_ANOMALOUS if label else _NORMAL)
    ramp = colorize(np.linspace(1.0, 0.0, max(height, 2), dtype=np.float32)[:, None].repeat(BAR_WIDTH, 1), 0.0, 1.0)
    x = width + 6
    canvas.paste(Image.fromarray(ramp), (x, HEADER))
    for value, caption in ((1.0, "1"), (0.5, "0.5 thr"), (0.0, "0")):
        y = HEADER + round((1.0 - value) * (height - 1))
        draw.line([(x + BAR_WIDTH, y), (x + BAR_WIDTH + 3, y)], fill=(0, 0, 0))
        draw.text((x + BAR_WIDTH + 5, min(max(y - 5, HEADER), HEADER + height - 11)), caption, fill=(0, 0, 0))
    return canvas


def save_overlay(path: str | Path, image: Image.Image, normalized_map: torch.Tensor | np.ndarray, score: float,
                 normalized_score: float, label: int) -> Path:
    """Write `overlay_image(...)` as a PNG, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        overlay_image(image, normalized_map, score, normalized_score, label).save(tmp, format="PNG")
    return path
