"""`create_model`: a whole timm model with the offline weight resolution of the feature extractors."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from ad_core.backbones import MissingWeightsError, WeightsMismatchError, create_model


def test_random_weights_need_no_file() -> None:
    model = create_model("resnet18", pretrained=False)
    assert model.fc.out_features == 1000


def test_missing_weights_name_the_file_expected(tmp_path) -> None:
    with pytest.raises(MissingWeightsError, match=r"resnet18\.safetensors"):
        create_model("resnet18", pretrained=True, backbone_dir=tmp_path, allow_download=False)


def test_weights_load_from_backbone_dir_key_by_key(tmp_path) -> None:
    torch.manual_seed(0)
    source = create_model("resnet18", pretrained=False)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "resnet18.safetensors"))
    loaded = create_model("resnet18", pretrained=True, backbone_dir=tmp_path)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    # A file for another network is refused, not half-loaded.
    save_file({"conv.weight": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(WeightsMismatchError, match="does not match"):
        create_model("resnet18", pretrained=True, weights_file=tmp_path / "other.safetensors")
