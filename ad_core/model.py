"""An optional base class for models: the fitted flag and a `predict` that is hard to misuse.

Plugins need not inherit from it (the core relies only on the `Model` protocol), but the
first-party plugins do, so each model only writes `compute(images) -> (score, map)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ad_core.types import Prediction


class NotFittedError(RuntimeError):
    """`predict` was called on a model that was neither trained nor loaded from a checkpoint."""


def check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"expected images as a float tensor [B,3,H,W], got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"expected a floating-point image tensor, got {images.dtype}")
    if not torch.isfinite(images).all():
        raise ValueError("the images contain NaN or infinite values: check the input files or the pre-processing")


class AnomalyModel(nn.Module):
    """Base for models: keeps `fitted` in the state dict so a loaded checkpoint can predict at once.

    Register data-sized buffers (memory banks ...) as empty tensors: loading a state dict into a freshly
    built model gives them the saved shape.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted)

    def mark_fitted(self) -> None:
        self.fitted.fill_(True)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        """Buffers registered empty (memory banks, statistics sized by the data) take the saved shape."""
        for name, current in self._buffers.items():
            saved = state_dict.get(prefix + name)
            if current is not None and current.numel() == 0 and saved is not None and saved.shape != current.shape:
                self._buffers[name] = torch.empty(saved.shape, dtype=current.dtype, device=current.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def compute(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return (scores [B], anomaly map [B,h,w] or None); called in eval and inference mode."""
        raise NotImplementedError

    def predict(self, images: torch.Tensor) -> Prediction:
        if not self.is_fitted:
            raise NotFittedError(
                f"{type(self).__name__} is not fitted: train it first (ad_core.train or a Trainer) "
                "or load a checkpoint with ad_core.load_model"
            )
        check_images(images)
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                score, amap = self.compute(images)
                if amap is not None:
                    amap = resize_map(amap, images.shape[-2:])
        finally:
            self.train(was_training)
        return Prediction(
            score=score.reshape(-1).float(),
            anomaly_map=None if amap is None else amap.float(),
        )


def resize_map(amap: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinearly resize [B,h,w] or [B,1,h,w] maps to [B,H,W]."""
    if amap.ndim == 3:
        amap = amap.unsqueeze(1)
    if tuple(amap.shape[-2:]) != tuple(size):
        amap = F.interpolate(amap, size=tuple(size), mode="bilinear", align_corners=False)
    return amap[:, 0]


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    radius = max(int(truncate * sigma + 0.5), 1)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(amap: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [B,H,W] maps with reflect padding (the usual map smoothing)."""
    if sigma <= 0:
        return amap
    kernel = gaussian_kernel1d(sigma).to(amap)
    radius = kernel.numel() // 2
    x = amap.unsqueeze(1)
    pad_h = min(radius, x.shape[-2] - 1)
    pad_w = min(radius, x.shape[-1] - 1)
    kh = kernel[radius - pad_h : radius + pad_h + 1]
    kw = kernel[radius - pad_w : radius + pad_w + 1]
    x = F.pad(x, (pad_w, pad_w, 0, 0), mode="reflect") if pad_w else x
    x = F.conv2d(x, (kw / kw.sum()).view(1, 1, 1, -1))
    x = F.pad(x, (0, 0, pad_h, pad_h), mode="reflect") if pad_h else x
    x = F.conv2d(x, (kh / kh.sum()).view(1, 1, -1, 1))
    return x[:, 0]
