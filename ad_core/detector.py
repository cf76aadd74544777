"""A trained model with its pre- and post-processing, as one `nn.Module` (DESIGN §4).

Normalisation before the model and 0–1 score normalisation and thresholding after it are buffers,
saved in the same safetensors file as the model, so every path that loads a checkpoint runs the
very same steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ad_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ad_core.data.transforms import to_size
from ad_core.types import Prediction

if TYPE_CHECKING:
    from ad_core.inference import PathDetection

RANGE_TOLERANCE = 1e-3  # resampling may overshoot [0, 1] by rounding; 0-255 images are far outside


class PreProcessor(nn.Module):
    """ImageNet normalisation of [0,1] images (identity when `normalize=False`)."""

    def __init__(self, normalize: bool = True) -> None:
        super().__init__()
        mean = IMAGENET_MEAN if normalize else (0.0, 0.0, 0.0)
        std = IMAGENET_STD if normalize else (1.0, 1.0, 1.0)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean.to(images)) / self.std.to(images)


class PostProcessor(nn.Module):
    """Maps raw scores to 0–1 with the chosen threshold at 0.5, and labels them."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("threshold", torch.tensor(float("nan")))
        self.register_buffer("score_min", torch.tensor(0.0))
        self.register_buffer("score_max", torch.tensor(1.0))

    @property
    def calibrated(self) -> bool:
        return bool(torch.isfinite(self.threshold))

    def calibrate(self, threshold: float, score_min: float, score_max: float) -> None:
        self.threshold.fill_(threshold)
        self.score_min.fill_(score_min)
        self.score_max.fill_(score_max)

    def normalize(self, values: torch.Tensor) -> torch.Tensor:
        span = (self.score_max - self.score_min).clamp_min(1e-12)
        return ((values - self.threshold) / span + 0.5).clamp(0.0, 1.0)


@dataclass
class Detection:
    """Raw and normalised outputs for deployment: `label` is 1 where score >= threshold."""

    score: torch.Tensor
    normalized_score: torch.Tensor
    label: torch.Tensor
    anomaly_map: torch.Tensor | None
    normalized_map: torch.Tensor | None


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
    """`pre` → plugin `model` → `post`; `predict` takes [0,1] images at the model's image size.

    A detector loaded from a checkpoint knows its input: `image_size` (height, width), `normalize`, `mean`
    and `std`; `predict_paths(paths)` reads and resizes image files exactly as training did.
    """

    def __init__(self, model: nn.Module, normalize: bool = True) -> None:
        super().__init__()
        self.pre = PreProcessor(normalize)
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
        return self.model.predict(self.pre(images))

    def predict_paths(self, paths: Sequence[str | Path], batch_size: int = 16) -> list[PathDetection]:
        """Score image files (folders are searched): decoded and resized as in training, then thresholded."""
        from ad_core.inference import detect_paths

        return detect_paths(self, paths, batch_size)

    def detect(self, images: torch.Tensor) -> Detection:
        """Predict and apply the stored threshold and 0–1 normalisation."""
        if not self.post.calibrated:
            raise RuntimeError("this detector has no threshold yet: evaluate it (ad_core.train / adcore test) first")
        pred = self.predict(images)
        amap = pred.anomaly_map
        return Detection(
            score=pred.score,
            normalized_score=self.post.normalize(pred.score),
            label=(pred.score >= self.post.threshold).long(),
            anomaly_map=amap,
            normalized_map=None if amap is None else self.post.normalize(amap),
        )
