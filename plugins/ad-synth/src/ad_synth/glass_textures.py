"""GLASS's texture augmentation for LAS (the authors' `rand_augmenter`, datasets/mvtec.py of cqylunlun/GLASS).

Each LAS texture is altered by three distinct operations drawn from nine, applied in the order drawn: contrast,
brightness, saturation with hue (factors in [0.8, 1.2], hue turned by up to ±0.2 of the colour wheel), horizontal
flip, vertical flip, grey, autocontrast, equalisation, rotation in [-45°, 45°]. The operations follow torchvision's
definitions (the authors' library); every parameter is drawn from the generator given.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ad_core.plugin_api import components

Operation = Callable[[torch.Tensor], torch.Tensor]


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def adjust_contrast(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with the mean grey level (torchvision's adjust_contrast)."""
    return (factor * image + (1 - factor) * components.grayscale(image).mean()).clamp(0, 1)


def adjust_saturation(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with the grey image (torchvision's adjust_saturation)."""
    return (factor * image + (1 - factor) * components.grayscale(image)).clamp(0, 1)


def las_texture_operations(generator: torch.Generator) -> list[Operation]:
    """The nine operations of the authors' list, their parameters drawn now (torchvision's ColorJitter draws the
    order of saturation and hue, so that is drawn too)."""
    contrast, brightness, saturation = (_uniform(generator, 0.8, 1.2) for _ in range(3))
    hue_degrees, angle = 360 * _uniform(generator, -0.2, 0.2), _uniform(generator, -45, 45)
    saturation_first = float(torch.rand((), generator=generator)) < 0.5

    def saturation_and_hue(image: torch.Tensor) -> torch.Tensor:
        if saturation_first:
            return components.shift_hue(adjust_saturation(image, saturation), hue_degrees)
        return adjust_saturation(components.shift_hue(image, hue_degrees), saturation)

    return [
        lambda x: adjust_contrast(x, contrast),
        lambda x: (x * brightness).clamp(0, 1),
        saturation_and_hue,
        lambda x: x.flip(-1),
        lambda x: x.flip(-2),
        lambda x: components.grayscale(x).expand_as(x),
        components.autocontrast,
        components.equalize,
        lambda x: components.rotate(x, angle),
    ]


def augment_las_texture(texture: torch.Tensor, generator: torch.Generator, count: int = 3) -> torch.Tensor:
    """`texture` [3, H, W] in [0, 1] altered by `count` distinct operations of the list, in the order drawn."""
    operations = las_texture_operations(generator)
    for index in torch.randperm(len(operations), generator=generator)[:count].tolist():
        texture = operations[index](texture)
    return texture.clamp(0, 1).contiguous()
