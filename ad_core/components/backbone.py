"""Frozen timm CNN feature extractors, the backbone argument bundle, and the helpers models built on them share.

Every paradigm that reads a pretrained CNN (memory banks, flows, knowledge distillation ...) uses these,
so they live in the core rather than in one plugin.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ad_core.backbones import create_feature_extractor


@dataclass(frozen=True)
class BackboneConfig:
    """Which backbone a model reads and where its weights come from, as one value.

    Models keep `backbone`, `layers`, `pretrained`, `weights_file`, `backbone_dir` as keyword
    hyperparameters (specs and checkpoints name them) and bundle them here once, instead of threading
    five arguments through every constructor.
    """

    name: str
    layers: tuple[str | int, ...] = ()
    pretrained: bool = True
    weights_file: str | Path | None = None
    backbone_dir: str | Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))

    def frozen(self) -> FrozenBackbone:
        """The frozen feature extractor for these layers."""
        return FrozenBackbone(self)


class FrozenBackbone(nn.Module):
    """A timm feature extractor that never trains: no gradients, BatchNorm statistics never move."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.config = config
        self.name = config.name
        self.layers = list(config.layers)
        self.model = create_feature_extractor(config.name, self.layers, pretrained=config.pretrained,
                                              weights_file=config.weights_file, backbone_dir=config.backbone_dir)
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


# Pixels sent through the backbone at once: bounds activation memory whatever the batch size
# (4 images of 256x256); throughput on a CPU is the same as with whole batches.
CHUNK_PIXELS = 4 * 256 * 256


def image_chunks(images: torch.Tensor, max_pixels: int = CHUNK_PIXELS) -> tuple[torch.Tensor, ...]:
    """Split a batch into chunks of at most `max_pixels` pixels (at least one image each).

    An exported graph takes the whole batch (its batch size may be dynamic; the caller sizes its batches)."""
    if torch.onnx.is_in_onnx_export():
        return (images,)
    per_chunk = max(1, max_pixels // (images.shape[-1] * images.shape[-2]))
    return images.split(per_chunk)
