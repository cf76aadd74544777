"""Resizing and optional ImageNet normalisation of images; nearest-neighbour resizing of masks."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_size(image_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """An int means a square; a pair is (height, width)."""
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = image_size
    return int(height), int(width)


def imagenet_normalize(images: torch.Tensor) -> torch.Tensor:
    """ImageNet mean/std normalisation of [3,H,W] or [B,3,H,W] images in [0,1]."""
    shape = (3, 1, 1)
    return (images - torch.tensor(IMAGENET_MEAN).view(shape)) / torch.tensor(IMAGENET_STD).view(shape)


class ImageTransform:
    """PIL RGB image -> float tensor [3,H,W] in [0,1], or ImageNet-normalised when `normalize`."""

    def __init__(self, image_size: int | tuple[int, int], normalize: bool = False) -> None:
        self.size = to_size(image_size)
        self.normalize = normalize

    def __call__(self, img: Image.Image) -> torch.Tensor:
        height, width = self.size
        if img.size != (width, height):
            img = img.resize((width, height), Image.BILINEAR, reducing_gap=None)
        tensor = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0
        return imagenet_normalize(tensor) if self.normalize else tensor


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
