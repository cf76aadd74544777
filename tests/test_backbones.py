"""Backbone weights: offline resolution for transformers, and downloads enabled only by the setting."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

import ad_core.backbones as backbones
from ad_core.backbones import MissingWeightsError, WeightsMismatchError, create_feature_extractor, create_vit
from ad_core.settings import set_globals, settings

TINY_VIT = "deit_tiny_distilled_patch16_224"


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


def test_importing_backbones_leaves_the_hub_offline_flag_alone() -> None:
    code = "import os; import ad_core.backbones; print(os.environ.get('HF_HUB_OFFLINE'))"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "ADCORE_ALLOW_DOWNLOAD")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None"


def test_allow_download_setting_reaches_timm(monkeypatch, tmp_path) -> None:
    """With the setting on and no local file, timm is asked for pretrained weights with the hub online."""
    import huggingface_hub.constants as hub_constants

    calls = []
    real_create_model = backbones.timm.create_model

    def fake_create_model(name, pretrained=False, **kwargs):
        if not pretrained:  # the layer-name probe builds on the meta device
            return real_create_model(name, pretrained=False, **kwargs)
        calls.append((os.environ.get("HF_HUB_OFFLINE"), hub_constants.HF_HUB_OFFLINE))
        raise RuntimeError("stop here")

    monkeypatch.setattr(backbones.timm, "create_model", fake_create_model)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    previous = settings.allow_download
    set_globals(allow_download=True)
    try:
        with pytest.raises(RuntimeError, match="stop here"):
            create_feature_extractor("resnet18", ["layer1"], pretrained=True, backbone_dir=tmp_path)
    finally:
        set_globals(allow_download=previous)
    assert calls == [("0", False)]
    assert os.environ["HF_HUB_OFFLINE"] == "1" and hub_constants.HF_HUB_OFFLINE is True  # restored afterwards
    set_globals(allow_download=False)
    try:
        with pytest.raises(MissingWeightsError):
            create_feature_extractor("resnet18", ["layer1"], pretrained=True, backbone_dir=tmp_path)
    finally:
        set_globals(allow_download=previous)
    assert len(calls) == 1  # no download attempted when the setting is off
