"""Seeded random draws: a model's random choices depend on its own `seed`, never on global RNG state."""

from __future__ import annotations

import torch


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator so random draws depend on the model's own seed, not on global RNG state."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(seed))
    return generator


def random_subset(total: int, count: int, seed: int) -> torch.Tensor:
    """`count` distinct sorted indices out of `total`, drawn from `seed` (all of them if count >= total)."""
    if count >= total:
        return torch.arange(total)
    perm = torch.randperm(total, generator=seeded_generator(seed))
    return perm[:count].sort().values
