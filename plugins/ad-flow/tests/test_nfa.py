"""The a-contrario NFA of U-Flow: quiet on Gaussian noise, loud on a shifted patch."""

from __future__ import annotations

import math

import pytest
import torch

from ad_flow.nfa import binomial_log10_tail, chi2_1dof_quantile, log_nfa


def noise_latents(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 64, 32, 32, generator=g), torch.randn(4, 128, 16, 16, generator=g)]


def test_binomial_tail_matches_the_sum_of_the_pmf() -> None:
    n, p = 49, 0.5
    k = torch.tensor([0.0, 1.0, 24.5, 25.0, 40.0, 49.0, 60.0])
    expected = [  # a count above n is capped at n
        math.log10(sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(min(math.ceil(x), n), n + 1)))
        for x in k.tolist()
    ]
    torch.testing.assert_close(binomial_log10_tail(k, n, p).double(), torch.tensor(expected, dtype=torch.float64),
                               rtol=1e-5, atol=1e-6)


def test_chi2_quantile_is_the_median_of_z_squared() -> None:
    tau = chi2_1dof_quantile(0.5)
    z = torch.randn(200_000, generator=torch.Generator().manual_seed(0))
    assert abs((z.pow(2) <= tau).float().mean().item() - 0.5) < 0.01
    with pytest.raises(ValueError, match="between 0 and 1"):
        chi2_1dof_quantile(1.0)


def test_gaussian_noise_raises_no_false_alarm() -> None:
    lnfa = log_nfa(noise_latents())
    assert lnfa.shape == (4, 32, 32)
    assert (lnfa >= 0).float().mean().item() > 0.999


def test_a_shifted_patch_is_detected_there_only() -> None:
    latents = noise_latents(1)
    latents[0][:, :, 8:16, 8:16] += 2.0
    latents[1][:, :, 4:8, 4:8] += 2.0
    lnfa = log_nfa(latents)
    assert (lnfa[:, 10:14, 10:14] < 0).all()
    outside = torch.ones(32, 32, dtype=torch.bool)
    outside[4:20, 4:20] = False
    assert (lnfa[:, outside] >= 0).all()


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window_size"):
        log_nfa(noise_latents(), window_size=0)
