"""SuperSimpleNet's pieces against direct computation, the defect folder's errors, and the supervised mode's gain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import sigmoid_focal_loss as tv_focal

from ad_core.data import DemoDataset
from ad_core.metrics import auroc
from ad_core.testing import fit_tiny
from ad_core.types import collate
from ad_synth.defects import DefectFolderError, defect_pairs, read_defects
from ad_synth.supersimplenet import (
    SuperSimpleNet,
    downsample_masks,
    inject_anomalies,
    perlin_feature_masks,
    sigmoid_focal_loss,
    truncated_l1,
)


def _save(folder: Path, name: str, image: torch.Tensor, mask: torch.Tensor | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray((image.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)).save(folder / f"{name}.png")
    if mask is not None:
        Image.fromarray((mask.numpy() > 0).astype(np.uint8) * 255).save(folder / f"{name}_mask.png")


def test_inject_anomalies_adds_noise_only_in_perlin_masks_outside_real_defects() -> None:
    adapted, features = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    masks = torch.zeros(2, 1, 4, 4)
    masks[1, 0, 0, 0] = 1  # a real defect pixel of image 1
    labels = torch.tensor([0.0, 1.0])
    perlin = torch.zeros(4, 1, 4, 4)
    perlin[0, 0, 2:, 2:] = 1  # synthetic defect on the first copy of image 0
    perlin[3, 0, 0, 0] = 1  # on the real defect of image 1's second copy: no extra noise there
    noise = torch.randn(4, 3, 4, 4)
    noised, noised_adapted, union, new_labels = inject_anomalies(features, adapted, masks, labels, noise, perlin)
    where = perlin * torch.tensor([1.0, 1, 1, 0]).view(4, 1, 1, 1)  # not on image 1's real defect
    assert torch.equal(noised_adapted, torch.cat((adapted, adapted)) + noise * where)
    assert torch.equal(noised, torch.cat((features, features)) + noise * where)
    assert torch.equal(new_labels, torch.tensor([1.0, 1.0, 0.0, 1.0]))
    assert union[0].sum() == 4 and union[1].sum() == 1 and union[2].sum() == 0 and union[3].sum() == 1


def test_losses_match_direct_computation() -> None:
    logits, target = torch.randn(3, 1, 5, 5), (torch.rand(3, 1, 5, 5) > 0.7).float()
    torch.testing.assert_close(sigmoid_focal_loss(logits, target), tv_focal(logits, target, alpha=-1, gamma=4.0,
                                                                            reduction="mean"))
    normal, anomalous = logits[target == 0], logits[target == 1]
    direct = (normal + 0.5).clamp(min=0).mean() + (0.5 - anomalous).clamp(min=0).mean()
    torch.testing.assert_close(truncated_l1(logits, target), direct)
    assert truncated_l1(torch.tensor([-1.0, 2.0]), torch.tensor([0.0, 1.0])) == 0  # beyond the margins: no loss


def test_perlin_feature_masks_are_binary_seeded_and_sometimes_empty() -> None:
    make = lambda: perlin_feature_masks(16, (12, 20), 0.2, torch.Generator().manual_seed(3))  # noqa: E731
    masks = make()
    assert masks.shape == (16, 1, 12, 20)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(masks, make())
    empty = (masks.flatten(1).sum(1) == 0).sum()
    assert 0 < empty < 16


def test_downsample_masks_keeps_majority_pixels() -> None:
    masks = torch.zeros(1, 8, 8)
    masks[0, :4, :4] = 1
    small = downsample_masks(masks, (2, 2))
    assert small.shape == (1, 1, 2, 2) and small[0, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]


def test_stop_gradient_only_in_the_unsupervised_mode() -> None:
    for supervised, reaches in ((False, False), (True, True)):
        model = SuperSimpleNet(backbone="resnet18", pretrained=False, supervised=supervised).train()
        features = model.features(torch.rand(2, 3, 64, 64))
        _, score, _, _ = model.forward_train(features, torch.zeros(2, 64, 64), torch.zeros(2),
                                             torch.zeros(4, features.shape[1], 16, 16), torch.zeros(4, 1, 16, 16))
        score.sum().backward()
        grad = model.segdec.seg_head[0].weight.grad
        assert (grad is not None and bool(grad.abs().sum() > 0)) == reaches


def test_defect_folder_pairs_masks_beside_or_in_masks_subfolder(tmp_path: Path) -> None:
    image, mask = torch.rand(3, 16, 16), (torch.rand(16, 16) > 0.5).float()
    _save(tmp_path, "a", image, mask)
    _save(tmp_path / "sub", "b", image, None)
    _save(tmp_path / "sub" / "masks", "b_mask", mask.expand(3, -1, -1), None)  # an RGB mask file in masks/
    pairs = defect_pairs(tmp_path)
    assert [(p.name, m.name) for p, m in pairs] == [("a.png", "a_mask.png"), ("b.png", "b_mask.png")]
    defects = read_defects(tmp_path, (8, 12))
    assert defects.images.shape == (2, 3, 8, 12) and defects.masks.shape == (2, 8, 12)


def test_defect_folder_with_an_image_without_mask_is_a_clear_error(tmp_path: Path) -> None:
    _save(tmp_path, "a", torch.rand(3, 16, 16), torch.ones(16, 16))
    _save(tmp_path, "orphan", torch.rand(3, 16, 16), None)
    with pytest.raises(DefectFolderError, match=r"1 of 2 image\(s\).*no mask.*orphan\.png"):
        fit_tiny("supersimplenet-supervised", {"backbone": "resnet18", "num_epochs": 1, "defect_dir": str(tmp_path)},
                 64, "weave", 4, 0)
    with pytest.raises(DefectFolderError, match="does not exist"):
        defect_pairs(tmp_path / "nowhere")


def test_defect_dir_needs_the_supervised_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="supervised"):
        SuperSimpleNet(backbone="resnet18", pretrained=False, defect_dir=str(tmp_path))


def test_a_handful_of_labelled_defects_help(tmp_path: Path) -> None:
    """Four real defects with masks mixed into training (same length) localise the demo defects far better."""
    source = DemoDataset(category="weave", split="test", image_size=64, seed=7, n_test_normal=0,
                         n_test_anomalous=4, defect_scale=2.5)
    for i in range(len(source)):
        _save(tmp_path, f"d{i}", source[i].image, source[i].mask)
    test = collate(list(DemoDataset(category="weave", split="test", image_size=64, seed=1, n_test_normal=8,
                                    n_test_anomalous=8, defect_scale=2.5)))
    truth = (test.mask.flatten().numpy() > 0).astype(int)
    base = {"backbone": "resnet18", "batch_size": 8, "num_epochs": 3, "noise_std": 0.5}
    pixel = {}
    for mode, overrides in (("unsupervised", base), ("supervised", {**base, "defect_dir": str(tmp_path)})):
        name = "supersimplenet-supervised" if mode == "supervised" else "supersimplenet"
        detector = fit_tiny(name, overrides, 64, "weave", 16, 0)
        pixel[mode] = auroc(detector.predict(test.image).anomaly_map.flatten().numpy(), truth)
        if mode == "supervised":
            assert detector.model.real_defects_seen > 0
    assert pixel["supervised"] > pixel["unsupervised"] + 0.2, pixel
