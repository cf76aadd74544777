"""FRE: a tied linear autoencoder over pooled features; score and map from the same reconstruction error."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from ad_core.training import TrainingPlan
from ad_kd.fre import Fre


PLAN = TrainingPlan(total_steps=20, steps_per_epoch=20, num_epochs=1, max_steps=None)
TINY = {"backbone": "resnet18", "pretrained": False, "image_size": 64}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def test_autoencoder_input_is_the_pooled_feature_tensor() -> None:
    torch.manual_seed(0)
    model = Fre(**TINY)
    assert model.feature_shape == (256, 2, 2)  # layer3 of resnet18 at 64 px is 4x4, pooled by 2
    assert model.autoencoder.weight.shape == (220, 256 * 2 * 2)
    unpooled = Fre(**TINY, pooling_kernel_size=1, latent_dim=8)
    assert unpooled.feature_shape == (256, 4, 4) and unpooled.autoencoder.weight.shape == (8, 4096)
    odd = Fre(**{**TINY, "image_size": (100, 72)})  # the backbone's rounding, not a formula, gives the size
    assert odd.feature_shape == (256, 3, 2)


def test_score_and_map_come_from_the_same_reconstruction_error(images) -> None:
    torch.manual_seed(0)
    model = Fre(**TINY).eval()
    model.mark_fitted()
    pred = model.predict(images)
    with torch.no_grad():
        u = model.features(images)
        flat = u.flatten(1)
        error = (flat - model.autoencoder(flat)).pow(2).view_as(u)
    torch.testing.assert_close(pred.score, error.sum(dim=(1, 2, 3)))
    expected_map = F.interpolate(error.mean(1, keepdim=True), size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(pred.anomaly_map, expected_map[:, 0])


def test_tied_autoencoder_with_a_pca_basis_is_pca_reconstruction() -> None:
    """W = top-k principal directions, b_e = −Wμ, b_d = μ: the autoencoder is the PCA projection."""
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(0)
    model = Fre(**TINY, latent_dim=3)
    data = torch.randn(50, 1024, generator=g)
    mean = data.mean(0)
    _, _, vh = torch.linalg.svd(data - mean, full_matrices=False)
    basis = vh[:3]
    with torch.no_grad():
        model.autoencoder.weight.copy_(basis)
        model.autoencoder.encoder_bias.copy_(-basis @ mean)
        model.autoencoder.decoder_bias.copy_(mean)
        recon = model.autoencoder(data)
    torch.testing.assert_close(recon, mean + (data - mean) @ basis.T @ basis, rtol=1e-4, atol=1e-4)


def test_training_reduces_the_reconstruction_error_of_normal_features(images, train_steps) -> None:
    torch.manual_seed(0)
    model = Fre(**TINY, lr=1e-3)
    optimizer = model.configure_optimizers(PLAN)
    assert isinstance(optimizer, torch.optim.Adam)
    assert {id(p) for p in optimizer.param_groups[0]["params"]} == {id(p) for p in model.autoencoder.parameters()}
    losses = train_steps(model, optimizer, images, 20)
    assert losses[-1] < 0.5 * losses[0]


def test_wrong_image_size_is_a_clear_error(images) -> None:
    model = Fre(**TINY)
    model.mark_fitted()
    with pytest.raises(ValueError, match="image_size"):
        model.predict(torch.randn(1, 3, 128, 128))


def test_too_small_image_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="too small"):
        Fre(**{**TINY, "image_size": 16})  # layer3 is 1x1, nothing left after pooling by 2
