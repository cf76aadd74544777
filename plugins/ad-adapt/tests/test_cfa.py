"""CFA's pieces against direct computations: coordinates, fusion, the bank, the loss, the patch scores."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ad_adapt.cfa import Cfa, CoordConv, fuse_layers, hypersphere_loss
from ad_core.plugin_api import normal_batch


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(5, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def test_coordconv_adds_row_and_column_coordinates() -> None:
    conv = CoordConv(1, 2)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[0, 1] = 1  # output 0 reads the row coordinate, output 1 the column coordinate
        conv.weight[1, 2] = 1
    out = conv(torch.zeros(2, 1, 3, 5))
    torch.testing.assert_close(out[1, 0], torch.linspace(-1, 1, 3)[:, None].expand(3, 5))
    torch.testing.assert_close(out[1, 1], torch.linspace(-1, 1, 5)[None, :].expand(3, 5))


def test_layers_are_pooled_before_they_are_resized_and_fused() -> None:
    generator = torch.Generator().manual_seed(1)
    first, second = torch.rand(1, 2, 8, 8, generator=generator), torch.rand(1, 3, 4, 4, generator=generator)
    fused = fuse_layers([first, second])
    assert fused.shape == (1, 5, 8, 8)
    torch.testing.assert_close(fused[:, :2], F.avg_pool2d(first, 3, 1, 1))
    expected = F.interpolate(F.avg_pool2d(second, 3, 1, 1), size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(fused[:, 2:], expected)


def test_hypersphere_loss_by_hand() -> None:
    distances = torch.tensor([[0.5, 0.01, 0.2, 3.0, 0.05, 0.0]])  # sorted: 0, .01, .05 | .2, .5, 3
    radius = 0.1  # r² = 0.01
    attract = (0.05 - 0.01) / 3  # of the 3 nearest (0, .01, .05) only .05 lies beyond r²
    repel = 0.0  # r² - d - 0.1 < 0 for every hard negative
    assert hypersphere_loss(distances, 3, 3, radius).item() == pytest.approx((attract + repel) * 1e3)
    close = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    # with r² = 1, every hard negative lies 1 - 0 - 0.1 = 0.9 inside the margin
    assert hypersphere_loss(close, 3, 3, 1.0).item() == pytest.approx(0.9 * 1e3)


def test_bank_is_the_per_position_mean_over_all_images(images: torch.Tensor) -> None:
    model = Cfa(backbone="resnet18", pretrained=False)
    model.on_fit_start([normal_batch(images[:3]), normal_batch(images[3:])])  # unequal batches weigh images equally
    with torch.no_grad():
        expected = model.patch_features(images).mean(0).flatten(1).T
    torch.testing.assert_close(model.memory_bank, expected)


def test_gamma_c_compresses_the_bank_by_kmeans(images: torch.Tensor) -> None:
    model = Cfa(backbone="resnet18", pretrained=False, gamma_c=4)
    model.on_fit_start([normal_batch(images)])
    assert model.memory_bank.shape == (16 * 16 // 4, 448)


def test_patch_score_is_the_softmin_weighted_nearest_distance(images: torch.Tensor) -> None:
    model = Cfa(backbone="resnet18", pretrained=False, sigma=0)
    model.on_fit_start([normal_batch(images[:3])])
    model.finalize()
    model.eval()
    test = images[3:]
    with torch.no_grad():
        features = model.patch_features(test)
        b, c, h, w = features.shape
        distances = torch.cdist(features.flatten(2).transpose(1, 2), model.memory_bank[None]).topk(3, largest=False)
        nearest = distances.values
        patch = (torch.exp(-nearest[..., 0]) / torch.exp(-nearest).sum(-1)) * nearest[..., 0]
        expected = F.interpolate(patch.view(b, 1, h, w), size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
        score, amap = model.compute(test)
    torch.testing.assert_close(amap, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(score, expected.amax(dim=(1, 2)), rtol=1e-4, atol=1e-5)


def test_training_steps_lower_the_loss(images: torch.Tensor) -> None:
    """The descriptor (only it) learns. With random backbone weights the paper's lr 1e-3 first overshoots the bank
    (it is made of the initial features), so a smaller step shows the descent."""
    torch.manual_seed(0)
    model = Cfa(backbone="resnet18", pretrained=False, lr=1e-4)
    model.on_fit_start([normal_batch(images)])
    optimizer = model.configure_optimizers(None)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["amsgrad"]
    model.train()
    losses = []
    for _ in range(20):
        loss = model.training_step(normal_batch(images), None)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    assert all(p.grad is None for p in model.backbone.parameters())


def test_too_small_a_bank_is_a_clear_error() -> None:
    model = Cfa(backbone="resnet18", pretrained=False, gamma_c=64)
    with pytest.raises(ValueError, match="at least 6"):
        model.on_fit_start([normal_batch(torch.rand(1, 3, 64, 64))])
