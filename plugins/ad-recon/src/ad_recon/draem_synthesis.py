"""DRAEM's simulated anomalies (Zavrtanik et al., ICCV 2021, Sec. 3.3 and the authors' data loader).

Per training image, with probability `anomaly_probability` (0.5 in the authors' code; the rest stay normal with an
empty mask): a texture from the anomaly source (a texture folder, DTD in the paper; else the core's procedural
fallback) is altered by three distinct random augmentations out of ten (the authors draw three of their imgaug
list); a Perlin noise with 2^k cells per axis (k in [0, 6)) is rotated by an angle in [-90°, 90°] and thresholded at
0.5 into the mask; inside the mask the texture is blended over the image, the image keeping a share beta drawn in
[0, 0.8). Every draw comes from the generator it is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ad_core.plugin_api import components as C

Augment = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (image [3,H,W] in [0,1], uniform draw) -> image


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def rotate(image: torch.Tensor, degrees: float) -> torch.Tensor:
    """[C, H, W] rotated about its centre, zeros where the rotated frame leaves the image (imgaug's Affine)."""
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


def saturate(image: torch.Tensor, factor: float) -> torch.Tensor:
    gray = (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]).unsqueeze(0)
    return (gray + factor * (image - gray)).clamp(0, 1)


def sharpen(image: torch.Tensor, factor: float) -> torch.Tensor:
    """PIL's EnhanceSharpness: blend with a 3x3 smoothed copy (factor > 1 sharpens)."""
    kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], dtype=image.dtype) / 13
    blurred = F.conv2d(image.unsqueeze(1), kernel.view(1, 1, 3, 3), padding=1).squeeze(1)
    return (blurred + factor * (image - blurred)).clamp(0, 1)


def texture_augmentations(generator: torch.Generator) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """The ten augmentations of the authors' list, with their parameters drawn now (imgaug ranges)."""
    u = lambda low, high: _uniform(generator, low, high)  # noqa: E731
    gamma, mul, add, sharp, sat = u(0.5, 2.0), u(0.8, 1.2), u(-30, 30) / 255, u(0.0, 40.0), u(0.5, 1.5)
    threshold, bits, angle = u(32, 128) / 255, int(u(1, 9)), u(-45, 45)
    step = 2.0 ** bits
    return [
        lambda x: x.clamp_min(0).pow(gamma),  # GammaContrast((0.5, 2.0))
        lambda x: (x * mul + add).clamp(0, 1),  # MultiplyAndAddToBrightness
        lambda x: sharpen(x, sharp),  # pillike.EnhanceSharpness
        lambda x: saturate(x, sat),  # AddToHueAndSaturation (here: the saturation part)
        lambda x: torch.where(x >= threshold, 1 - x, x),  # Solarize
        lambda x: torch.floor(x * (step - 1e-6)) / (step - 1),  # Posterize
        lambda x: 1 - x,  # Invert
        autocontrast,  # pillike.Autocontrast
        equalize,  # pillike.Equalize
        lambda x: rotate(x, angle),  # Affine(rotate=(-45, 45))
    ]


def augment_texture(texture: torch.Tensor, generator: torch.Generator, count: int = 3) -> torch.Tensor:
    """`count` distinct augmentations out of the list, applied in random order."""
    pool = texture_augmentations(generator)
    for index in torch.randperm(len(pool), generator=generator)[:count].tolist():
        texture = pool[index](texture)
    return texture.clamp(0, 1)


def rotated_perlin_mask(size: tuple[int, int], generator: torch.Generator, min_scale: int = 0, max_scale: int = 6,
                        threshold: float = 0.5) -> torch.Tensor:
    """DRAEM's mask [H, W] in {0, 1}: Perlin noise (2^k cells per axis) rotated in [-90°, 90°], thresholded."""
    exponents = torch.randint(min_scale, max_scale, (2,), generator=generator)
    noise = C.perlin_noise(size, (2 ** int(exponents[0]), 2 ** int(exponents[1])), generator)
    noise = rotate(noise.unsqueeze(0), _uniform(generator, -90, 90))[0]
    return (noise > threshold).float()


class DraemSynthesis:
    """Turns a batch of normal images into (augmented images, anomaly masks) as DRAEM trains on them."""

    def __init__(self, source: C.TextureSource, anomaly_probability: float = 0.5, max_image_share: float = 0.8
                 ) -> None:
        if not 0.0 <= anomaly_probability <= 1.0:
            raise ValueError(f"anomaly_probability must be in [0, 1], got {anomaly_probability}")
        self.source, self.anomaly_probability, self.max_image_share = source, anomaly_probability, max_image_share

    def one(self, image: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        size = (int(image.shape[-2]), int(image.shape[-1]))
        if float(torch.rand((), generator=generator)) >= self.anomaly_probability:
            return image, image.new_zeros(size)
        texture = augment_texture(self.source.sample(size, generator), generator)
        mask = rotated_perlin_mask(size, generator)
        image_share = _uniform(generator, 0.0, self.max_image_share)
        return C.blend_anomaly(image, texture, mask, 1.0 - image_share), mask

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [B, 3, H, W] in [0, 1] -> (augmented [B, 3, H, W], masks [B, H, W]); drawn on the CPU."""
        pairs = [self.one(image, generator) for image in images.detach().float().cpu()]
        augmented = torch.stack([a for a, _ in pairs]).to(images)
        masks = torch.stack([m for _, m in pairs]).to(images.device)
        return augmented, masks
