"""The reverse-distillation pair: the decoder mirrors the encoder's layout, the bottleneck fuses three scales."""

from __future__ import annotations

import pytest
import torch
from timm.models.resnet import BasicBlock, Bottleneck

from ad_core.components.reverse_decoder import (
    DECODER_BLOCKS,
    DecoderBasicBlock,
    OneClassBottleneck,
    ReverseDecoder,
    resnet_layout,
)


@pytest.mark.parametrize("backbone,layout", [
    ("resnet18", (BasicBlock, [2, 2, 2, 2], 64)),
    ("wide_resnet50_2", (Bottleneck, [3, 4, 6, 3], 128)),
])
def test_resnet_layout_reads_block_depths_and_width(backbone, layout) -> None:
    assert resnet_layout(backbone) == layout


def test_resnet_layout_rejects_a_non_resnet() -> None:
    with pytest.raises(ValueError, match="ResNet-style backbone"):
        resnet_layout("efficientnet_b0")


def test_bottleneck_and_decoder_round_trip_resnet18_shapes() -> None:
    """layer1-3 of a 64 px ResNet-18 image -> a 2x2 embedding with layer4's channels -> the three grids again."""
    torch.manual_seed(0)
    features = [torch.randn(2, 64, 16, 16), torch.randn(2, 128, 8, 8), torch.randn(2, 256, 4, 4)]
    bottleneck = OneClassBottleneck(BasicBlock, 1, 2, 64).eval()
    decoder = ReverseDecoder(DECODER_BLOCKS[BasicBlock], [2, 2, 2], 64).eval()
    assert isinstance(decoder.stages[0][0], DecoderBasicBlock)
    with torch.no_grad():
        embedding = bottleneck(features)
        decoded = decoder(embedding)
        assert embedding.shape == (2, 512, 2, 2)
        assert [d.shape for d in decoded] == [f.shape for f in features]
        for i in range(3):  # every scale reaches the embedding
            changed = [f.clone() for f in features]
            changed[i] += 1.0
            assert not torch.allclose(bottleneck(changed), embedding)
