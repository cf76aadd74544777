"""Greedy k-center coreset: the matrix-vector selection equals the textbook greedy loop, and continues one."""

from __future__ import annotations

import math

import pytest
import torch

from ad_core.components.coreset import greedy_coreset, greedy_cover, sparse_random_projection, squared_distance_to


def eager_greedy_coreset(x: torch.Tensor, count: int) -> torch.Tensor:
    """Textbook k-center greedy from the same start point, for comparison."""
    start = int(((x - x.mean(0)) ** 2).sum(1).argmax())
    chosen = [start]
    dist = ((x - x[start]) ** 2).sum(1)
    for _ in range(count - 1):
        dist[chosen] = -1
        nxt = int(dist.argmax())
        chosen.append(nxt)
        dist = torch.minimum(dist, ((x - x[nxt]) ** 2).sum(1))
    return torch.tensor(chosen)


def test_greedy_coreset_is_exact_unique_and_takes_outliers_first() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(700, 16, generator=g, dtype=torch.float64)
    outliers = torch.tensor([5, 300, 650])
    x[outliers, torch.arange(3)] += 60.0  # far out, along different axes
    chosen = greedy_coreset(x.float(), 50)
    assert len(chosen) == 50 and len(torch.unique(chosen)) == 50
    assert set(chosen[:3].tolist()) == set(outliers.tolist())
    assert torch.equal(chosen, eager_greedy_coreset(x, 50))
    assert torch.equal(greedy_coreset(x.float(), 700), torch.arange(700))
    # duplicates: still unique indices, up to the number of points
    dup = torch.zeros(20, 4)
    assert len(torch.unique(greedy_coreset(dup, 20))) == 20


def test_greedy_coreset_continues_from_covered_distances() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(500, 8, generator=g)
    whole = greedy_coreset(x, 40)
    covered = squared_distance_to(x, x[whole[:15]])
    assert torch.allclose(covered, torch.cdist(x, x[whole[:15]]).amin(1) ** 2, atol=1e-4)
    # seeded with the first 15 centres, the greedy picks exactly the next 25 of the whole selection
    assert torch.equal(greedy_coreset(x, 25, covered), whole[15:])
    with pytest.raises(ValueError, match="one squared distance per point"):
        greedy_coreset(x, 5, covered[:10])


def test_greedy_cover_returns_what_is_left_uncovered() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(300, 8, generator=g)
    earlier = torch.randn(5, 8, generator=g)
    covered = squared_distance_to(x, earlier)
    chosen, left = greedy_cover(x, 20, covered)
    assert torch.equal(chosen, greedy_coreset(x, 20, covered))
    assert torch.equal(left[chosen], torch.full((20,), -1.0))
    rest = torch.ones(300, dtype=torch.bool).index_fill_(0, chosen, False)
    # each unchosen point's distance to the nearest of the earlier and the chosen centres
    expected = squared_distance_to(x[rest], torch.cat([earlier, x[chosen]]))
    torch.testing.assert_close(left[rest], expected, atol=1e-4, rtol=1e-4)
    # nothing to choose: the distances come back as they were
    assert torch.equal(greedy_cover(x, 0, covered)[1], covered)


def test_sparse_random_projection_is_seeded_sparse_and_scaled() -> None:
    a, b = sparse_random_projection(400, 50, seed=3), sparse_random_projection(400, 50, seed=3)
    assert torch.equal(a, b) and not torch.equal(a, sparse_random_projection(400, 50, seed=4))
    scale = math.sqrt(math.sqrt(400) / 50)  # sqrt(1 / (density * dim_out)), density = 1/sqrt(400)
    values = torch.unique(a)
    assert len(values) == 3 and values[1] == 0
    torch.testing.assert_close(values[[0, 2]], torch.tensor([-scale, scale]))
    density = float((a != 0).float().mean())
    assert abs(density - 1 / 20) < 0.01
