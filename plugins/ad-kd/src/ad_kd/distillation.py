"""Pieces the knowledge-distillation models share: a frozen teacher with a trainable student of the same
architecture, per-position feature distances, and the fusion of per-layer distance maps into one map.

Teacher features come from `ad_core.components.backbone.FrozenBackbone` (no gradients, eval mode always); the student
is a timm feature extractor of the same name and layers, randomly initialised, whose BatchNorm trains.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ad_core.backbones import create_feature_extractor
from ad_core.components.backbone import BackboneConfig

FUSIONS = ("product", "sum")


class TeacherStudent(nn.Module):
    """A frozen pretrained teacher and a trainable, randomly initialised student with the same layers."""

    def __init__(self, backbone: BackboneConfig) -> None:
        super().__init__()
        self.teacher = backbone.frozen()
        self.student = create_feature_extractor(backbone.name, list(backbone.layers), pretrained=False)

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(teacher features, student features), one tensor [B, C_l, h_l, w_l] per layer each."""
        return self.teacher(images), list(self.student(images))


def normalized_distance(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """[B, h, w] map of ½‖t/‖t‖ − s/‖s‖‖² over channels (features [B, C, h, w])."""
    return 0.5 * (F.normalize(teacher, dim=1) - F.normalize(student, dim=1)).pow(2).sum(1)


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[B, h, w] map of 1 − cos(a, b) over channels (features [B, C, h, w])."""
    return 1.0 - F.cosine_similarity(a, b, dim=1)


def fuse_maps(maps: Sequence[torch.Tensor], size: tuple[int, int] | torch.Size, fusion: str) -> torch.Tensor:
    """Upsample per-layer [B, h_l, w_l] maps bilinearly to `size` and combine them by product or sum."""
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    out = None
    for amap in maps:
        up = F.interpolate(amap.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False)
        if out is None:
            out = up
        else:
            out = out * up if fusion == "product" else out + up
    if out is None:
        raise ValueError("fuse_maps needs at least one map")
    return out[:, 0]
