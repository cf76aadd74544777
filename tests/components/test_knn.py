"""Exact nearest-neighbour search: blocked brute force, k nearest, and the pruned search, against cdist."""

from __future__ import annotations

import pytest
import torch

from ad_core.components import knn as knn_module
from ad_core.components.knn import build_search_index, knn_search, nearest_neighbours


def test_nearest_neighbours_matches_cdist() -> None:
    g = torch.Generator().manual_seed(1)
    queries, bank = torch.randn(300, 32, generator=g), torch.randn(90, 32, generator=g)
    dist, index = nearest_neighbours(queries, bank)
    ref = torch.cdist(queries.double(), bank.double())
    torch.testing.assert_close(dist.double(), ref.min(1).values, rtol=1e-4, atol=1e-4)
    assert torch.equal(index, ref.argmin(1))


@pytest.mark.parametrize("structured", [True, False])
def test_pruned_search_is_exact(structured: bool, monkeypatch) -> None:
    """Clustered, low-rank data prunes well; isotropic noise prunes badly and takes the fallback."""
    g = torch.Generator().manual_seed(2)
    if structured:
        centres = torch.randn(40, 128, generator=g) * 5
        low_rank = torch.randn(1200, 8, generator=g) @ torch.randn(8, 128, generator=g)
        bank = centres[torch.randint(0, 40, (1200,), generator=g)] + low_rank + 0.05 * torch.randn(1200, 128, generator=g)
    else:
        bank = torch.randn(1200, 128, generator=g)
    queries = torch.cat([bank[:200] + 0.01 * torch.randn(200, 128, generator=g),  # near-duplicates
                         bank[200:400] * 1.5, torch.randn(100, 128, generator=g) * 4])
    index = build_search_index(bank)
    assert index[1].shape == (128, 64) and index[2].shape == (1200, 65)
    fallbacks = []
    original = knn_module.brute_force_neighbours
    monkeypatch.setattr(knn_module, "brute_force_neighbours",
                        lambda q, b: fallbacks.append(len(q)) or original(q, b))
    dist, idx = nearest_neighbours(queries, bank, index)
    ref = torch.cdist(queries.double(), bank.double())
    assert torch.equal(idx, ref.argmin(1))
    torch.testing.assert_close(dist.double(), ref.min(1).values, rtol=1e-4, atol=1e-4)
    assert (not fallbacks) if structured else fallbacks


def test_knn_returns_the_k_nearest_in_order_in_small_blocks(monkeypatch) -> None:
    monkeypatch.setattr(knn_module, "NN_BLOCK_ELEMENTS", 90 * 7)  # 7 queries per block (bank of 90, k * D = 64)
    g = torch.Generator().manual_seed(3)
    queries, bank = torch.randn(50, 16, generator=g), torch.randn(90, 16, generator=g)
    dist, index = knn_search(queries, bank, 4)
    ref = torch.cdist(queries.double(), bank.double()).topk(4, dim=1, largest=False)
    assert torch.equal(index, ref.indices)
    torch.testing.assert_close(dist.double(), ref.values, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="k must be in"):
        knn_search(queries, bank, 91)


def test_search_index_built_in_blocks_equals_one_block(monkeypatch) -> None:
    """The index is accumulated over row blocks (bounded memory); every block must count, in its place."""
    g = torch.Generator().manual_seed(5)
    bank = torch.randn(1100, 16, generator=g) @ torch.randn(16, 16, generator=g) + 3.0
    mean, basis, coords = build_search_index(bank, dim=6)
    monkeypatch.setattr(knn_module, "INDEX_BLOCK_ROWS", 97)
    mean_b, basis_b, coords_b = build_search_index(bank, dim=6)
    torch.testing.assert_close(mean_b, mean)
    torch.testing.assert_close(basis_b @ basis_b.T, basis @ basis.T, rtol=1e-5, atol=1e-5)  # same subspace
    torch.testing.assert_close(coords_b[:, :6].abs(), coords[:, :6].abs(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(coords_b[:, 6], coords[:, 6], rtol=1e-4, atol=1e-4)
