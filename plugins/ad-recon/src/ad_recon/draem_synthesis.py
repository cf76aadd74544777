"""DRAEM's simulated anomalies (Zavrtanik et al., ICCV 2021, Sec. 3.3 and the authors' data loader).

Per training image: with probability `rotation_probability` (0.3 in the authors' code) the image itself is first
rotated by an angle in [-90°, 90°] (zeros outside the rotated frame; it is then also the reconstruction's target);
with probability `anomaly_probability` (0.5 in the authors' code; the rest stay normal with an empty mask) a
texture from the anomaly source (a texture folder, DTD in the paper; else the core's procedural fallback) is
altered by three distinct random augmentations out of ten (the authors draw three of their imgaug list); a Perlin
noise with 2^k cells per axis (k in [0, 6)) is rotated by an angle in [-90°, 90°] and thresholded at 0.5 into the
mask; inside the mask the texture is blended over the image, the image keeping a share beta drawn in [0, 0.8).
An empty mask leaves the image normal (its mask empty), as in the authors' code. Every draw comes from the
generator it is given.

Two options reproduce anomalib 2.7's augmenter instead (both off by default): `empty_mask_retries` redraws an
empty mask up to that many times (anomalib: 10, so nearly every "anomalous" image carries an anomaly), and
`opacity_range` sets the range the texture's opacity 1 - beta is drawn from (authors: (0.2, 1.0); anomalib:
(0.1, 1.0)).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ad_core.plugin_api import components as C

Augment = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (image [3,H,W] in [0,1], uniform draw) -> image


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def shift_hue_and_saturation(image: torch.Tensor, hue_shift: float, saturation_shift: float) -> torch.Tensor:
    """imgaug's AddToHueAndSaturation: `hue_shift` and `saturation_shift` in imgaug's units (-255..255) added
    to the hue (projected to an angle: 255 units = 360 degrees) and to the saturation (clipped to [0, 255])."""
    hue, saturation, value = C.rgb_to_hsv(image).unbind(0)
    hue = (hue + hue_shift * 360 / 255) % 360
    saturation = (saturation + saturation_shift / 255).clamp(0, 1)
    return C.hsv_to_rgb(torch.stack((hue, saturation, value)))


def sharpen(image: torch.Tensor, factor: float) -> torch.Tensor:
    """PIL's EnhanceSharpness: blend with a 3x3 smoothed copy (factor > 1 sharpens)."""
    kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], dtype=image.dtype) / 13
    blurred = F.conv2d(image.unsqueeze(1), kernel.view(1, 1, 3, 3), padding=1).squeeze(1)
    return (blurred + factor * (image - blurred)).clamp(0, 1)


def texture_augmentations(generator: torch.Generator) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """The ten augmentations of the authors' list, with their parameters drawn now (imgaug ranges)."""
    u = lambda low, high: _uniform(generator, low, high)  # noqa: E731
    gamma, mul, add, sharp = u(0.5, 2.0), u(0.8, 1.2), u(-30, 30) / 255, u(0.0, 40.0)
    hue, sat = (float(v) for v in torch.randint(-50, 51, (2,), generator=generator))  # per_channel: one each
    threshold, bits, angle = u(32, 128) / 255, int(u(1, 9)), u(-45, 45)
    step = 2.0 ** bits
    return [
        lambda x: x.clamp_min(0).pow(gamma),  # GammaContrast((0.5, 2.0))
        lambda x: (x * mul + add).clamp(0, 1),  # MultiplyAndAddToBrightness
        lambda x: sharpen(x, sharp),  # pillike.EnhanceSharpness
        lambda x: shift_hue_and_saturation(x, hue, sat),  # AddToHueAndSaturation((-50, 50), per_channel=True)
        lambda x: torch.where(x >= threshold, 1 - x, x),  # Solarize
        lambda x: torch.floor(x * (step - 1e-6)) / (step - 1),  # Posterize
        lambda x: 1 - x,  # Invert
        C.autocontrast,  # pillike.Autocontrast
        C.equalize,  # pillike.Equalize
        lambda x: C.rotate(x, angle),  # Affine(rotate=(-45, 45))
    ]


