"""The backbone bundle builds a frozen extractor; chunking bounds the pixels sent at once."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ad_core.components.backbone import BackboneConfig, FrozenBackbone, image_chunks


def test_config_is_a_frozen_value_with_tuple_layers() -> None:
    config = BackboneConfig("resnet18", ["layer1", "layer2"], pretrained=False)
    assert config.layers == ("layer1", "layer2")
    assert config == BackboneConfig("resnet18", ("layer1", "layer2"), False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.name = "resnet50"  # type: ignore[misc]


def test_frozen_backbone_gives_the_layers_and_never_trains() -> None:
    torch.manual_seed(0)
    backbone = BackboneConfig("resnet18", ("layer1", "layer2"), pretrained=False).frozen()
    assert isinstance(backbone, FrozenBackbone)
    assert backbone.channels == [64, 128] and backbone.strides == [4, 8]
    backbone.train()
    assert not backbone.training and not backbone.model.training
    assert not any(p.requires_grad for p in backbone.parameters())
    features = backbone(torch.rand(2, 3, 32, 32))
    assert [tuple(f.shape) for f in features] == [(2, 64, 8, 8), (2, 128, 4, 4)]
    assert all(f.is_contiguous() for f in features)


def test_image_chunks_bound_pixels_but_keep_at_least_one_image() -> None:
    images = torch.zeros(5, 3, 10, 10)
    assert [len(c) for c in image_chunks(images, max_pixels=200)] == [2, 2, 1]
    assert [len(c) for c in image_chunks(images, max_pixels=50)] == [1] * 5
