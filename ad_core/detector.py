"""A trained model with its pre- and post-processing, as one `nn.Module` (DESIGN §4).

Pre-processing before the model (`ad_core.preprocessing`) and 0–1 normalisation and thresholding of scores
and maps after it (`ad_core.postprocessing`) are buffers, saved in the same safetensors file as the model, so
every path that loads a checkpoint runs the very same steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ad_core.data.transforms import to_size
from ad_core.postprocessing import PostProcessor
from ad_core.preprocessing import PreProcessor
from ad_core.types import Prediction

if TYPE_CHECKING:
    from ad_core.inference import PathDetection

RANGE_TOLERANCE = 1e-3  # resampling may overshoot [0, 1] by rounding; 0-255 images are far outside


@dataclass
class Detection:
    """Raw and normalised outputs for deployment: `label` is 1 where score >= the image threshold,
    `mask` is 1 where the map >= the pixel threshold (None without a map or a pixel threshold)."""

    score: torch.Tensor
    normalized_score: torch.Tensor
    label: torch.Tensor
    anomaly_map: torch.Tensor | None
    normalized_map: torch.Tensor | None
    mask: torch.Tensor | None = None


def check_unit_range(images: torch.Tensor) -> None:
    """Refuse what is not float images in [0, 1] (e.g. 0-255 values), which would score silently wrong."""
    if not torch.is_floating_point(images):
        raise ValueError(f"images must be float tensors in [0, 1], got dtype {images.dtype}: divide 0-255 images "
                         "by 255, or let detector.predict_paths(paths) read the files")
    low, high = float(images.min()), float(images.max())
    if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        raise ValueError(f"images must be in [0, 1] (unnormalised; the detector normalises them itself), got values "
                         f"{low:.3g}..{high:.3g}: divide 0-255 images by 255, or use detector.predict_paths(paths)")


class Detector(nn.Module):
    """`pre` → plugin `model` → `post`; `predict` takes [0,1] images, maps come back at the input's size.

    A detector loaded from a checkpoint knows its input: `image_size` (height, width), `normalize`, `mean`
    and `std`; `predict_paths(paths)` reads and resizes image files exactly as training did.

    `pre` defaults to ImageNet normalisation without resizing (identity with `normalize=False`).
    """

    def __init__(self, model: nn.Module, normalize: bool = True, pre: PreProcessor | None = None) -> None:
        super().__init__()
        self.pre = PreProcessor(normalize) if pre is None else pre
        self.model = model
        self.post = PostProcessor()
        self.meta: dict[str, Any] = {}  # the checkpoint's model.json, set by `load_model`

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the images the model takes."""
        if "image_size" not in self.meta:
            raise RuntimeError("this detector has no recorded image size: load it with ad_core.load_model(folder)")
        return to_size(self.meta["image_size"])

    @property
    def mean(self) -> tuple[float, ...]:
        """Per-channel mean subtracted from [0,1] images before the model (zeros without normalisation)."""
        return tuple(self.pre.mean.flatten().tolist())

    @property
    def std(self) -> tuple[float, ...]:
        """Per-channel standard deviation images are divided by (ones without normalisation)."""
        return tuple(self.pre.std.flatten().tolist())

    @property
    def normalize(self) -> bool:
        """Whether the model sees ImageNet-normalised images."""
        return self.mean != (0.0, 0.0, 0.0) or self.std != (1.0, 1.0, 1.0)

    def predict(self, images: torch.Tensor) -> Prediction:
        check_unit_range(images)
        pred = self.model.predict(self.pre(images))
        if pred.anomaly_map is None:
            return pred
        return Prediction(score=pred.score, anomaly_map=self.pre.restore_map(pred.anomaly_map, images.shape[-2:]))

    def predict_paths(self, paths: Sequence[str | Path], batch_size: int = 16) -> list[PathDetection]:
        """Score image files (folders are searched): decoded and resized as in training, then thresholded."""
        from ad_core.inference import detect_paths

        return detect_paths(self, paths, batch_size)

    def detect(self, images: torch.Tensor) -> Detection:
        """Predict and apply the stored thresholds and 0–1 normalisations (image and pixel each their own)."""
        if not self.post.calibrated:
            raise RuntimeError("this detector has no threshold yet: train it with ad_core.train first")
        pred = self.predict(images)
        amap = pred.anomaly_map
        pixels = amap is not None and self.post.pixel_calibrated
        return Detection(
            score=pred.score,
            normalized_score=self.post.normalize_score(pred.score),
            label=(pred.score >= self.post.threshold).long(),
            anomaly_map=amap,
            normalized_map=self.post.normalize_map(amap) if pixels else None,
            mask=(amap >= self.post.pixel_threshold).long() if pixels else None,
        )
