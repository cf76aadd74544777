"""Greedy k-center coreset selection (Sener & Savarese 2018, as used by PatchCore) and the sparse random
projection that makes its distance computations cheap.

A coreset keeps few points such that every point lies close to one kept: memory banks stay small
while their nearest-neighbour distances stay almost unchanged.
"""

from __future__ import annotations

import math

import torch

from ad_core.components.draws import seeded_generator


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


def greedy_coreset(features: torch.Tensor, count: int, block_size: int = 256) -> torch.Tensor:
    """Indices of `count` points chosen by greedy k-center (farthest-point) selection.

    Starts at the point farthest from the mean (an outlier, as in the authors' start rule),
    then repeatedly adds the point farthest from the points chosen so far. The min-distance vector
    is updated lazily: each block of `block_size` points keeps the centres it has not yet seen and
    an upper bound on its largest min-distance; only the block whose bound is highest is refreshed
    (with one matrix product over its pending centres) until that block's exact maximum beats every
    other bound. This yields the same selection as the eager loop, with matrix-matrix instead of
    matrix-vector work.
    """
    n = features.shape[0]
    if count >= n:
        return torch.arange(n, device=features.device)
    if count <= 0:
        return torch.empty(0, dtype=torch.long, device=features.device)
    x = features.float().contiguous()
    sq = (x * x).sum(1)
    n_blocks = (n + block_size - 1) // block_size
    min_dist = torch.full((n,), float("inf"), device=x.device)
    centres = x.new_empty(count, x.shape[1])
    centre_sq = x.new_empty(count)
    chosen = torch.empty(count, dtype=torch.long, device=x.device)
    upper = [float("inf")] * n_blocks
    seen = [0] * n_blocks
    current = int(((x - x.mean(0)) ** 2).sum(1).argmax())
    for step in range(count):
        chosen[step] = current
        centres[step] = x[current]
        centre_sq[step] = sq[current]
        min_dist[current] = -1.0  # never chosen twice, even among duplicates
        while True:
            block = max(range(n_blocks), key=upper.__getitem__)
            lo, hi = block * block_size, min(n, (block + 1) * block_size)
            first = seen[block]
            part = min_dist[lo:hi]
            if first <= step:
                cross = torch.addmm(centre_sq[first : step + 1], x[lo:hi], centres[first : step + 1].T, alpha=-2)
                torch.minimum(part, cross.amin(1).add_(sq[lo:hi]), out=part)
                seen[block] = step + 1
            value, where = part.max(0)
            upper[block] = float(value)
            if upper[block] >= max(upper):
                current = lo + int(where)
                break
    return chosen
