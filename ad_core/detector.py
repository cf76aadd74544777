"""A trained model with its pre- and post-processing, as one `nn.Module` (DESIGN §4).

Normalisation before the model and 0–1 normalisation and thresholding of scores and maps after it
(`ad_core.postprocessing`) are buffers, saved in the same safetensors file as the model, so every path
that loads a checkpoint runs the very same steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ad_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ad_core.postprocessing import PostProcessor
from ad_core.types import Prediction


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


class Detector(nn.Module):
    """`pre` → plugin `model` → `post`; `predict` takes [0,1] images at the model's image size."""

    def __init__(self, model: nn.Module, normalize: bool = True) -> None:
        super().__init__()
        self.pre = PreProcessor(normalize)
        self.model = model
        self.post = PostProcessor()

    def predict(self, images: torch.Tensor) -> Prediction:
        return self.model.predict(self.pre(images))

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
