"""A model's pre-processing: resize, centre crop and mean/std normalisation of [0,1] images.

Datasets hand out [0,1] images; each model's spec says what its network expects (run keys `image_size`,
`center_crop`, `image_mean`, `image_std`, `normalize`). The values are buffers of the `PreProcessor`, so
they are saved in the checkpoint with the model and a loaded detector runs the very same steps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ad_core.components.maps import resize_map
from ad_core.data.transforms import to_size

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Run keys a spec may set for its pre-processing (besides `image_size` and `normalize`).
PREPROCESSING_KEYS = ("center_crop", "image_mean", "image_std")


def normalize(images: torch.Tensor, mean: Sequence[float] | torch.Tensor = IMAGENET_MEAN,
              std: Sequence[float] | torch.Tensor = IMAGENET_STD) -> torch.Tensor:
    """(images - mean) / std per channel of [B,3,H,W] images, on the images' device and dtype."""
    mean_t = torch.as_tensor(mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std_t = torch.as_tensor(std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean_t) / std_t


def _size_or_zero(size: int | Sequence[int] | None, name: str) -> torch.Tensor:
    if size is None:
        return torch.zeros(2, dtype=torch.long)
    height, width = to_size(size if isinstance(size, int) else tuple(size))
    if height < 1 or width < 1:
        raise ValueError(f"{name} must be positive, got {size}")
    return torch.tensor([height, width], dtype=torch.long)


def _channels(values: Sequence[float], name: str) -> tuple[float, float, float]:
    values = tuple(float(v) for v in values)
    if len(values) != 3:
        raise ValueError(f"{name} needs 3 values (R, G, B), got {list(values)}")
    return values  # type: ignore[return-value]


class PreProcessor(nn.Module):
    """[0,1] images -> the model's input: bilinear resize to `resize`, centre crop to `crop`, (x - mean) / std.

    `normalize=False` keeps pixel values as they are (models that read raw [0,1] images, e.g. DRAEM).
    `resize`/`crop` None skips the step. Buffers: `mean`, `std` [1,3,1,1]; `resize`, `crop` [2] (0 = off).
    """

    def __init__(self, normalize: bool = True, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, resize: int | Sequence[int] | None = None,
                 crop: int | Sequence[int] | None = None) -> None:
        super().__init__()
        if not normalize and (mean is not None or std is not None):
            raise ValueError("image_mean/image_std were given with normalize=False: drop them or set normalize=True")
        mean_v = _channels(IMAGENET_MEAN if mean is None else mean, "image_mean") if normalize else (0.0,) * 3
        std_v = _channels(IMAGENET_STD if std is None else std, "image_std") if normalize else (1.0,) * 3
        if min(std_v) <= 0:
            raise ValueError(f"image_std must be positive, got {list(std_v)}")
        self.register_buffer("mean", torch.tensor(mean_v).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std_v).view(1, 3, 1, 1))
        self.register_buffer("resize", _size_or_zero(resize, "image_size"))
        self.register_buffer("crop", _size_or_zero(crop, "center_crop"))
        if bool((self.crop > 0).all()) and bool((self.resize > 0).all()) and bool((self.crop > self.resize).any()):
            raise ValueError(f"center_crop {self.crop.tolist()} is larger than image_size {self.resize.tolist()}")

    @classmethod
    def from_run(cls, run: Mapping[str, Any]) -> PreProcessor:
        """The pre-processing a run's settings ask for (defaults: ImageNet mean/std, resize to image_size)."""
        return cls(normalize=bool(run.get("normalize", True)), mean=run.get("image_mean"), std=run.get("image_std"),
                   resize=run.get("image_size"), crop=run.get("center_crop"))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        """Checkpoints written before `resize`/`crop` existed keep the values this pre-processor was built with."""
        for name in ("resize", "crop"):
            state_dict.setdefault(prefix + name, getattr(self, name))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _resized_size(self, size: tuple[int, int]) -> tuple[int, int]:
        return (int(self.resize[0]), int(self.resize[1])) if bool((self.resize > 0).all()) else size

    def _crop_box(self, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
        """(top, left, height, width) of the centre crop in an image of `size`, or None."""
        if not bool((self.crop > 0).all()):
            return None
        height, width = int(self.crop[0]), int(self.crop[1])
        if height > size[0] or width > size[1]:
            raise ValueError(f"center_crop {height}x{width} is larger than the image {size[0]}x{size[1]}")
        return (size[0] - height) // 2, (size[1] - width) // 2, height, width

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = (int(images.shape[-2]), int(images.shape[-1]))
        target = self._resized_size(size)
        x = images
        if target != size:
            x = F.interpolate(x, size=target, mode="bilinear", align_corners=False, antialias=True)
        box = self._crop_box(target)
        if box is not None:
            top, left, height, width = box
            x = x[..., top : top + height, left : left + width]
        return (x - self.mean.to(x)) / self.std.to(x)

    def restore_map(self, amap: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
        """A map [B,h,w] of the model's input back onto the original image of `size`.

        Undoes the crop (the region outside it gets each map's minimum: nothing was seen there) and the resize.
        """
        size = (int(size[0]), int(size[1]))
        target = self._resized_size(size)
        box = self._crop_box(target)
        if box is not None:
            top, left, height, width = box
            amap = resize_map(amap, (height, width))
            floor = amap.flatten(1).amin(1).view(-1, 1, 1)
            full = floor.expand(amap.shape[0], *target).clone()
            full[:, top : top + height, left : left + width] = amap
            amap = full
        return resize_map(amap, size)
