"""DRAEM: the networks' shapes, the loss and the pooled score against direct computation, the synthesis, and the
errors for bad settings and bad texture folders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ad_core.components.losses import focal_loss, ssim_loss
from ad_core.components.synthesis import TextureSource, hsv_to_rgb, rgb_to_hsv
from ad_recon.draem import Draem, pooled_max
from ad_recon.draem_synthesis import (
    DraemSynthesis,
    augment_texture,
    rotated_perlin_mask,
    shift_hue_and_saturation,
)


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
    amap = torch.rand(3, 40, 72, generator=torch.Generator().manual_seed(0)) ** 4  # separable sums = square pooling
    square = F.avg_pool2d(amap.unsqueeze(1), 21, stride=1, padding=10).squeeze(1).amax(dim=(1, 2))
    torch.testing.assert_close(pooled_max(amap, 21), square, rtol=1e-5, atol=0)


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
    synthesis = DraemSynthesis(TextureSource(None), anomaly_probability=1.0, rotation_probability=0.0)
    clean, augmented, masks = synthesis(images, torch.Generator().manual_seed(3))
    assert torch.equal(clean, images)
    assert set(masks.unique().tolist()) <= {0.0, 1.0} and masks.sum() > 0
    outside = (masks == 0).unsqueeze(1).expand_as(images)
    assert torch.equal(augmented[outside], images[outside])
    assert not torch.equal(augmented, images)
    _, again, masks_again = synthesis(images, torch.Generator().manual_seed(3))
    assert torch.equal(again, augmented) and torch.equal(masks_again, masks)
    normal = DraemSynthesis(TextureSource(None), anomaly_probability=0.0, rotation_probability=0.0)
    _, unchanged, empty = normal(images, torch.Generator())
    assert torch.equal(unchanged, images) and empty.sum() == 0


def test_training_images_are_rotated_with_the_given_probability_and_stay_the_target() -> None:
    images = torch.rand(40, 3, 32, 32)
    synthesis = DraemSynthesis(TextureSource(None), anomaly_probability=0.0, rotation_probability=0.3)
    clean, augmented, _ = synthesis(images, torch.Generator().manual_seed(0))
    assert torch.equal(clean, augmented)  # no anomaly: the input is the (possibly rotated) target
    rotated = [i for i in range(40) if not torch.equal(clean[i], images[i])]
    assert 4 <= len(rotated) <= 20  # about 30 % of 40
    corner = clean[rotated][:, :, 0, 0]  # a rotation of more than a few degrees leaves the corner outside the frame
    assert (corner == 0).float().mean() > 0.5
    never = DraemSynthesis(TextureSource(None), anomaly_probability=0.0, rotation_probability=0.0)
    assert torch.equal(never(images, torch.Generator())[0], images)
    with pytest.raises(ValueError, match="rotation_probability"):
        DraemSynthesis(TextureSource(None), rotation_probability=1.5)


def test_hue_shift_rotates_the_colour_wheel_and_saturation_shift_is_additive() -> None:
    red = torch.zeros(3, 2, 2)
    red[0] = 1.0
    torch.testing.assert_close(rgb_to_hsv(red)[:, 0, 0], torch.tensor([0.0, 1.0, 1.0]))
    green = shift_hue_and_saturation(red, 255 / 3, 0.0)  # 255 units = 360 degrees: +120 degrees is green
    torch.testing.assert_close(green[:, 0, 0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-5, rtol=0)
    pale = shift_hue_and_saturation(red, 0.0, -255 / 2)  # saturation 1 -> 0.5: (1, 0.5, 0.5)
    torch.testing.assert_close(pale[:, 0, 0], torch.tensor([1.0, 0.5, 0.5]), atol=1e-5, rtol=0)
    image = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(image)), image, atol=1e-5, rtol=0)


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
    _, augmented, masks = synthesis(torch.zeros(4, 3, 32, 32), torch.Generator().manual_seed(0))
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


# -- anomalib 2.7's regime as options (focal_alpha, empty_mask_retries, opacity_range) ---------------------------

def test_default_mask_draws_are_those_of_one_rotated_perlin_mask() -> None:
    from ad_core.components.synthesis import perlin_noise, rotate

    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        mask = rotated_perlin_mask((32, 32), g)
        ref = torch.Generator().manual_seed(seed)  # the single draw, written out: exponents, noise, angle
        exponents = torch.randint(0, 6, (2,), generator=ref)
        noise = perlin_noise((32, 32), (2 ** int(exponents[0]), 2 ** int(exponents[1])), ref)
        noise = rotate(noise.unsqueeze(0), -90 + 180 * float(torch.rand((), generator=ref)))[0]
        assert torch.equal(mask, (noise > 0.5).float())
        assert torch.equal(g.get_state(), ref.get_state())  # nothing else drawn


def test_empty_mask_retries_redraw_an_empty_mask_only() -> None:
    empty_seeds = [s for s in range(200) if rotated_perlin_mask((32, 32), torch.Generator().manual_seed(s)).sum() == 0]
    assert empty_seeds, "no seed gives an empty first mask"
    for seed in empty_seeds[:3]:
        assert rotated_perlin_mask((32, 32), torch.Generator().manual_seed(seed), empty_retries=10).sum() > 0
    full = next(s for s in range(200) if s not in empty_seeds)
    once = rotated_perlin_mask((32, 32), torch.Generator().manual_seed(full))
    assert torch.equal(rotated_perlin_mask((32, 32), torch.Generator().manual_seed(full), empty_retries=10), once)
    with pytest.raises(ValueError, match="empty_retries"):
        rotated_perlin_mask((32, 32), torch.Generator(), empty_retries=-1)


def test_retries_give_every_anomalous_image_an_anomaly() -> None:
    images = torch.rand(40, 3, 32, 32)
    counts = {}
    for retries in (0, 10):
        synthesis = DraemSynthesis(TextureSource(None), anomaly_probability=1.0, rotation_probability=0.0,
                                   empty_mask_retries=retries)
        _, _, masks = synthesis(images, torch.Generator().manual_seed(0))
        counts[retries] = int((masks.flatten(1).sum(1) > 0).sum())
    assert counts[0] < 40 and counts[10] == 40


def test_opacity_range_sets_the_texture_share() -> None:
    dark, bright = torch.zeros(2, 3, 32, 32), torch.ones(2, 3, 32, 32)
    outputs = {}
    for opacity in ((1.0, 1.0), (0.2, 1.0)):
        synthesis = DraemSynthesis(TextureSource(None), anomaly_probability=1.0, rotation_probability=0.0,
                                   opacity_range=opacity, empty_mask_retries=10)
        outputs[opacity] = [synthesis(x, torch.Generator().manual_seed(1))[1:] for x in (dark, bright)]
    (on_dark, mask), (on_bright, _) = outputs[(1.0, 1.0)]
    inside = mask.bool().unsqueeze(1).expand_as(on_dark)
    assert torch.equal(on_dark[inside], on_bright[inside])  # opacity 1: the texture replaces the image
    (on_dark, _), (on_bright, _) = outputs[(0.2, 1.0)]
    assert not torch.equal(on_dark[inside], on_bright[inside])  # the authors' range keeps part of the image
    with pytest.raises(ValueError, match="opacity_range"):
        DraemSynthesis(TextureSource(None), opacity_range=(0.8, 0.2))
    with pytest.raises(ValueError, match="opacity_range"):
        tiny(opacity_range=0.5)


def test_default_synthesis_equals_the_authors_settings_spelled_out() -> None:
    images = torch.rand(8, 3, 32, 32)
    default = DraemSynthesis(TextureSource(None))(images, torch.Generator().manual_seed(5))
    spelled = DraemSynthesis(TextureSource(None), 0.5, rotation_probability=0.3, opacity_range=(0.2, 1.0),
                             empty_mask_retries=0)(images, torch.Generator().manual_seed(5))
    assert all(torch.equal(a, b) for a, b in zip(default, spelled))
    assert tiny().synthesis.image_share == (0.0, 0.8)  # the authors' beta in [0, 0.8)
    regime = tiny(opacity_range=[0.1, 1.0], empty_mask_retries=10).synthesis  # the model hands its options on
    assert regime.image_share == pytest.approx((0.0, 0.9)) and regime.empty_mask_retries == 10


def test_focal_alpha_one_ignores_the_background_as_anomalib() -> None:
    probabilities = torch.softmax(torch.randn(2, 2, 16, 16, generator=torch.Generator().manual_seed(0)), 1)
    background = torch.zeros(2, 16, 16)
    assert tiny().focal(probabilities, background) > 0
    assert tiny(focal_alpha=1.0).focal(probabilities, background) == 0
    masks = (torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(1)) > 0.7).float()
    kornia_form = focal_loss(probabilities, masks, alpha=0.25) / 2  # mean over classes x pixels
    torch.testing.assert_close(tiny(focal_alpha=0.25).focal(probabilities, masks), kornia_form)
    images = torch.rand(2, 3, 32, 32)
    _, parts = tiny(focal_alpha=1.0).loss(images, images, torch.zeros(2, 32, 32))
    assert parts["focal"] == 0 and parts["l2"] > 0
    with pytest.raises(ValueError, match="focal_alpha"):
        tiny(focal_alpha=2.0)
