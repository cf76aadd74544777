"""The map picture `ad-runtime predict --maps` writes and `POST /predict?map=1` returns, drawn with numpy and Pillow.

It is the picture `adcore predict --output` draws, so the two tools' files look alike: the image at its own pixel
size with the 0-1 map (0.5 = the stored threshold) blended over it in the jet colours, a colour scale, and the
score and label written above. The map is brought to the image's size with bilinear interpolation on pixel
centres (as torch's `interpolate(..., align_corners=False)`).
"""

from __future__ import annotations

import functools
import io
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ALPHA = 0.5  # weight of the colour map over the image
BAR_WIDTH = 16  # pixels of the colour scale
SIDE = 64  # pixels right of the image: the scale and its tick labels
HEADER = 18  # pixels above the image: the score line
_BACKGROUND = (255, 255, 255)
_ANOMALOUS = (200, 0, 0)
_NORMAL = (0, 110, 0)
_JET = {  # matplotlib's "jet" segments: (position, value) per channel
    "red": ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
    "green": ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
    "blue": ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),
}


@functools.lru_cache(maxsize=1)
def _jet_table() -> np.ndarray:
    """256 uint8 RGB entries of the jet colour map."""
    x = np.linspace(0.0, 1.0, 256)
    channels = [np.interp(x, *zip(*_JET[c])) for c in ("red", "green", "blue")]
    return (np.stack(channels, axis=1) * 255).round().astype(np.uint8)


def colorize(values: np.ndarray) -> np.ndarray:
    """A 0-1 [H,W] map as jet RGB uint8 [H,W,3] (NaN as 0, out-of-range values clipped)."""
    index = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0).clip(0.0, 1.0)
    return _jet_table()[(index * 255).round().astype(np.uint8)]


def resize_bilinear(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """A float [h,w] map at (height, width), sampled at pixel centres with edge clamping."""
    values = np.asarray(values, dtype=np.float32)
    if values.shape == (height, width):
        return values
    rows = _axis_weights(values.shape[0], height)
    cols = _axis_weights(values.shape[1], width)
    out = values[rows[0]] * (1 - rows[2])[:, None] + values[rows[1]] * rows[2][:, None]
    return (out[:, cols[0]] * (1 - cols[2]) + out[:, cols[1]] * cols[2]).astype(np.float32)


def _axis_weights(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    source = np.maximum((np.arange(size_out, dtype=np.float64) + 0.5) * (size_in / size_out) - 0.5, 0.0)
    low = np.minimum(np.floor(source).astype(np.int64), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    return low, high, (source - low).astype(np.float32)


def overlay_image(image: Image.Image, normalized_map: np.ndarray, score: float, normalized_score: float,
                  label: bool) -> Image.Image:
    """The RGB `image` (its own size) with the 0-1 map blended in, a colour scale and a score line."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    height, width = rgb.shape[:2]
    heat = colorize(resize_bilinear(normalized_map, height, width)).astype(np.float32)
    blended = (rgb * (1 - ALPHA) + heat * ALPHA).round().astype(np.uint8)
    canvas = Image.new("RGB", (width + SIDE, height + HEADER), _BACKGROUND)
    canvas.paste(Image.fromarray(blended), (0, HEADER))
    draw = ImageDraw.Draw(canvas)
    verdict = "ANOMALOUS" if label else "normal"
    draw.text((2, 3), f"{verdict}  score {score:.4g}  (0-1: {normalized_score:.3f})",
              fill=_ANOMALOUS if label else _NORMAL)
    ramp = colorize(np.linspace(1.0, 0.0, max(height, 2), dtype=np.float32)[:, None].repeat(BAR_WIDTH, 1))
    x = width + 6
    canvas.paste(Image.fromarray(ramp), (x, HEADER))
    for value, caption in ((1.0, "1"), (0.5, "0.5 thr"), (0.0, "0")):
        y = HEADER + round((1.0 - value) * (height - 1))
        draw.line([(x + BAR_WIDTH, y), (x + BAR_WIDTH + 3, y)], fill=(0, 0, 0))
        draw.text((x + BAR_WIDTH + 5, min(max(y - 5, HEADER), HEADER + height - 11)), caption, fill=(0, 0, 0))
    return canvas


def overlay_png(image: Image.Image, normalized_map: np.ndarray, score: float, normalized_score: float,
                label: bool) -> bytes:
    """`overlay_image(...)` encoded as PNG bytes."""
    buffer = io.BytesIO()
    overlay_image(image, normalized_map, score, normalized_score, label).save(buffer, format="PNG")
    return buffer.getvalue()


def write_file(path: Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (a temporary file beside it, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def overlay_names(paths: list[Path], inputs: list[Path]) -> list[Path]:
    """Output names after the input files, `<name>_anomaly.png`, under the sub-folders of a folder given
    (the names `adcore predict --output` uses)."""
    names: list[Path] = []
    seen: set[Path] = set()
    roots = [p for p in inputs if p.is_dir()]
    for path in paths:
        root = next((r for r in roots if path.is_relative_to(r)), None)
        relative = path.relative_to(root) if root is not None else Path(path.name)
        name = relative.with_name(f"{relative.stem}_anomaly.png")
        count = 1
        while name in seen:
            count += 1
            name = relative.with_name(f"{relative.stem}_{count}_anomaly.png")
        seen.add(name)
        names.append(name)
    return names