def augment_texture(texture: torch.Tensor, generator: torch.Generator, count: int = 3) -> torch.Tensor:
    """`count` distinct augmentations out of the list, applied in random order."""
    pool = texture_augmentations(generator)
    for index in torch.randperm(len(pool), generator=generator)[:count].tolist():
        texture = pool[index](texture)
    return texture.clamp(0, 1)


def rotated_perlin_mask(size: tuple[int, int], generator: torch.Generator, min_scale: int = 0, max_scale: int = 6,
                        threshold: float = 0.5, empty_retries: int = 0) -> torch.Tensor:
    """DRAEM's mask [H, W] in {0, 1}: Perlin noise (2^k cells per axis) rotated in [-90°, 90°], thresholded.

    May be empty (the authors keep it: the image stays normal); `empty_retries` redraws an empty mask up to that
    many times (anomalib's augmenter: 10). With 0 the draws are exactly those of a single mask."""
    if empty_retries < 0:
        raise ValueError(f"empty_retries must be >= 0, got {empty_retries}")
    for _ in range(empty_retries + 1):
        exponents = torch.randint(min_scale, max_scale, (2,), generator=generator)
        noise = C.perlin_noise(size, (2 ** int(exponents[0]), 2 ** int(exponents[1])), generator)
        noise = C.rotate(noise.unsqueeze(0), _uniform(generator, -90, 90))[0]
        mask = (noise > threshold).float()
        if mask.any():
            break
    return mask


def check_probabilities(**values: float) -> None:
    """Each named value must be a probability (the synthesis' options, checked before any draw)."""
    for name, value in values.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")


def unit_range(name: str, bounds: Sequence[float]) -> tuple[float, float]:
    """(low, high) as floats with 0 <= low <= high <= 1, or a ValueError naming the option."""
    low, high = (float(v) for v in bounds)
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"{name} must be (low, high) with 0 <= low <= high <= 1, got {tuple(bounds)}")
    return low, high


class DraemSynthesis:
    """Turns a batch of normal images into (training images, augmented images, anomaly masks) as DRAEM trains."""

    def __init__(self, source: C.TextureSource, anomaly_probability: float = 0.5, rotation_probability: float = 0.3,
                 opacity_range: tuple[float, float] = (0.2, 1.0), empty_mask_retries: int = 0) -> None:
        check_probabilities(anomaly_probability=anomaly_probability, rotation_probability=rotation_probability)
        low, high = unit_range("opacity_range", opacity_range)
        if empty_mask_retries < 0:
            raise ValueError(f"empty_mask_retries must be >= 0, got {empty_mask_retries}")
        self.source, self.anomaly_probability = source, anomaly_probability
        self.rotation_probability, self.empty_mask_retries = rotation_probability, int(empty_mask_retries)
        self.image_share = (1.0 - high, 1.0 - low)  # drawn as the authors draw beta, the image's share

    def one(self, image: torch.Tensor, generator: torch.Generator
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(training image, augmented image, mask) for one normal image [3, H, W]."""
        size = (int(image.shape[-2]), int(image.shape[-1]))
        if float(torch.rand((), generator=generator)) < self.rotation_probability:
            image = C.rotate(image, _uniform(generator, -90, 90))  # the authors' rotation of the training image
        if float(torch.rand((), generator=generator)) >= self.anomaly_probability:
            return image, image, image.new_zeros(size)
        texture = augment_texture(self.source.sample(size, generator), generator)
        mask = rotated_perlin_mask(size, generator, empty_retries=self.empty_mask_retries)
        image_share = _uniform(generator, *self.image_share)
        return image, C.blend_anomaly(image, texture, mask, 1.0 - image_share), mask

    def __call__(self, images: torch.Tensor, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images [B, 3, H, W] in [0, 1] -> (training images [B, 3, H, W]: some rotated, the reconstruction's
        target; augmented [B, 3, H, W]; masks [B, H, W]); drawn on the CPU."""
        triples = [self.one(image, generator) for image in images.detach().float().cpu()]
        clean, augmented, masks = (torch.stack(parts) for parts in zip(*triples))
        return clean.to(images), augmented.to(images), masks.to(images.device)
