"""Decoding and resizing exactly as ad-core's training does, without torch.

The steps mirror `ad_core.data.images.read_image` and `ad_core.data.transforms.ImageTransform`: Pillow opens and
fully loads the file; 16-bit and float grey images are scaled to 8 bits; images with alpha are composited on
black; the result is converted to RGB; it is resized with `Image.BILINEAR` and `reducing_gap=None` only when its
size differs; values are divided by 255 in float32. No EXIF orientation is applied, because training applies
none: a rotated phone picture is scored as its pixels are stored, as it would be in an evaluation.
`tests/test_runtime_parity.py` at the repository root compares both code paths on the same files.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pbm",
                  ".pnm", ".tga", ".jp2", ".j2k", ".ico", ".dib", ".pcx", ".sgi", ".ras", ".im", ".qoi")
PIXEL_LIMIT_ENV = "ADCORE_MAX_IMAGE_PIXELS"  # the same variable as ad-core: raises Pillow's bomb limit

if os.environ.get(PIXEL_LIMIT_ENV):
    Image.MAX_IMAGE_PIXELS = int(os.environ[PIXEL_LIMIT_ENV])


class ImageReadError(ValueError):
    """An image file or upload cannot be decoded."""


class ImageTooLargeError(ImageReadError):
    """An image over Pillow's decompression-bomb limit of pixels."""


def read_image(source: str | Path | bytes) -> Image.Image:
    """An RGB image from a file path or from the bytes of an image file."""
    name = "the upload" if isinstance(source, bytes) else str(source)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            img.load()
    except FileNotFoundError as exc:
        raise ImageReadError(f"cannot read image {name}: file not found") from exc
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(
            f"image too large: {name} is over Pillow's decompression-bomb limit of {Image.MAX_IMAGE_PIXELS} "
            f"pixels ({exc}). If you trust it, raise the limit with the environment variable "
            f"{PIXEL_LIMIT_ENV}=<pixels>."
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"cannot read image {name}: truncated or not an image file ({exc})") from exc
    return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    """Grayscale, 16-bit, float, palette, CMYK and alpha images become 8-bit RGB, as in training."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(img, dtype=np.float64)
        scale = 65535.0 if img.mode.startswith("I;16") or array.max() > 255 else 255.0
        img = Image.fromarray(np.clip(array / scale * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        array = np.asarray(img, dtype=np.float64)
        scale = 1.0 if array.max() <= 1.0 else 255.0
        img = Image.fromarray(np.clip(array / scale * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def from_array(array: np.ndarray) -> Image.Image:
    """An HxWx3 uint8 RGB array as a Pillow image (the form the runtime resizes)."""
    if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        shape = getattr(array, "shape", None)
        dtype = getattr(array, "dtype", type(array).__name__)
        raise ValueError(f"an image array must be HxWx3 uint8 RGB, got shape {shape} and dtype {dtype}; "
                         "convert grey or BGR images to RGB first")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"an image array must not be empty, got shape {array.shape}")
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


def to_input(img: Image.Image, height: int, width: int) -> np.ndarray:
    """An RGB image as the graph's input row: float32 [3,H,W] in [0,1] at the export's size."""
    if img.size != (width, height):
        img = img.resize((width, height), Image.BILINEAR, reducing_gap=None)
    return np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders expanded recursively to their images in a stable order (as `adcore predict`)."""
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
