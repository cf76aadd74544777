"""U-Flow's a-contrario detection: the number of false alarms (NFA) of each pixel, from a flow's latents.

Under the null hypothesis (normal data) every latent coordinate is an independent N(0, 1), so z² follows a
chi-square law with one degree of freedom and z² >= tau, with tau its `probability` quantile, happens with
probability 1 - `probability`. Around each pixel the number of such candidates in a window (averaged over
channels) is compared with the binomial law it would follow; the tail probabilities of the scales are
multiplied (their logs summed) and multiplied by the number of tests to give the NFA. A region is detected
when NFA < epsilon = 1, i.e. log10 NFA < 0: on pure noise that happens less than once per image on average.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def chi2_1dof_quantile(probability: float) -> float:
    """tau with P(z² <= tau) = probability for z ~ N(0, 1): P(|z| <= a) = erf(a / sqrt 2)."""
    if not 0.0 < probability < 1.0:
        raise ValueError(f"probability must lie strictly between 0 and 1, got {probability}")
    a = math.sqrt(2.0) * torch.special.erfinv(torch.tensor(probability, dtype=torch.float64)).item()
    return a * a


def binomial_log10_tail(k: torch.Tensor, n: int, p: float) -> torch.Tensor:
    """log10 P(X >= k) for X ~ Binomial(n, p), element-wise; a real k counts as ceil(k)."""
    j = torch.arange(n + 1, dtype=torch.float64, device=k.device)
    log_pmf = (math.lgamma(n + 1) - torch.lgamma(j + 1) - torch.lgamma(n - j + 1)
               + j * math.log(p) + (n - j) * math.log1p(-p))
    tail = torch.logcumsumexp(log_pmf.flip(0), 0).flip(0)  # tail[i] = log P(X >= i)
    index = k.ceil().clamp(0, n).long()
    return (tail[index] / math.log(10.0)).clamp(max=0.0).to(k.dtype)


def _window_sum(x: torch.Tensor, half: int) -> torch.Tensor:
    """Sum over a (2·half+1)² window around each pixel; reflect padding where the map is large enough."""
    mode = "reflect" if min(x.shape[-2:]) > half else "replicate"
    padded = F.pad(x, (half, half, half, half), mode=mode)
    return F.avg_pool2d(padded, 2 * half + 1, stride=1) * (2 * half + 1) ** 2


def log_nfa(latents: list[torch.Tensor], window_size: int = 7, probability: float = 0.5) -> torch.Tensor:
    """log10 NFA per pixel [B, H, W] at the resolution of the first (finest) latent.

    Scale i uses a window of about window_size / 2^i pixels (at least 3x3), so every scale looks at the same
    image area; coarser maps are brought to the finest resolution by bicubic interpolation before summing.
    """
    if window_size < 1:
        raise ValueError(f"window_size must be at least 1, got {window_size}")
    tau = chi2_1dof_quantile(probability)
    size = latents[0].shape[-2:]
    log_prob = 0.0
    for scale, z in enumerate(latents):
        half = max(int(window_size / 2**scale) // 2, 1)
        candidates = (z.float().pow(2) >= tau).float().mean(1, keepdim=True)  # per-pixel share of channels
        counts = _window_sum(candidates, half)
        tail = binomial_log10_tail(counts, (2 * half + 1) ** 2, 1.0 - probability)
        if tail.shape[-2:] != size:
            tail = F.interpolate(tail, size=size, mode="bicubic", align_corners=True)
        log_prob = log_prob + tail
    n_tests = sum(z.shape[-2] * z.shape[-1] for z in latents)
    return (math.log10(n_tests) + log_prob)[:, 0]
