"""Greedy k-center coreset selection (Sener & Savarese 2018, as used by PatchCore) and the sparse random
projection that makes its distance computations cheap.

A coreset keeps few points such that every point lies close to one kept: memory banks stay small
while their nearest-neighbour distances stay almost unchanged.
"""

from __future__ import annotations

import math

import torch

from ad_core.components.draws import seeded_generator

# Elements of the [points x centres] block `squared_distance_to` computes at once (32 MiB of float32).
DISTANCE_BLOCK_ELEMENTS = 1 << 23


def sparse_random_projection(dim_in: int, dim_out: int, seed: int) -> torch.Tensor:
    """A [dim_in, dim_out] very sparse random projection (Li et al. 2006; density 1/sqrt(dim_in)).

    It approximately preserves distances (Johnson-Lindenstrauss), which is all the coreset needs.
    """
    generator = seeded_generator(seed)
    density = 1.0 / math.sqrt(dim_in)
    u = torch.rand(dim_in, dim_out, generator=generator)
    sign = torch.zeros(dim_in, dim_out)
    sign[u < density / 2] = -1.0
    sign[u > 1 - density / 2] = 1.0
    return sign * math.sqrt(1.0 / (density * dim_out))


def greedy_coreset(features: torch.Tensor, count: int, covered: torch.Tensor | None = None) -> torch.Tensor:
    """Indices of `count` points chosen by greedy k-center selection (see `greedy_cover`)."""
    return greedy_cover(features, count, covered)[0]


def greedy_cover(
    features: torch.Tensor, count: int, covered: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of `count` points chosen by greedy k-center (farthest-point) selection, and each point's
    squared distance to its nearest chosen (or earlier, `covered`) centre afterwards; -1 for chosen points.

    Starts at the point farthest from the mean (an outlier, as in the authors' start rule), then
    repeatedly adds the point farthest from the points chosen so far. Each step updates the min-distance
    vector with one matrix-vector product (|x|^2 - 2 x.c + |c|^2) over all points: the step is bound by
    reading the points once, so the whole selection costs O(points x count) with a few tensor operations
    per step (a lazy, block-wise update measured 5-30x slower on CPU: its per-block overhead dominated).
    Callers keep the point count small enough for the points to stay in cache (PatchCore's groups).

    `covered` (squared distances [points] to centres chosen earlier, e.g. from `squared_distance_to`)
    continues an earlier selection: the greedy starts from the point farthest from those centres, so
    the points it adds fill the gaps they leave instead of repeating them. The distances returned let a
    caller keep the points still worst covered for a later selection (PatchCore's streamed groups).
    """
    n = features.shape[0]
    if covered is not None and covered.shape != (n,):
        raise ValueError(f"covered must hold one squared distance per point ({n}), got {tuple(covered.shape)}")
    if count >= n:
        return torch.arange(n, device=features.device), torch.full((n,), -1.0, device=features.device)
    if count <= 0:
        left = torch.full((n,), float("inf"), device=features.device) if covered is None else covered.float().clone()
        return torch.empty(0, dtype=torch.long, device=features.device), left
    x = features.float().contiguous()
    sq = (x * x).sum(1)
    if covered is None:
        min_dist = torch.full((n,), float("inf"), device=x.device)
        current = ((x - x.mean(0)) ** 2).sum(1).argmax()
    else:
        min_dist = covered.float().clone()
        current = min_dist.argmax()
    distance = torch.empty(n, device=x.device)
    chosen = torch.empty(count, dtype=torch.long, device=x.device)
    for step in range(count):
        chosen[step] = current
        torch.addmv(sq, x, x[current], alpha=-2, out=distance)
        distance += sq[current]
        torch.minimum(min_dist, distance, out=min_dist)
        min_dist[current] = -1.0  # never chosen twice, even among duplicates
        current = min_dist.argmax()
    min_dist.clamp_(min=0.0)  # the expansion can round a duplicate's distance below 0
    min_dist[chosen] = -1.0
    return chosen, min_dist


def squared_distance_to(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Squared distance [points] of each point to its nearest centre, by blocks of matrix products.

    Clamped at 0 (the expansion |x|^2 - 2 x.c + |c|^2 can round below it); the greedy's own updates
    use the same expansion, so the two compare on equal terms.
    """
    x = points.float()
    c = centres.float()
    c_sq = (c * c).sum(1)
    rows = max(1, DISTANCE_BLOCK_ELEMENTS // max(1, c.shape[0]))
    out = torch.empty(x.shape[0], device=x.device)
    for start in range(0, x.shape[0], rows):
        block = x[start : start + rows]
        nearest = torch.addmm(c_sq, block, c.T, alpha=-2).amin(1)
        out[start : start + rows] = nearest.add_((block * block).sum(1)).clamp_(min=0)
    return out
