"""Real defective training images with their masks, read from a folder the user names (supervised training).

Layout: the images anywhere under the folder; each image `<stem>.<ext>` has its mask `<stem>_mask.<ext>` beside
it or in a `masks/` subfolder of its folder (any image suffix; nonzero pixels are defect). An image without a mask
is an error naming it: a defect without its mask cannot teach the segmentation head where the defect is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MASK_SUFFIX = "_mask"


class DefectFolderError(ValueError):
    """The named defect folder is missing, empty, or holds images without masks."""


@dataclass(frozen=True)
class DefectSet:
    """Defective images [N, 3, H, W] in [0, 1] and their binary masks [N, H, W], at one size."""

    images: torch.Tensor
    masks: torch.Tensor


def _mask_of(image: Path) -> Path | None:
    for folder in (image.parent, image.parent / "masks"):
        for suffix in IMAGE_SUFFIXES:
            candidate = folder / f"{image.stem}{MASK_SUFFIX}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def defect_pairs(folder: str | Path) -> list[tuple[Path, Path]]:
    """(image, mask) paths of every defective image under `folder`, sorted by image path."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DefectFolderError(f"defect_dir {root} does not exist or is not a folder")
    images = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                    and not p.stem.endswith(MASK_SUFFIX) and p.parent.name != "masks")
    if not images:
        raise DefectFolderError(f"defect_dir {root} holds no image ({', '.join(IMAGE_SUFFIXES)})")
    pairs = [(image, _mask_of(image)) for image in images]
    missing = [image for image, mask in pairs if mask is None]
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        raise DefectFolderError(
            f"{len(missing)} of {len(images)} image(s) in defect_dir {root} have no mask, e.g. {shown}. Put "
            f"<stem>{MASK_SUFFIX}.png beside each image or in a masks/ subfolder, or remove the image.")
    return [(image, mask) for image, mask in pairs if mask is not None]


def read_defects(folder: str | Path, size: tuple[int, int]) -> DefectSet:
    """Every defect of `folder` resized to `size` (height, width): images bilinear, masks nearest."""
    images, masks = [], []
    for image_path, mask_path in defect_pairs(folder):
        with Image.open(image_path) as img:
            rgb = img.convert("RGB").resize((size[1], size[0]), Image.BILINEAR)
        with Image.open(mask_path) as img:
            mask = img.convert("L").resize((size[1], size[0]), Image.NEAREST)
        images.append(torch.from_numpy(np.asarray(rgb, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0)
        masks.append(torch.from_numpy((np.asarray(mask) > 0).astype(np.float32)))
    return DefectSet(torch.stack(images), torch.stack(masks))
