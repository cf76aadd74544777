"""Seeded draws depend on the seed only, never on the global random state."""

from __future__ import annotations

import torch

from ad_core.components.draws import random_subset, seeded_generator


def test_random_subset_is_sorted_distinct_and_independent_of_global_rng() -> None:
    torch.manual_seed(0)
    first = random_subset(100, 10, seed=5)
    torch.manual_seed(123)
    torch.rand(7)
    assert torch.equal(first, random_subset(100, 10, seed=5))
    assert torch.equal(first, first.sort().values) and len(torch.unique(first)) == 10
    assert not torch.equal(first, random_subset(100, 10, seed=6))
    assert torch.equal(random_subset(5, 9, seed=0), torch.arange(5))


def test_seeded_generator_replays_its_draws() -> None:
    assert torch.equal(torch.rand(4, generator=seeded_generator(9)), torch.rand(4, generator=seeded_generator(9)))
