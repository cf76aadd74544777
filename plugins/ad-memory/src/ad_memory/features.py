"""What PaDiM, PatchCore and DFKDE share: a frozen backbone, multi-layer embeddings, seeded draws,
and buffers whose size is only known once the model has seen its training data."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ad_core.backbones import create_feature_extractor
from ad_core.model import AnomalyModel


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


def upsample_concat(features: Sequence[torch.Tensor], mode: str = "nearest") -> torch.Tensor:
    """Resize every map to the first (largest) one and concatenate along channels."""
    size = features[0].shape[-2:]
    resized = [features[0]]
    for feature in features[1:]:
        if feature.shape[-2:] != size:
            kwargs: dict[str, Any] = {} if mode == "nearest" else {"align_corners": False}
            feature = F.interpolate(feature, size=size, mode=mode, **kwargs)
        resized.append(feature)
    return torch.cat(resized, dim=1)


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


class MemoryBankModel(AnomalyModel):
    """Base for one-pass models: owns the frozen backbone.

    Buffers whose shape depends on the training data (memory bank, per-position statistics ...) are
    registered empty; `AnomalyModel` gives them the saved shape when a state dict is loaded.
    """

    def __init__(
        self,
        backbone: str,
        layers: Sequence[str | int],
        pretrained: bool = True,
        weights_file: str | None = None,
        backbone_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.backbone = FrozenBackbone(backbone, layers, pretrained, weights_file, backbone_dir)

    def set_buffer(self, name: str, value: torch.Tensor) -> None:
        """Replace a registered buffer with a new (contiguous) tensor on the buffer's device."""
        current = self._buffers[name]
        device = current.device if current is not None else value.device
        self._buffers[name] = value.detach().to(device).contiguous()
