"""The autoencoder's shapes, its two residual maps against direct computation, and its size errors."""

from __future__ import annotations

import pytest
import torch

from ad_core.components.losses import ssim
from ad_recon.autoencoder import Autoencoder


def test_latent_is_one_vector_and_the_reconstruction_has_the_input_size() -> None:
    model = Autoencoder(image_size=(32, 64), latent_dim=7)
    images = torch.rand(2, 3, 32, 64)
    assert model.encoder(images).shape == (2, 7, 1, 1)
    assert model(images).shape == images.shape


@pytest.mark.parametrize("loss", ["l2", "ssim"])
def test_map_and_score_are_the_residual_of_the_loss(loss: str) -> None:
    torch.manual_seed(0)
    model = Autoencoder(image_size=32, loss=loss).eval()
    model.mark_fitted()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        reconstruction = model(images)
    if loss == "l2":
        expected = (reconstruction - images).pow(2).mean(1)
    else:
        expected = (1 - ssim(reconstruction, images)[1]).mean(1)
    prediction = model.predict(images)
    torch.testing.assert_close(prediction.anomaly_map, expected)
    torch.testing.assert_close(prediction.score, expected.amax(dim=(1, 2)))


def test_sizes_the_network_cannot_take_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="multiples of 16"):
        Autoencoder(image_size=40)
    with pytest.raises(ValueError, match="loss"):
        Autoencoder(loss="l1")
    with pytest.raises(ValueError, match="built for 32x32"):
        Autoencoder(image_size=32)(torch.rand(1, 3, 64, 64))
