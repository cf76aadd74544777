"""Anomaly-map post-steps shared by most models: bilinear resizing to the image and Gaussian smoothing."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_map(amap: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinearly resize [B,h,w] or [B,1,h,w] maps to [B,H,W]."""
    if amap.ndim == 3:
        amap = amap.unsqueeze(1)
    if tuple(amap.shape[-2:]) != tuple(size):
        amap = F.interpolate(amap, size=tuple(size), mode="bilinear", align_corners=False)
    return amap[:, 0]


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Normalised 1-D Gaussian taps out to `truncate` sigmas (scipy's `gaussian_filter` extent)."""
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
