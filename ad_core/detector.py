"""A trained model with its pre- and post-processing, as one `nn.Module` (DESIGN §4).

Normalisation before the model and 0–1 score normalisation and thresholding after it are buffers,
saved in the same safetensors file as the model, so every path that loads a checkpoint runs the
very same steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ad_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD
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
