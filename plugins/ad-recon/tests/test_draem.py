"""DRAEM: the networks' shapes, the loss and the pooled score against direct computation, the synthesis, and the
errors for bad settings and bad texture folders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ad_core.components.losses import focal_loss, ssim_loss
from ad_core.components.synthesis import TextureSource
from ad_recon.draem import Draem, pooled_max
from ad_recon.draem_synthesis import DraemSynthesis, augment_texture, rotated_perlin_mask


def tiny(**kwargs) -> Draem:
    torch.manual_seed(0)
    return Draem(image_size=64, reconstructive_width=4, discriminative_width=4, **kwargs)


def test_networks_keep_the_image_size_and_segment_two_classes() -> None:
    model = tiny()
    reconstruction, logits = model(torch.rand(2, 3, 32, 64))
    assert reconstruction.shape == (2, 3, 32, 64) and logits.shape == (2, 2, 32, 64)
    assert model.discriminative.encoder.blocks[0][0].in_channels == 6


def test_loss_is_l2_plus_ssim_plus_focal() -> None:
    model = tiny()
    images, augmented = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    masks = (torch.rand(2, 32, 32) > 0.7).float()
    total, parts = model.loss(images, augmented, masks)
    reconstruction, logits = model(augmented)
    expected = (F.mse_loss(reconstruction, images) + ssim_loss(reconstruction, images)
                + focal_loss(torch.softmax(logits, 1), masks))
    torch.testing.assert_close(total, expected)
    assert set(parts) == {"l2", "ssim", "focal"}


def test_score_is_the_max_of_the_21_px_average_pooled_map() -> None:
    amap = torch.zeros(1, 64, 64)
    amap[0, 30, 30] = 1.0  # one hot pixel: its 21x21 mean is 1/441
    torch.testing.assert_close(pooled_max(amap, 21), torch.tensor([1 / 441]))
    torch.testing.assert_close(pooled_max(amap, 1), torch.tensor([1.0]))  # anomalib's plain maximum
    block = torch.zeros(1, 64, 64)
    block[0, 10:31, 10:31] = 0.5
    torch.testing.assert_close(pooled_max(block, 21), torch.tensor([0.5]))


def test_prediction_map_is_the_anomalous_class_probability() -> None:
    model = tiny().eval()
    model.mark_fitted()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        _, logits = model(images)
    prediction = model.predict(images)
    torch.testing.assert_close(prediction.anomaly_map, torch.softmax(logits, 1)[:, 1])
    torch.testing.assert_close(prediction.score, pooled_max(prediction.anomaly_map, 21))


def test_synthesis_changes_images_only_inside_binary_masks_and_is_seeded() -> None:
    images = torch.rand(6, 3, 64, 64)
    synthesis = DraemSynthesis(TextureSource(None), anomaly_probability=1.0)
    augmented, masks = synthesis(images, torch.Generator().manual_seed(3))
    assert set(masks.unique().tolist()) <= {0.0, 1.0} and masks.sum() > 0
    outside = (masks == 0).unsqueeze(1).expand_as(images)
    assert torch.equal(augmented[outside], images[outside])
    assert not torch.equal(augmented, images)
    again, masks_again = synthesis(images, torch.Generator().manual_seed(3))
    assert torch.equal(again, augmented) and torch.equal(masks_again, masks)
    clean, empty = DraemSynthesis(TextureSource(None), anomaly_probability=0.0)(images, torch.Generator())
    assert torch.equal(clean, images) and empty.sum() == 0


def test_texture_augmentation_and_masks_stay_in_range() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        texture = augment_texture(torch.rand(3, 32, 32, generator=g), g)
        assert texture.shape == (3, 32, 32) and texture.min() >= 0 and texture.max() <= 1
    mask = rotated_perlin_mask((32, 48), g)
    assert mask.shape == (32, 48) and set(mask.unique().tolist()) <= {0.0, 1.0}


def test_texture_folder_is_used(tmp_path: Path) -> None:
    Image.new("RGB", (16, 16), (255, 0, 0)).save(tmp_path / "red.png")
    synthesis = DraemSynthesis(TextureSource(tmp_path), anomaly_probability=1.0)
    assert not synthesis.source.procedural
    augmented, masks = synthesis(torch.zeros(4, 3, 32, 32), torch.Generator().manual_seed(0))
    assert augmented.shape == (4, 3, 32, 32) and masks.sum() > 0


def test_normalize_is_refused() -> None:
    with pytest.raises(ValueError, match="normalize=True"):
        tiny(normalize=True)


def test_sizes_the_network_cannot_take_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="multiples of 32"):
        Draem(image_size=48)
    with pytest.raises(ValueError, match="at least 32"):
        tiny()(torch.rand(1, 3, 16, 16))


@pytest.mark.parametrize("case", ["missing", "empty", "unreadable"])
def test_bad_anomaly_source_dir_is_a_clear_error(tmp_path: Path, case: str) -> None:
    folder = tmp_path / "textures"
    if case != "missing":
        folder.mkdir()
    if case == "unreadable":
        (folder / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="anomaly_source_dir") as info:
        tiny(anomaly_source_dir=str(folder))
    assert str(folder) in str(info.value)
