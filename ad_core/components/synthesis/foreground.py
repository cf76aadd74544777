"""Foreground masks that keep synthetic anomalies on the object (DiffusionAD, GLASS: masks made offline per
training image, e.g. by a salient-object segmenter), so no anomaly is drawn on the background of an object
category.

A folder holds one mask per training image, named after the image's file stem (`000.png` for
`train/good/000.png`, any image suffix); nonzero is foreground (`ad_core.data.images.read_mask`). A mask is
resized to the model input by nearest-neighbour sampling at pixel centres (as PIL's NEAREST), so it lines up with
an image that was resized (not cropped) to that size.
"""

from __future__ import annotations

import glob
from pathlib import Path

import torch
import torch.nn.functional as F

from ad_core.data.images import IMAGE_SUFFIXES, read_mask


class ForegroundMaskError(ValueError):
    """The foreground folder is missing, or holds no mask for a training image."""


def mask_file(folder: Path, image_path: str | Path) -> Path:
    """The mask of an image: `<folder>/<image stem>.<an image suffix>` (the first in sorted order)."""
    stem = Path(image_path).stem
    candidates = sorted(p for p in folder.glob(f"{glob.escape(stem)}.*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not candidates:
        raise ForegroundMaskError(f"no foreground mask for training image {image_path} in {folder} "
                                  f"(expected {stem}.png)")
    return candidates[0]


class ForegroundMasks:
    """Per-image foreground masks [H, W] in {0, 1} from `folder`; without a folder every image is all foreground."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = None if folder is None else Path(folder).expanduser()
        if self.folder is not None and not self.folder.is_dir():
            raise ForegroundMaskError(f"foreground_dir {self.folder} does not exist or is not a folder")

    def load(self, image_path: str | Path, size: tuple[int, int]) -> torch.Tensor | None:
        """The image's foreground [H, W] (1 on the object) at `size` (height, width), or None without a folder."""
        if self.folder is None:
            return None
        mask = torch.from_numpy(read_mask(mask_file(self.folder, image_path))).float()[None, None]
        return F.interpolate(mask, size=tuple(size), mode="nearest-exact")[0, 0]
