"""DiffusionAD's synthetic anomalies (the authors' training data loader, `MVTecTrainDataset.perlin_synthetic`).

Per training image, with probability `anomaly_probability` (0.5; the rest stay normal with an empty mask):

- the mask: DRAEM's Perlin noise (2^k cells per axis, k in [0, 6)), rotated in [-90°, 90°] and thresholded at
  0.5, kept on the object's foreground when a foreground mask is given; redrawn up to 50 times while empty;
- the texture: with probability `self_augment_probability` the image itself (self-augmentation), else an image
  of the anomaly source (a texture folder, DTD in the paper; else the core's procedural fallback); either is
  altered by three distinct augmentations out of DRAEM's ten (`ad_recon.draem_synthesis.augment_texture`, the
  authors' list is the same), and the self-augmented image is then cut into 8 column strips and 8 row strips that
  are shuffled (`shuffle_strips`);
- the blend: inside the mask the image keeps a share β drawn in [0.2, 0.8) and the texture takes the rest, i.e.
  the texture's opacity 1 − β lies in (0.2, 0.8] (`opacity_range`).

The authors self-augment only their object categories (those whose foregrounds they extract), half of the time;
texture categories take DTD textures only. Every draw comes from the generator passed in.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ad_core.plugin_api import components as C
from ad_recon.draem_synthesis import augment_texture, check_probabilities, rotated_perlin_mask, unit_range

MASK_TRIES = 50  # Perlin draws before an empty mask is accepted (the authors' limit)
STRIPS = 8  # strips per side of the self-augmentation's shuffle


def _permuted(pieces: list[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    return [pieces[i] for i in torch.randperm(len(pieces), generator=generator).tolist()]


def shuffle_strips(image: torch.Tensor, generator: torch.Generator, strips: int = STRIPS) -> torch.Tensor:
    """The authors' self-augmentation shuffle of an image [C, H, W].

    Columns: cut into strips of width W // `strips` (the last one narrower when it does not divide); the strips at
    even positions, in a random order, are followed by those at odd positions, in a random order. Rows: cut the
    same way along H and put in a uniformly random order (the authors shuffle all row strips, then the even and
    the odd ones among themselves, which is again a uniform permutation).
    """
    height, width = image.shape[-2:]
    columns = list(image.split(max(width // strips, 1), dim=-1))
    columns = _permuted(columns[0::2], generator) + _permuted(columns[1::2], generator)
    rows = list(torch.cat(columns, dim=-1).split(max(height // strips, 1), dim=-2))
    return torch.cat(_permuted(rows, generator), dim=-2)


def anomaly_mask(size: tuple[int, int], generator: torch.Generator,
                 foreground: torch.Tensor | None) -> torch.Tensor:
    """A rotated Perlin mask [H, W] kept on the foreground, redrawn up to `MASK_TRIES` times while empty."""
    mask = torch.zeros(size)
    for _ in range(MASK_TRIES):
        mask = C.restrict_to_foreground(rotated_perlin_mask(size, generator), foreground)
        if mask.any():
            break
    return mask


class DiffusionADSynthesis:
    """Turns normal images into (augmented images, masks [B, 1, H, W], labels [B]) as DiffusionAD trains."""

    def __init__(self, source: C.TextureSource, foregrounds: C.ForegroundMasks,
                 anomaly_probability: float = 0.5, self_augment_probability: float = 0.0,
                 opacity_range: Sequence[float] = (0.2, 0.8)) -> None:
        check_probabilities(anomaly_probability=anomaly_probability, self_augment_probability=self_augment_probability)
        self.source, self.foregrounds = source, foregrounds
        self.anomaly_probability, self.self_augment_probability = anomaly_probability, self_augment_probability
        self.opacity_range = unit_range("opacity_range", opacity_range)

    def texture(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The anomaly's content [3, H, W]: the image self-augmented, or an augmented source texture."""
        if float(torch.rand((), generator=generator)) < self.self_augment_probability:
            return shuffle_strips(augment_texture(image, generator), generator)
        return augment_texture(self.source.sample(tuple(image.shape[-2:]), generator), generator)

    def one(self, image: torch.Tensor, path: str, generator: torch.Generator
            ) -> tuple[torch.Tensor, torch.Tensor]:
        """(augmented image, mask [H, W]) for one normal image [3, H, W] in [0, 1] and its file path."""
        size = (int(image.shape[-2]), int(image.shape[-1]))
        if float(torch.rand((), generator=generator)) >= self.anomaly_probability:
            return image, torch.zeros(size)
        mask = anomaly_mask(size, generator, self.foregrounds.load(path, size))
        texture = self.texture(image, generator)
        low, high = self.opacity_range
        opacity = high - (high - low) * float(torch.rand((), generator=generator))  # 1 − β, β ∈ [1 − high, 1 − low)
        return C.blend_anomaly(image, texture, mask, opacity), mask

    def __call__(self, images: torch.Tensor, paths: Sequence[str], generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images [B, 3, H, W] in [0, 1] (and their paths, for the foreground masks) -> (augmented, masks
        [B, 1, H, W], labels [B]: 1 where the mask is not empty); drawn on the CPU, returned on the images'
        device."""
        pixels = images.detach().float().cpu()
        pairs = [self.one(image, path, generator) for image, path in zip(pixels, paths, strict=True)]
        augmented, masks = (torch.stack(parts) for parts in zip(*pairs))
        masks = masks[:, None]
        return augmented.to(images), masks.to(images), (masks.flatten(1).amax(dim=1) > 0).long().to(images.device)
