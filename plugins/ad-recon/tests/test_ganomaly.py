"""GANomaly: shapes, the losses and the score against direct computation, the alternating steps and the
discriminator's re-initialisation rule."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ad_recon.ganomaly import Ganomaly, discriminator_loss, generator_loss


def tiny(**kwargs) -> Ganomaly:
    torch.manual_seed(0)
    return Ganomaly(image_size=32, latent_dim=10, n_features=8, **kwargs)


def test_generator_and_discriminator_shapes() -> None:
    model = tiny()
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    fake, latent, latent_hat = model.generator(images)
    assert fake.shape == images.shape and latent.shape == latent_hat.shape == (2, 10, 1, 1)
    assert fake.abs().max() <= 1  # tanh output, the range of the [-1, 1] inputs
    logit, features = model.discriminator(images)
    assert logit.shape == (2,) and features.shape[-2:] == (4, 4)


def test_losses_are_the_papers_weighted_sums() -> None:
    g = torch.Generator().manual_seed(0)
    x, xh, z, zh, fr, ff = (torch.randn(2, 3, 4, 4, generator=g) for _ in range(6))
    total, parts = generator_loss(x, xh, z, zh, fr, ff, 1.0, 50.0, 1.0)
    expected = ((fr - ff) ** 2).mean() + 50 * (x - xh).abs().mean() + ((z - zh) ** 2).mean()
    torch.testing.assert_close(total, expected)
    assert set(parts) == {"adv", "con", "enc"}
    real, fake = torch.randn(5, generator=g), torch.randn(5, generator=g)
    bce = 0.5 * (F.binary_cross_entropy(torch.sigmoid(real), torch.ones(5))
                 + F.binary_cross_entropy(torch.sigmoid(fake), torch.zeros(5)))
    torch.testing.assert_close(discriminator_loss(real, fake), bce)


def test_score_is_the_latent_distance_and_needs_no_test_statistics() -> None:
    model = tiny().eval()
    model.mark_fitted()
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        _, z, zh = model.generator(images)
    expected = ((z - zh) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(model.predict(images).score, expected)
    torch.testing.assert_close(model.predict(images[1:2]).score, expected[1:2])  # no normalisation over a batch
    assert model.predict(images).anomaly_map is None


def test_one_step_updates_both_networks(as_batch, context_for) -> None:
    model = tiny(reinit_threshold=0.0)
    ctx = context_for(model)
    g0 = [p.detach().clone() for p in model.generator.parameters()]
    d0 = [p.detach().clone() for p in model.discriminator.parameters()]
    model.train()
    loss = model.training_step(as_batch(torch.rand(4, 3, 32, 32)), ctx)
    assert torch.isfinite(loss) and {"generator_loss", "discriminator_loss"} <= set(ctx.logged)
    assert all(not torch.equal(a, b) for a, b in zip(g0, model.generator.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(d0, model.discriminator.parameters()))


@pytest.mark.parametrize("threshold, resets", [(0.0, 0), (float("inf"), 1)])
def test_discriminator_is_reinitialised_when_its_loss_falls_below_the_threshold(
        as_batch, context_for, threshold: float, resets: int) -> None:
    model = tiny(reinit_threshold=threshold)
    model.train()
    model.training_step(as_batch(torch.rand(4, 3, 32, 32)), context_for(model))
    assert model.discriminator_resets == resets
    norm_biases = [m.bias for m in model.discriminator.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    fresh = all(bool((b == 0).all()) for b in norm_biases)  # the DCGAN init zeroes them; an Adam step does not
    assert fresh == bool(resets)
    assert bool(model.fit_notes()) == bool(resets)


def test_sizes_the_network_cannot_take_are_clear_errors() -> None:
    for size in (48, 8, [32, 64]):
        with pytest.raises(ValueError, match="power of two"):
            Ganomaly(image_size=size)
    with pytest.raises(ValueError, match="built for 32x32"):
        tiny().latent_distance(torch.rand(1, 3, 64, 64))
