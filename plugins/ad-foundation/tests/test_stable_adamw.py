"""StableAdamW: AdamW when no update is clipped; a gradient spike shrinks the step by RMS(g / (√v̂ + ε)) / d."""

from __future__ import annotations

import math

import pytest
import torch

from ad_foundation.stable_adamw import StableAdamW


@pytest.mark.parametrize("amsgrad", [False, True])
def test_without_clipping_it_is_adamw(amsgrad: bool) -> None:
    torch.manual_seed(0)
    ours, theirs = torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.zeros(4, 3))
    theirs.data.copy_(ours.data)
    opt = StableAdamW([ours], lr=1e-2, weight_decay=0.1, amsgrad=amsgrad, clip_threshold=math.inf)
    ref = torch.optim.AdamW([theirs], lr=1e-2, weight_decay=0.1, amsgrad=amsgrad)
    for scale in (1.0, 5.0, 0.1, 3.0):
        grad = torch.randn(4, 3) * scale
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        opt.step()
        ref.step()
    torch.testing.assert_close(ours.data, theirs.data)


def test_a_gradient_spike_divides_the_step_by_the_update_rms() -> None:
    beta1, beta2, eps, lr = 0.9, 0.999, 1e-10, 0.1
    p = torch.nn.Parameter(torch.zeros(2))
    opt = StableAdamW([p], lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=0.0, clip_threshold=1.0)
    g1, g2 = torch.tensor([1.0, 1.0]), torch.tensor([100.0, 100.0])
    p.grad = g1
    opt.step()
    assert p.data.tolist() == pytest.approx([-lr, -lr], rel=1e-6)  # first Adam step: |u| = 1, RMS 1, no clipping
    before = p.data.clone()
    p.grad = g2
    opt.step()
    m = (beta1 * (1 - beta1) * g1 + (1 - beta1) * g2) / (1 - beta1**2)
    v = ((beta2 * (1 - beta2) * g1**2 + (1 - beta2) * g2**2) / (1 - beta2**2)).sqrt() + eps
    rms = float((g2 / v).pow(2).mean().sqrt())
    assert rms > 1
    torch.testing.assert_close(p.data - before, -lr * m / v / rms)


def test_bad_hyperparameters_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="betas"):
        StableAdamW([torch.nn.Parameter(torch.zeros(1))], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="clip_threshold"):
        StableAdamW([torch.nn.Parameter(torch.zeros(1))], clip_threshold=-1.0)
