"""The closed forms of a DDPM (Ho et al. 2020) that DiffusionAD's one-step denoising is built from.

With the linear β schedule β_t = linspace(β_1, β_T) and ᾱ_t = Π_{s≤t} (1 − β_s) (t counted from 0):

- forward process q(x_t | x_0):      x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε
- x_0 from a noise estimate:         x̂_0 = (x_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t = √(1/ᾱ_t) x_t − √(1/ᾱ_t − 1) ε̂
- norm guidance (DiffusionAD): the noisier branch's x̂_0 re-noised to the normal step,
  x̂_t = √ᾱ_t x̂_0^noisier + √(1 − ᾱ_t) ε̂_t, shifts the normal step's noise estimate like classifier
  guidance: ε̂' = ε̂_t − w √(1 − ᾱ_t) (x̂_t − x_t).

The schedule's tables are computed in float64 and held as non-persistent float32 buffers: they follow the
module to its device but are not saved (they are a function of `timesteps`, `beta_start`, `beta_end`).
"""

from __future__ import annotations

import torch
from torch import nn


class LinearSchedule(nn.Module):
    """A linear β schedule of `timesteps` steps and the per-step coefficients of the closed forms above."""

    def __init__(self, timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> None:
        super().__init__()
        if timesteps < 2:
            raise ValueError(f"timesteps must be at least 2, got {timesteps}")
        if not 0.0 < beta_start < beta_end < 1.0:
            raise ValueError(f"need 0 < beta_start < beta_end < 1, got {beta_start}, {beta_end}")
        self.timesteps = int(timesteps)
        betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        tables = {
            "betas": betas,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).sqrt(),
            "sqrt_recip_alphas_cumprod": (1.0 / alphas_cumprod).sqrt(),
            "sqrt_recipm1_alphas_cumprod": (1.0 / alphas_cumprod - 1.0).sqrt(),
        }
        for name, table in tables.items():
            self.register_buffer(name, table.float(), persistent=False)

    @staticmethod
    def _at(table: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The table's values at steps `t` [B], shaped to broadcast over `like` [B, ...]."""
        return table[t].to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε: a draw of q(x_t | x_0) for the given noise."""
        return self._at(self.sqrt_alphas_cumprod, t, x0) * x0 + self._at(self.sqrt_one_minus_alphas_cumprod, t,
                                                                          x0) * noise

    def predict_x0(self, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x̂_0 = √(1/ᾱ_t) x_t − √(1/ᾱ_t − 1) ε̂: the one-step estimate of the clean image (unclamped)."""
        return self._at(self.sqrt_recip_alphas_cumprod, t, xt) * xt - self._at(self.sqrt_recipm1_alphas_cumprod, t,
                                                                                xt) * eps

    def guided_noise(self, eps: torch.Tensor, xt: torch.Tensor, guide_xt: torch.Tensor, t: torch.Tensor,
                     weight: float) -> torch.Tensor:
        """ε̂' = ε̂ − w √(1 − ᾱ_t) (x̂_t − x_t): the noise estimate at x_t pulled towards the guide x̂_t."""
        return eps - weight * self._at(self.sqrt_one_minus_alphas_cumprod, t, xt) * (guide_xt - xt)
