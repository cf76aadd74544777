"""Image operations the texture augmentations of DRAEM and GLASS share, on [3, H, W] tensors in [0, 1].

Both papers alter each anomaly texture by a few random photometric and geometric operations (DRAEM with imgaug,
GLASS with torchvision); the operations both lists contain live here, each with its parameters passed in, so every
draw stays with the caller's generator.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def rotate(image: torch.Tensor, degrees: float) -> torch.Tensor:
    """[C, H, W] rotated about its centre (bilinear), zeros where the rotated frame leaves the image."""
    theta = math.radians(degrees)
    matrix = torch.tensor([[math.cos(theta), -math.sin(theta), 0.0], [math.sin(theta), math.cos(theta), 0.0]],
                          dtype=image.dtype).unsqueeze(0)
    grid = F.affine_grid(matrix, [1, *image.shape], align_corners=False)
    return F.grid_sample(image.unsqueeze(0), grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]


def equalize(image: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation per channel on 256 levels (PIL's ImageOps.equalize)."""
    levels = (image * 255).round().long().clamp(0, 255)
    out = []
    for channel in levels:
        cdf = torch.bincount(channel.flatten(), minlength=256).cumsum(0).float()
        low = cdf[cdf > 0][0]
        lut = ((cdf - low) / (cdf[-1] - low).clamp_min(1) * 255).clamp(0, 255)
        out.append(lut[channel] / 255)
    return torch.stack(out)


def autocontrast(image: torch.Tensor) -> torch.Tensor:
    """Each channel stretched to the full [0, 1] range."""
    low = image.amin(dim=(1, 2), keepdim=True)
    high = image.amax(dim=(1, 2), keepdim=True)
    return (image - low) / (high - low).clamp_min(1e-6)


def grayscale(image: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma [1, H, W] (PIL's and torchvision's grey conversion)."""
    return (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]).unsqueeze(0)


def rgb_to_hsv(image: torch.Tensor) -> torch.Tensor:
    """[3, H, W] RGB in [0, 1] -> HSV [3, H, W]: hue in degrees [0, 360), saturation and value in [0, 1]."""
    value, argmax = image.max(dim=0)
    delta = value - image.min(dim=0).values
    safe = delta.clamp_min(1e-12)
    red, green, blue = image.unbind(0)
    hue = torch.stack(((green - blue) / safe, (blue - red) / safe + 2, (red - green) / safe + 4))
    hue = torch.where(delta > 0, (60 * hue.gather(0, argmax.unsqueeze(0))[0]) % 360, torch.zeros_like(value))
    return torch.stack((hue, torch.where(value > 0, delta / value.clamp_min(1e-12), torch.zeros_like(value)), value))


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """HSV [3, H, W] (hue in degrees) -> RGB [3, H, W] in [0, 1]."""
    hue, saturation, value = hsv.unbind(0)
    k = (torch.tensor([5.0, 3.0, 1.0], dtype=hsv.dtype).view(3, 1, 1) + hue / 60) % 6
    return value - value * saturation * torch.minimum(k, 4 - k).clamp(0, 1)


def shift_hue(image: torch.Tensor, degrees: float) -> torch.Tensor:
    """The colour wheel turned by `degrees` (saturation and value kept)."""
    hue, saturation, value = rgb_to_hsv(image).unbind(0)
    return hsv_to_rgb(torch.stack(((hue + degrees) % 360, saturation, value)))
