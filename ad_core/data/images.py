"""Reading images and masks from disk into a form every model accepts, with errors that name the file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pbm",
                  ".pnm", ".tga", ".jp2", ".j2k", ".ico", ".dib", ".pcx", ".sgi", ".ras", ".im", ".qoi")
PIXEL_LIMIT_ENV = "ADCORE_MAX_IMAGE_PIXELS"  # raises Pillow's decompression-bomb limit for trusted large images
LOSSY_FORMATS = ("JPEG", "MPO", "WEBP", "JPEG2000")

if os.environ.get(PIXEL_LIMIT_ENV):
    Image.MAX_IMAGE_PIXELS = int(os.environ[PIXEL_LIMIT_ENV])


class ImageReadError(ValueError):
    """An image or mask file cannot be read."""


def _open(path: str | Path, header_only: bool = False) -> Image.Image:
    try:
        with Image.open(path) as img:
            if not header_only:
                img.load()
            return img
    except FileNotFoundError as exc:
        raise ImageReadError(f"cannot read image {path}: file not found") from exc
    except Image.DecompressionBombError as exc:
        raise ImageReadError(
            f"image too large: {path} is over Pillow's decompression-bomb limit of {Image.MAX_IMAGE_PIXELS} pixels "
            f"({exc}). If you trust the file, raise the limit with the environment variable "
            f"{PIXEL_LIMIT_ENV}=<pixels> (or set PIL.Image.MAX_IMAGE_PIXELS in Python)."
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"cannot read image {path}: truncated or not an image file ({exc})") from exc


def image_size_of(path: str | Path) -> tuple[int, int]:
    """(width, height) from the file's header alone: finds unreadable files before any work is done."""
    return _open(path, header_only=True).size


def to_rgb(img: Image.Image) -> Image.Image:
    """Grayscale, 16-bit, palette, CMYK and alpha images become 8-bit RGB."""
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


def read_image(path: str | Path) -> Image.Image:
    """An RGB PIL image, whatever the file's mode."""
    return to_rgb(_open(path))


def read_mask(path: str | Path) -> np.ndarray:
    """A boolean HxW defect mask: nonzero is defect, except in lossy files (JPEG), binarised at half range.

    Compression rings around a JPEG mask's edges with small nonzero values; `> 0` would grow every defect.
    """
    img = _open(path)
    array = np.asarray(img)
    if array.ndim == 3:
        array = array[..., :3].max(axis=-1) if array.shape[-1] >= 3 else array[..., 0]
    if img.format in LOSSY_FORMATS and array.dtype.kind in "ui":
        return array > np.iinfo(array.dtype).max // 2
    return array > 0
