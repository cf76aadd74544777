"""Putting a synthetic anomaly into an image or a feature map, inside a mask.

Image space (DRAEM, Eq. 1 of the paper): inside the mask the texture is laid over the image with opacity
`beta`, `(1 - beta) * image + beta * texture`; outside the image is unchanged. (The authors' code names
the complementary weight beta: its `beta` is the image's share, drawn in [0, 0.8).)
Feature space (SimpleNet, SuperSimpleNet, GLASS): Gaussian noise of std `sigma` added where the mask is 1.
"""

from __future__ import annotations

import torch


def blend_anomaly(image: torch.Tensor, texture: torch.Tensor, mask: torch.Tensor,
                  beta: float | torch.Tensor) -> torch.Tensor:
    """Image [.., 3, H, W] with `texture` laid over it at opacity `beta` where `mask` [.., H, W] is 1."""
    m = mask.unsqueeze(-3).to(image)
    return image * (1 - m) + ((1 - beta) * image + beta * texture) * m


def restrict_to_foreground(mask: torch.Tensor, foreground: torch.Tensor | None) -> torch.Tensor:
    """The anomaly mask kept only on the object (`foreground` in {0, 1}, None: everywhere)."""
    return mask if foreground is None else mask * foreground.to(mask)


def feature_noise(features: torch.Tensor, sigma: float, generator: torch.Generator,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """Features [B, C, H, W] plus N(0, sigma^2) noise where `mask` [B, H, W] is 1 (everywhere if None).

    The noise is drawn on the CPU from `generator` (same draws on every device), then moved.
    """
    noise = torch.randn(features.shape, generator=generator, dtype=torch.float32).to(features) * sigma
    if mask is not None:
        noise = noise * mask.unsqueeze(1).to(features)
    return features + noise
