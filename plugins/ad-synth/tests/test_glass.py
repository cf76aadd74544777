"""GLASS's pieces against direct computation: the truncated projection, the spectral rule, LAS masks, the GAS band."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ad_core.testing import fit_tiny
from ad_synth.glass import Glass, las_mask, spectral_distribution, truncated_projection

TINY = {"backbone": "resnet18", "embed_dim": 64, "discriminator_hidden": 32, "ascent_steps": 5, "batch_size": 4,
        "num_epochs": 1}


def test_truncated_projection_clips_distances_along_the_same_ray() -> None:
    anchors = torch.randn(6, 4)
    offsets = torch.randn(6, 4)
    offsets = offsets / offsets.norm(dim=1, keepdim=True) * torch.tensor([0.1, 0.5, 0.7, 1.0, 1.5, 3.0]).view(-1, 1)
    projected = truncated_projection(anchors + offsets, anchors, 0.5, 1.0)
    moved = projected - anchors
    torch.testing.assert_close(moved.norm(dim=1), torch.tensor([0.5, 0.5, 0.7, 1.0, 1.0, 1.0]))
    torch.testing.assert_close(moved / moved.norm(dim=1, keepdim=True), offsets / offsets.norm(dim=1, keepdim=True))


def test_spectral_rule_tells_an_object_from_a_texture() -> None:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 128), torch.linspace(-1, 1, 128), indexing="ij")
    disc = ((xx**2 + yy**2) < 0.3).float().expand(3, -1, -1)  # a centred object on a dark background
    assert spectral_distribution(disc) == "hypersphere"
    assert spectral_distribution(torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(0))) == "manifold"
    assert spectral_distribution(torch.full((3, 128, 128), 0.5)) == "manifold"  # only the DC point is bright


def test_las_masks_are_never_empty_and_stay_on_the_foreground() -> None:
    generator = torch.Generator().manual_seed(0)
    foreground = torch.zeros(32, 32)
    foreground[8:24, 8:24] = 1
    for _ in range(10):
        mask = las_mask((32, 32), generator, foreground)
        assert mask.any() and not (mask * (1 - foreground)).any()


@pytest.mark.parametrize("hypersphere", [False, True])
def test_gas_features_end_in_the_projection_band(hypersphere: bool) -> None:
    model = Glass(backbone="resnet18", pretrained=False, embed_dim=16, discriminator_hidden=8, ascent_steps=5).train()
    model.hypersphere.fill_(hypersphere)
    generator = torch.Generator().manual_seed(0)
    true_feats, fake_feats = torch.randn(40, 16, generator=generator), torch.randn(40, 16, generator=generator)
    center = true_feats.mean(0).expand(40, -1)
    masks = (torch.rand(40, generator=generator) > 0.5).float()
    out = model.glass_loss(true_feats, fake_feats, masks, 0.015 * torch.randn(40, 16, generator=generator), center)
    anchors = center if hypersphere else true_feats
    distance = (out["gas_features"] - anchors).norm(dim=1)
    if hypersphere:  # r: the 0.75 quantile of the normal points' distances to the centre
        normal = masks == 0
        r = torch.quantile(torch.cat([fake_feats[normal] - center[normal], true_feats - center]).norm(dim=1), 0.75)
        low, high = r, 2 * r
    else:
        low, high = 0.5, 1.0
    assert bool((distance >= low - 1e-4).all() and (distance <= high + 1e-4).all())
    assert torch.isclose(out["loss"], out["true_loss"] + out["gaus_loss"] + out["focal_loss"])


def test_distribution_option_overrides_the_rule_and_is_reported() -> None:
    detector = fit_tiny("glass", {**TINY, "distribution": "hypersphere"}, 32, "weave", 4, 0)
    assert bool(detector.model.hypersphere)
    assert any("hypersphere (chosen by the option)" in note for note in detector.model.fit_notes())
    assert any("procedural" in note for note in detector.model.fit_notes())


def test_bad_options_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="distribution must be one of"):
        Glass(backbone="resnet18", pretrained=False, distribution="sphere")
    with pytest.raises(ValueError, match="foreground_dir"):
        Glass(backbone="resnet18", pretrained=False, foreground_dir=str(tmp_path / "missing"))
