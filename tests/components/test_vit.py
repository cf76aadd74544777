"""Transformer token maps: chosen blocks, prefix and register tokens dropped, optional final norm, any size."""

from __future__ import annotations

import pytest
import torch

from ad_core.components.backbone import BackboneConfig
from ad_core.components.vit import FrozenViT

TINY_VIT = "deit_tiny_distilled_patch16_224"
DINO_REG = "vit_small_patch14_reg4_dinov2"
TINY_DINO = {"depth": 3, "embed_dim": 32, "num_heads": 2}


def test_vit_is_pruned_and_reads_token_maps() -> None:
    torch.manual_seed(0)
    backbone = FrozenViT(BackboneConfig(TINY_VIT, (1, 3), pretrained=False), image_size=64)
    assert len(backbone.model.blocks) == 4 and backbone.channels == [192, 192] and backbone.strides == [16, 16]
    maps = backbone(torch.rand(2, 3, 64, 64))
    assert [tuple(m.shape) for m in maps] == [(2, 192, 4, 4)] * 2
    with pytest.raises(ValueError, match="built for 64x64"):
        backbone(torch.rand(1, 3, 96, 96))


def manual_maps(model: torch.nn.Module, images: torch.Tensor, block: int, norm: bool) -> torch.Tensor:
    """Tokens after `block` computed step by step, the 1 class + 4 register tokens removed by hand."""
    x = model._pos_embed(model.patch_embed(images))
    x = model.norm_pre(x)
    for blk in model.blocks[: block + 1]:
        x = blk(x)
    if norm:
        x = model.norm(x)
    patches = x[:, 5:]
    h, w = images.shape[-2] // 14, images.shape[-1] // 14
    return patches.reshape(images.shape[0], h, w, -1).permute(0, 3, 1, 2)


@pytest.mark.parametrize("norm", [True, False])
def test_dinov2_registers_are_dropped_and_any_patch_multiple_works(norm: bool) -> None:
    torch.manual_seed(0)
    vit = FrozenViT(BackboneConfig(DINO_REG, (0, 2), pretrained=False), norm=norm, **TINY_DINO)
    assert vit.model.num_prefix_tokens == 5 and vit.strides == [14, 14] and vit.channels == [32, 32]
    for size in ((56, 84), (98, 98)):  # position embedding interpolated to each grid
        images = torch.rand(2, 3, *size)
        maps = vit(images)
        assert maps[1].shape == (2, 32, size[0] // 14, size[1] // 14)
        with torch.no_grad():
            torch.testing.assert_close(maps[1], manual_maps(vit.model, images, 2, norm))
    with pytest.raises(ValueError, match="multiple of 14"):
        vit(torch.rand(1, 3, 50, 56))


def test_layers_must_be_block_indices() -> None:
    with pytest.raises(ValueError, match="block indices"):
        FrozenViT(BackboneConfig(TINY_VIT, ("layer1",), pretrained=False), image_size=64)


def test_tokens_keep_class_and_registers_first() -> None:
    torch.manual_seed(0)
    vit = FrozenViT(BackboneConfig(DINO_REG, (0, 2), pretrained=False), norm=False, **TINY_DINO)
    images = torch.rand(2, 3, 56, 84)
    tokens = vit.tokens(images)
    assert vit.num_prefix_tokens == 5 and tokens[1].shape == (2, 5 + 4 * 6, 32)
    with torch.no_grad():
        x = vit.model.norm_pre(vit.model._pos_embed(vit.model.patch_embed(images)))
        for blk in vit.model.blocks[:3]:
            x = blk(x)
    torch.testing.assert_close(tokens[1], x)
    patches = tokens[1][:, 5:].reshape(2, 4, 6, 32).permute(0, 3, 1, 2)
    torch.testing.assert_close(patches, vit(images)[1])


def test_tokens_of_a_vit_without_prefix_tokens() -> None:
    vit = FrozenViT(BackboneConfig(DINO_REG, (1,), pretrained=False), norm=False, class_token=False, reg_tokens=0,
                    global_pool="avg", **TINY_DINO)
    assert vit.num_prefix_tokens == 0 and vit.tokens(torch.rand(1, 3, 28, 28))[0].shape == (1, 4, 32)
