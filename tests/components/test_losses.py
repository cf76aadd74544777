"""SSIM and focal loss against direct computations."""

from __future__ import annotations

import math

import pytest
import torch

from ad_core.components.losses import focal_loss, gaussian_window, ssim, ssim_loss


def direct_ssim_at(x: torch.Tensor, y: torch.Tensor, i: int, j: int) -> float:
    """SSIM at pixel (i, j) of one-channel images, from an explicit zero-padded Gaussian window."""
    w = gaussian_window(11, 1.5).double()
    pad = lambda t: torch.nn.functional.pad(t.double(), (5, 5, 5, 5))  # noqa: E731
    px, py = pad(x)[i : i + 11, j : j + 11], pad(y)[i : i + 11, j : j + 11]
    mx, my = (w * px).sum(), (w * py).sum()
    vx, vy = (w * px * px).sum() - mx**2, (w * py * py).sum() - my**2
    cxy = (w * px * py).sum() - mx * my
    c1, c2 = 0.01**2, 0.03**2
    return float((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))


def test_window_is_the_normalised_gaussian() -> None:
    w = gaussian_window(11, 1.5)
    assert w.shape == (11, 11) and math.isclose(float(w.sum()), 1.0, rel_tol=1e-6)
    assert math.isclose(float(w[5, 5] / w[5, 6]), math.exp(0.5 / 1.5**2), rel_tol=1e-5)


def test_ssim_map_matches_the_direct_formula_and_loss_is_one_minus_mean() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 20, 20, generator=g)
    y = (x + 0.2 * torch.randn(1, 1, 20, 20, generator=g)).clamp(0, 1)
    value, ssim_map = ssim(x, y)
    for i, j in [(0, 0), (10, 7), (19, 19)]:
        assert math.isclose(float(ssim_map[0, 0, i, j]), direct_ssim_at(x[0, 0], y[0, 0], i, j), rel_tol=1e-4)
    loss, dissimilarity = ssim_loss(x, y, return_map=True)
    assert torch.isclose(loss, 1 - value) and torch.allclose(dissimilarity, 1 - ssim_map)
    assert torch.isclose(ssim_loss(x, x), torch.tensor(0.0), atol=1e-6)
    with pytest.raises(ValueError, match="one shape"):
        ssim(x, y[..., :10])


def test_focal_loss_matches_its_definition() -> None:
    g = torch.Generator().manual_seed(1)
    probs = torch.softmax(torch.randn(2, 2, 3, 3, generator=g), dim=1)
    target = (torch.rand(2, 3, 3, generator=g) > 0.5).long()
    p_t = probs.gather(1, target[:, None])[:, 0]
    plain = focal_loss(probs, target, gamma=0.0, smooth=0.0)
    assert torch.isclose(plain, -p_t.log().mean())  # gamma 0, no weights: cross-entropy
    focal = focal_loss(probs, target[:, None], gamma=2.0, alpha=0.25, smooth=0.0)  # [B,1,H,W] masks accepted
    weights = torch.where(target == 1, 0.25, 0.75)
    assert torch.isclose(focal, (-weights * (1 - p_t) ** 2 * p_t.log()).mean())
    smoothed = focal_loss(probs, target)  # DRAEM's clamp of the one-hot target
    soft = torch.nn.functional.one_hot(target, 2).movedim(-1, 1).float().clamp(1e-5, 1 - 1e-5)
    q = (soft * probs).sum(1) + 1e-5
    assert torch.isclose(smoothed, (-(1 - q) ** 2 * q.log()).mean())
    with pytest.raises(ValueError, match="class weights"):
        focal_loss(probs, target, alpha=[1.0, 2.0, 3.0])
