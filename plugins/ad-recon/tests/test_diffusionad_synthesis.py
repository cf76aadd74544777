"""DiffusionAD's synthetic anomalies: the strip shuffle of the self-augmentation, masks on the foreground,
the choice of texture, changes only inside the masks, the authors' self-augmentation default, and training reading
each image's foreground from its path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ad_core.plugin_api import Batch, StepContext, seed_everything
from ad_core.plugin_api import components as C
from ad_recon.diffusionad import DiffusionAD
from ad_recon.diffusionad_synthesis import DiffusionADSynthesis, anomaly_mask, shuffle_strips
from ad_recon.draem_synthesis import augment_texture

TINY = {"base_channels": 32, "channel_mults": [1, 2], "num_res_blocks": 1, "attention_downsample": [],
        "num_heads": 2, "seg_base_channels": 4}


def synthesis(**kwargs) -> DiffusionADSynthesis:
    return DiffusionADSynthesis(C.TextureSource(None), C.ForegroundMasks(None), **kwargs)


def test_strip_shuffle_puts_even_then_odd_columns_and_permutes_whole_rows() -> None:
    # pixel (y, x) holds its row strip (channel 0) and column strip (channel 1): 4-pixel strips of a 32 x 32 image
    rows, cols = torch.meshgrid(torch.arange(32) // 4, torch.arange(32) // 4, indexing="ij")
    image = torch.stack((rows, cols, torch.zeros_like(rows))).float()
    out = shuffle_strips(image, torch.Generator().manual_seed(0))
    strip_cols = out[1, 0, ::4].long().tolist()  # the column strip at each output column strip
    assert sorted(strip_cols[:4]) == [0, 2, 4, 6] and sorted(strip_cols[4:]) == [1, 3, 5, 7]
    strip_rows = out[0, ::4, 0].long().tolist()
    assert sorted(strip_rows) == list(range(8)) and strip_rows != list(range(8))
    # every strip moves whole: inside an output cell all pixels come from one source cell
    cells = out[:2].reshape(2, 8, 4, 8, 4)
    assert torch.equal(cells, cells[:, :, :1, :, :1].expand_as(cells))
    # a side that 8 does not divide: strips of width // 8 and a narrower last one, nothing lost
    odd = torch.rand(3, 20, 36)
    assert sorted(shuffle_strips(odd, torch.Generator().manual_seed(1)).flatten().tolist()) == sorted(
        odd.flatten().tolist())


def test_masks_stay_on_the_foreground_and_are_redrawn_while_empty() -> None:
    foreground = torch.zeros(32, 32)
    foreground[8:20, 4:28] = 1
    generator = torch.Generator().manual_seed(2)
    for _ in range(10):
        mask = anomaly_mask((32, 32), generator, foreground)
        assert mask.any() and not (mask * (1 - foreground)).any()
    assert not anomaly_mask((32, 32), generator, torch.zeros(32, 32)).any()  # no foreground: gives up, empty


def test_the_texture_is_the_image_self_augmented_or_a_source_texture() -> None:
    image = torch.rand(3, 32, 32)
    g = torch.Generator().manual_seed(5)
    torch.rand((), generator=g)  # the self-augmentation draw
    expected_self = shuffle_strips(augment_texture(image, g), g)
    assert torch.equal(synthesis(self_augment_probability=1.0).texture(image, torch.Generator().manual_seed(5)),
                       expected_self)
    g = torch.Generator().manual_seed(5)
    torch.rand((), generator=g)
    expected_source = augment_texture(C.procedural_texture((32, 32), g), g)
    assert torch.equal(synthesis(self_augment_probability=0.0).texture(image, torch.Generator().manual_seed(5)),
                       expected_source)


def test_anomalies_change_images_only_inside_non_empty_masks_on_the_foreground(tmp_path) -> None:
    pixels = np.zeros((32, 32), dtype=np.uint8)
    pixels[4:28, 10:30] = 255
    Image.fromarray(pixels).save(tmp_path / "a.png")
    Image.fromarray(pixels).save(tmp_path / "b.png")
    synth = DiffusionADSynthesis(C.TextureSource(None), C.ForegroundMasks(tmp_path), anomaly_probability=1.0,
                                 self_augment_probability=0.5)
    images = torch.rand(2, 3, 32, 32)
    augmented, masks, labels = synth(images, ["train/good/a.png", "train/good/b.png"],
                                     torch.Generator().manual_seed(3))
    assert masks.shape == (2, 1, 32, 32) and set(masks.unique().tolist()) <= {0.0, 1.0}
    assert labels.tolist() == [1, 1]
    assert not (masks[:, 0] * torch.from_numpy(pixels == 0).float()).any()  # never on the background
    outside = (masks == 0).expand_as(images)
    assert torch.equal(augmented[outside], images[outside])
    assert not torch.equal(augmented[~outside], images[~outside])
    clean = synthesis(anomaly_probability=0.0)(images, ["", ""], torch.Generator().manual_seed(3))
    assert torch.equal(clean[0], images) and clean[1].sum() == 0 and clean[2].sum() == 0
    with pytest.raises(C.ForegroundMaskError, match="expected c.png"):
        synth(images[:1], ["train/good/c.png"], torch.Generator().manual_seed(3))


def test_self_augmentation_defaults_to_the_authors_choice(tmp_path) -> None:
    assert DiffusionAD(**TINY).synthesis.self_augment_probability == 0.0  # textures: DTD only
    assert DiffusionAD(**TINY, foreground_dir=str(tmp_path)).synthesis.self_augment_probability == 0.5  # objects
    assert DiffusionAD(**TINY, foreground_dir=str(tmp_path),
                       self_augment_probability=0.0).synthesis.self_augment_probability == 0.0


def test_bad_synthesis_settings_are_clear_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="self_augment_probability"):
        synthesis(self_augment_probability=1.5)
    with pytest.raises(ValueError, match="opacity_range"):
        synthesis(opacity_range=(0.8, 0.2))
    with pytest.raises(C.ForegroundMaskError, match="does not exist"):
        DiffusionAD(**TINY, foreground_dir=str(tmp_path / "missing"))


def test_training_reads_each_images_foreground_from_its_path(tmp_path) -> None:
    """An image whose foreground mask is empty gets no anomaly (its mask stays empty), so it counts as normal."""
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(tmp_path / "empty.png")
    batch = Batch(torch.rand(2, 3, 32, 32), torch.zeros(2, dtype=torch.long), None, ["good/empty.png"] * 2, [""] * 2)
    logged = []
    for folder in (None, str(tmp_path)):
        seed_everything(0)
        ctx = StepContext(optimizers=[], schedulers=[], scaler=None, grad_clip=None)
        DiffusionAD(**TINY, anomaly_probability=1.0, foreground_dir=folder).training_step(batch, ctx)
        logged.append(ctx.logged["noise_loss"])
    assert logged[0] == 0.0 and logged[1] > 1.0  # anomalous without foregrounds; normal (noise learnt) with them
