"""A trained model with its pre- and post-processing, as one `nn.Module` (DESIGN §4).

Pre-processing before the model (`ad_core.preprocessing`) and 0–1 score normalisation and thresholding after it are buffers,
saved in the same safetensors file as the model, so every path that loads a checkpoint runs the
very same steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ad_core.preprocessing import PreProcessor
from ad_core.types import Prediction


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
    """`pre` → plugin `model` → `post`; `predict` takes [0,1] images, maps come back at the input's size.

    `pre` defaults to ImageNet normalisation without resizing (identity with `normalize=False`).
    """

    def __init__(self, model: nn.Module, normalize: bool = True, pre: PreProcessor | None = None) -> None:
        super().__init__()
        self.pre = PreProcessor(normalize) if pre is None else pre
        self.model = model
        self.post = PostProcessor()

    def predict(self, images: torch.Tensor) -> Prediction:
        pred = self.model.predict(self.pre(images))
        if pred.anomaly_map is None:
            return pred
        return Prediction(score=pred.score, anomaly_map=self.pre.restore_map(pred.anomaly_map, images.shape[-2:]))

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
