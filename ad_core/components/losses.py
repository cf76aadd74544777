"""Losses of the reconstruction and synthetic-anomaly models: SSIM (DRAEM, Bergmann et al.) and focal loss
(Lin et al. 2017, as DRAEM and DiffusionAD train their segmentation heads)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The normalised [size, size] Gaussian window of SSIM."""
    x = torch.arange(size, dtype=torch.float32) - size // 2
    taps = torch.exp(-0.5 * (x / sigma) ** 2)
    taps = taps / taps.sum()
    return taps[:, None] * taps[None, :]


def ssim(x: torch.Tensor, y: torch.Tensor, window_size: int = 11, sigma: float = 1.5,
         data_range: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean structural similarity of [B, C, H, W] images and its per-pixel map [B, C, H, W].

    Local statistics use a Gaussian window (11 taps, sigma 1.5) per channel with zero padding, so the map
    has the image's size, as in DRAEM's code; C1 = (0.01 L)^2 and C2 = (0.03 L)^2 with L = `data_range`.
    """
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"ssim needs two [B, C, H, W] tensors of one shape, got {tuple(x.shape)}, {tuple(y.shape)}")
    channels = x.shape[1]
    window = gaussian_window(window_size, sigma).to(x).expand(channels, 1, window_size, window_size)
    pad = window_size // 2

    def local_mean(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, padding=pad, groups=channels)

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x * mu_x
    var_y = local_mean(y * y) - mu_y * mu_y
    cov = local_mean(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    return ssim_map.mean(), ssim_map


def ssim_loss(x: torch.Tensor, y: torch.Tensor, window_size: int = 11, sigma: float = 1.5,
              data_range: float = 1.0, return_map: bool = False
              ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """1 - SSIM(x, y); with `return_map`, also the per-pixel dissimilarity 1 - SSIM map [B, C, H, W]."""
    value, ssim_map = ssim(x, y, window_size, sigma, data_range)
    return (1 - value, 1 - ssim_map) if return_map else 1 - value


def focal_loss(probabilities: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
               alpha: float | Sequence[float] | None = None, smooth: float = 1e-5) -> torch.Tensor:
    """Mean focal loss -alpha_t (1 - p_t)^gamma log p_t of class probabilities [B, K, ...] for labels [B, ...].

    `alpha`: None weighs every class 1; a float a is the binary weighting (1 - a for class 0, a for class 1);
    a sequence gives one weight per class. As in DRAEM's code, the one-hot target is clamped to
    [smooth / (K - 1), 1 - smooth] and `smooth` is added to p_t, so log p_t stays finite.
    """
    classes = probabilities.shape[1]
    if classes < 2:
        raise ValueError(f"focal_loss needs probabilities of at least 2 classes on dim 1, got {classes}")
    labels = target.long()
    if labels.ndim == probabilities.ndim:  # [B, 1, ...] masks
        labels = labels.squeeze(1)
    one_hot = F.one_hot(labels, classes).movedim(-1, 1).to(probabilities)
    if smooth:
        one_hot = one_hot.clamp(smooth / (classes - 1), 1.0 - smooth)
    p_t = (one_hot * probabilities).sum(1) + smooth
    if alpha is None:
        weight = torch.ones_like(p_t)
    else:
        per_class = [1.0 - float(alpha), float(alpha)] if isinstance(alpha, (int, float)) else [float(a) for a in alpha]
        if len(per_class) != classes:
            raise ValueError(f"alpha gives {len(per_class)} class weights for {classes} classes")
        weight = torch.tensor(per_class, dtype=p_t.dtype, device=p_t.device)[labels]
    return (-weight * (1 - p_t).pow(gamma) * p_t.log()).mean()
