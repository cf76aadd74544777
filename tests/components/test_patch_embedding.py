"""PatchCore's patch embedding equals the authors' unfold-and-pool formulation, exactly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ad_core.components.patch_embedding import PatchEmbedder, adaptive_pool_plan


def reference_embedding(features: list[torch.Tensor], pretrain_dim: int, target_dim: int) -> torch.Tensor:
    """The authors' aggregation written literally: unfold 3x3, upsample the unfolded maps,
    adaptive-pool each flattened C*3*3 vector, stack layers, adaptive-pool again."""
    h, w = features[0].shape[-2:]
    per_layer = []
    for feature in features:
        b, c = feature.shape[:2]
        unfolded = F.unfold(feature, kernel_size=3, padding=1).view(b, c * 9, *feature.shape[-2:])
        if unfolded.shape[-2:] != (h, w):
            unfolded = F.interpolate(unfolded, size=(h, w), mode="bilinear", align_corners=False)
        vectors = unfolded.flatten(2).transpose(1, 2).reshape(-1, 1, c * 9)
        per_layer.append(F.adaptive_avg_pool1d(vectors, pretrain_dim)[:, 0])
    stacked = torch.stack(per_layer, 1).reshape(len(per_layer[0]), 1, -1)
    return F.adaptive_avg_pool1d(stacked, target_dim)[:, 0]


@pytest.mark.parametrize("channels,pretrain_dim,target_dim", [
    ((512, 1024), 1024, 1024),  # wide_resnet50_2 layer2+3, the default
    ((128, 256), 1024, 1024),  # resnet18
    ((64, 128, 256), 384, 300),  # uneven bins that straddle channels and layers
])
def test_patch_embedding_equals_authors_formulation(channels, pretrain_dim, target_dim) -> None:
    torch.manual_seed(0)
    features = [torch.randn(2, c, 8 >> i, 8 >> i) for i, c in enumerate(channels)]
    embedder = PatchEmbedder(channels, 3, pretrain_dim, target_dim)
    got, grid = embedder([f.contiguous(memory_format=torch.channels_last) for f in features])
    assert grid == (8, 8)
    torch.testing.assert_close(got, reference_embedding(features, pretrain_dim, target_dim), rtol=1e-5, atol=1e-5)


def test_adaptive_pool_plan_matches_torch() -> None:
    x = torch.randn(3, 1, 37)
    for size in (5, 16, 37, 60):
        index, weight = adaptive_pool_plan(37, size)
        got = (x[:, 0, index] * weight.float()).sum(-1)
        torch.testing.assert_close(got, F.adaptive_avg_pool1d(x, size)[:, 0])
