"""Transformer backbones: offline weight resolution, pruning after the last block used, token maps."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from ad_core.backbones import MissingWeightsError, WeightsMismatchError, create_vit
from ad_core.features import FrozenViT

TINY_VIT = "deit_tiny_distilled_patch16_224"


def test_vit_is_pruned_and_reads_token_maps() -> None:
    torch.manual_seed(0)
    backbone = FrozenViT(TINY_VIT, [1, 3], image_size=64, pretrained=False)
    assert len(backbone.model.blocks) == 4 and backbone.channels == [192, 192] and backbone.strides == [16, 16]
    maps = backbone(torch.rand(2, 3, 64, 64))
    assert [tuple(m.shape) for m in maps] == [(2, 192, 4, 4)] * 2
    with pytest.raises(ValueError, match="built for 64x64"):
        backbone(torch.rand(1, 3, 96, 96))


def test_vit_weights_file_loads_and_missing_weights_are_clear(tmp_path) -> None:
    torch.manual_seed(0)
    source = create_vit(TINY_VIT, 11, pretrained=False, img_size=64)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / f"{TINY_VIT}.safetensors"))
    loaded = create_vit(TINY_VIT, 2, backbone_dir=tmp_path, img_size=64).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = source.eval().forward_intermediates(x, indices=[2], norm=True, intermediates_only=True)[0]
        got = loaded.forward_intermediates(x, indices=[2], norm=True, intermediates_only=True)[0]
    assert torch.equal(expected, got)
    with pytest.raises(WeightsMismatchError, match="pos_embed"):
        create_vit(TINY_VIT, 2, backbone_dir=tmp_path, img_size=96)  # position embedding of another size
    with pytest.raises(MissingWeightsError, match=f"{TINY_VIT}.safetensors"):
        create_vit(TINY_VIT, 2, backbone_dir=tmp_path / "empty", allow_download=False)


def test_vit_block_out_of_range_is_clear() -> None:
    with pytest.raises(ValueError, match="blocks 0..11"):
        create_vit(TINY_VIT, 12, pretrained=False)
