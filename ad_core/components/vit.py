"""Frozen vision transformers (ViT, DeiT, CaiT, DINOv2 with registers ...) read as token maps.

Foundation-model detectors read intermediate blocks of a transformer as [B, C, H/p, W/p] maps. The
class, distillation and register tokens carry no position, so they are dropped from the maps. Weights
are resolved offline exactly as for CNNs (`ad_core.backbones`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ad_core.backbones import create_vit
from ad_core.components.backbone import BackboneConfig


class FrozenViT(nn.Module):
    """A frozen timm transformer returning the token maps after the blocks named by `config.layers`.

    `image_size` builds the position embedding for that one size (random weights, or a file made for
    it) and rejects any other input. Without it the model keeps its own position embedding (the one a
    weights file holds, e.g. DINOv2's 37x37) and interpolates it to whatever input it gets, so any size
    that is a multiple of the patch size works. `norm` passes each map through the final norm, as most
    readers of intermediate blocks do. Same attributes as `FrozenBackbone` (`channels`, `strides`).
    """

    def __init__(self, config: BackboneConfig, image_size: int | None = None, norm: bool = True,
                 **timm_kwargs: Any) -> None:
        super().__init__()
        if not config.layers or not all(isinstance(b, int) for b in config.layers):
            raise ValueError(f"a transformer's layers are block indices (ints), got {list(config.layers)}")
        self.name = config.name
        self.blocks = [int(b) for b in config.layers]
        self.norm = bool(norm)
        size_kwargs: dict[str, Any] = {"dynamic_img_size": True} if image_size is None else {}
        self.model = create_vit(config.name, max(self.blocks), pretrained=config.pretrained,
                                weights_file=config.weights_file, backbone_dir=config.backbone_dir,
                                img_size=image_size, **size_kwargs, **timm_kwargs)
        self.model.requires_grad_(False)
        self.model.eval()
        patch = int(self.model.patch_embed.patch_size[0])
        self.image_size = None if image_size is None else (int(image_size), int(image_size))
        self.channels: list[int] = [int(self.model.embed_dim)] * len(self.blocks)
        self.strides: list[int] = [patch] * len(self.blocks)
        if image_size is not None and image_size % patch:
            raise ValueError(f"{config.name} needs an image size that is a multiple of its patch size {patch}, "
                             f"got {image_size}")

    def train(self, mode: bool = True) -> FrozenViT:
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        self._check_size(images)
        maps = self.model.forward_intermediates(images, indices=self.blocks, norm=self.norm, intermediates_only=True)
        return [m.contiguous() for m in maps]

    @torch.no_grad()
    def tokens(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The whole token sequences [B, P + h*w, C] after the chosen blocks, the `num_prefix_tokens` class and
        register tokens first: for decoders that process them with the patches (Dinomaly)."""
        self._check_size(images)
        prefixed = self.num_prefix_tokens > 0
        out = self.model.forward_intermediates(images, indices=self.blocks, norm=self.norm, intermediates_only=True,
                                               output_fmt="NLC", return_prefix_tokens=prefixed)
        if not prefixed:
            return [t.contiguous() for t in out]
        return [torch.cat([prefix, patches], dim=1) for patches, prefix in out]

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.model.num_prefix_tokens)

    def _check_size(self, images: torch.Tensor) -> None:
        size = tuple(images.shape[-2:])
        if self.image_size is not None and size != self.image_size:
            raise ValueError(f"{self.name} was built for {self.image_size[0]}x{self.image_size[1]} images (its "
                             f"position embedding is sized for them), got {size}")
        patch = self.strides[0]
        if size[0] % patch or size[1] % patch:
            raise ValueError(f"{self.name} reads {patch}x{patch} patches: the image size must be a multiple of "
                             f"{patch}, got {size[0]}x{size[1]}")
