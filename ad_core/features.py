"""Frozen timm feature extractors and the small helpers that models built on them share.

Every paradigm that reads a pretrained CNN (memory banks, flows, knowledge distillation ...) uses these,
so they live in the core rather than in one plugin.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ad_core.backbones import create_feature_extractor, create_vit


class FrozenBackbone(nn.Module):
    """A timm feature extractor that never trains: no gradients, BatchNorm statistics never move."""

    def __init__(
        self,
        name: str,
        layers: Sequence[str | int],
        pretrained: bool = True,
        weights_file: str | None = None,
        backbone_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.layers = list(layers)
        self.model = create_feature_extractor(
            name, self.layers, pretrained=pretrained, weights_file=weights_file, backbone_dir=backbone_dir
        )
        self.model.requires_grad_(False)
        self.model.eval()
        info = self.model.feature_info
        self.channels: list[int] = list(info.channels())
        self.strides: list[int] = list(info.reduction())

    def train(self, mode: bool = True) -> FrozenBackbone:
        # Whatever the caller asks, stay in eval mode: the memory-bank models rely on fixed BN statistics.
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        # channels_last lets oneDNN/cuDNN pick their fast convolution kernels (about 15-25% on CPU);
        # the weights stay in the default layout so the state dict remains contiguous for safetensors.
        features = self.model(images.contiguous(memory_format=torch.channels_last))
        return [f.contiguous() for f in features]


class FrozenViT(nn.Module):
    """A frozen timm vision transformer returning the token maps [B, C, H/p, W/p] after chosen blocks.

    Each map is the block's output through the transformer's final norm, prefix (class, distillation)
    tokens dropped; blocks after the last one asked for are not even kept. Same attributes as
    `FrozenBackbone` (`channels`, `strides`), so models can take either.
    """

    def __init__(
        self,
        name: str,
        blocks: Sequence[int],
        image_size: int,
        pretrained: bool = True,
        weights_file: str | None = None,
        backbone_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.blocks = [int(b) for b in blocks]
        self.model = create_vit(name, max(self.blocks), pretrained=pretrained, weights_file=weights_file,
                                backbone_dir=backbone_dir, img_size=image_size)
        self.model.requires_grad_(False)
        self.model.eval()
        patch = self.model.patch_embed.patch_size
        self.image_size = (int(image_size), int(image_size))
        self.channels: list[int] = [int(self.model.embed_dim)] * len(self.blocks)
        self.strides: list[int] = [int(patch[0])] * len(self.blocks)
        if image_size % self.strides[0]:
            raise ValueError(f"{name} needs an image size that is a multiple of its patch size {self.strides[0]}, "
                             f"got {image_size}")

    def train(self, mode: bool = True) -> FrozenViT:
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        if tuple(images.shape[-2:]) != self.image_size:
            raise ValueError(f"{self.name} was built for {self.image_size[0]}x{self.image_size[1]} images (its "
                             f"position embedding is sized for them), got {tuple(images.shape[-2:])}")
        maps = self.model.forward_intermediates(images, indices=self.blocks, norm=True, intermediates_only=True)
        return [m.contiguous() for m in maps]


# Pixels sent through the backbone at once: bounds activation memory whatever the batch size
# (4 images of 256x256); throughput on a CPU is the same as with whole batches.
CHUNK_PIXELS = 4 * 256 * 256


def image_chunks(images: torch.Tensor, max_pixels: int = CHUNK_PIXELS) -> tuple[torch.Tensor, ...]:
    """Split a batch into chunks of at most `max_pixels` pixels (at least one image each)."""
    per_chunk = max(1, max_pixels // (images.shape[-1] * images.shape[-2]))
    return images.split(per_chunk)


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator so random draws depend on the model's own seed, not on global RNG state."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(seed))
    return generator


def random_subset(total: int, count: int, seed: int) -> torch.Tensor:
    """`count` distinct sorted indices out of `total`, drawn from `seed` (all of them if count >= total)."""
    if count >= total:
        return torch.arange(total)
    perm = torch.randperm(total, generator=seeded_generator(seed))
    return perm[:count].sort().values
