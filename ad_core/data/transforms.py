"""Resizing of images to [0,1] tensors and nearest-neighbour resizing of masks.

Datasets hand out images in [0,1] only; normalisation (mean, std) belongs to each model's pre-processor
(`ad_core.preprocessing.PreProcessor`), saved with the model.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def to_size(image_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """An int means a square; a pair is (height, width)."""
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = image_size
    return int(height), int(width)


class ImageTransform:
    """PIL RGB image -> float tensor [3,H,W] in [0,1] at `image_size` (bilinear)."""

    def __init__(self, image_size: int | tuple[int, int]) -> None:
        self.size = to_size(image_size)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        height, width = self.size
        if img.size != (width, height):
            img = img.resize((width, height), Image.BILINEAR, reducing_gap=None)
        tensor = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0
        return tensor


class MaskTransform:
    """Boolean HxW array -> float tensor [H,W] in {0,1}, resized with nearest neighbour."""

    def __init__(self, image_size: int | tuple[int, int]) -> None:
        self.size = to_size(image_size)

    def __call__(self, mask: np.ndarray) -> torch.Tensor:
        height, width = self.size
        img = Image.fromarray(mask.astype(np.uint8) * 255, "L")
        if img.size != (width, height):
            img = img.resize((width, height), Image.NEAREST)
        return torch.from_numpy((np.asarray(img) > 127).astype(np.float32))
