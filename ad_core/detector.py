"""A trained model with its pre- and post-processing, as one `nn.Module` (DESIGN §4).

Pre-processing before the model (`ad_core.preprocessing`) and 0–1 normalisation and thresholding of scores
and maps after it (`ad_core.postprocessing`) are buffers, saved in the same safetensors file as the model, so
every path that loads a checkpoint runs the very same steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ad_core.postprocessing import PostProcessor
from ad_core.preprocessing import PreProcessor
from ad_core.types import Prediction


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
