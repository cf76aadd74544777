"""Image augmentations of EfficientAD's training, on [0,1] images [B,3,H,W], drawn from torch's global RNG
(seeded by the run), with torchvision's definitions of brightness, contrast and saturation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(GRAY_WEIGHTS, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)


def _blend(images: torch.Tensor, other: torch.Tensor, factor: float) -> torch.Tensor:
    return (factor * images + (1.0 - factor) * other).clamp(0.0, 1.0)


def adjust(image: torch.Tensor, kind: int, factor: float) -> torch.Tensor:
    """Brightness (0), contrast (1) or saturation (2) of one image [3,H,W] by `factor`."""
    x = image.unsqueeze(0)
    if kind == 0:
        out = _blend(x, torch.zeros_like(x), factor)
    elif kind == 1:
        out = _blend(x, grayscale(x).mean().expand_as(x), factor)
    else:
        out = _blend(x, grayscale(x).expand_as(x), factor)
    return out[0]


def _uniform(low: float, high: float) -> float:
    return float(torch.empty(()).uniform_(low, high))


def colour_jitter(images: torch.Tensor, strength: float = 0.2) -> torch.Tensor:
    """The paper's autoencoder augmentation: per image, one of brightness, contrast or saturation,
    with a factor drawn from U(1 - strength, 1 + strength)."""
    out = [adjust(img, int(torch.randint(3, ())), _uniform(1 - strength, 1 + strength)) for img in images]
    return torch.stack(out)


def centre_crop(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    top, left = (images.shape[-2] - height) // 2, (images.shape[-1] - width) // 2
    return images[..., top : top + height, left : left + width]


def zoom_centre(images: torch.Tensor, scale: float = 2.0) -> torch.Tensor:
    """Upscale by `scale` and keep the centre at the original size (the paper's penalty-image transform)."""
    h, w = images.shape[-2:]
    big = F.interpolate(images, size=(round(h * scale), round(w * scale)), mode="bilinear", align_corners=False)
    return centre_crop(big, h, w)


def random_grayscale(images: torch.Tensor, p: float) -> torch.Tensor:
    keep = (torch.rand(images.shape[0]) >= p).to(images.device).view(-1, 1, 1, 1)
    return torch.where(keep, images, grayscale(images).expand_as(images))


def strong_augment(images: torch.Tensor) -> torch.Tensor:
    """Training images made unlike the training distribution, the substitute for ImageNet penalty images:
    a random 90-degree rotation and flip, the paper's 2x zoom, channel shuffling, grayscale with p=0.3 and
    colour changes by factors in [0.5, 1.5]."""
    out = []
    for img in images:
        turns = int(torch.randint(1, 4, ()))
        if img.shape[-1] != img.shape[-2] and turns % 2:  # a quarter turn would swap a non-square image's sides
            turns = 2
        img = torch.rot90(img, turns, dims=(-2, -1))
        if torch.rand(()) < 0.5:
            img = img.flip(-1)
        img = img[torch.randperm(3).to(img.device)]
        for kind in torch.randperm(3).tolist():
            img = adjust(img, kind, _uniform(0.5, 1.5))
        out.append(img)
    return random_grayscale(zoom_centre(torch.stack(out)), 0.3)
