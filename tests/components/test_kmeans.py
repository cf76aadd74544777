"""Seeded k-means with k-means++ seeding finds well-separated clusters and replays from its generator."""

from __future__ import annotations

import pytest
import torch

from ad_core.components.kmeans import fit_kmeans, kmeans_plus_plus


def blobs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    labels = torch.arange(3).repeat_interleave(40)
    return centres[labels] + 0.3 * torch.randn(120, 2, generator=g), labels


def test_kmeans_recovers_separated_clusters_and_their_means() -> None:
    points, truth = blobs()
    centres, labels = fit_kmeans(points, 3, torch.Generator().manual_seed(1))
    for cluster in range(3):
        members = labels == labels[truth == cluster][0]
        assert torch.equal(members, truth == cluster)  # the same partition, up to renaming
        torch.testing.assert_close(centres[labels[truth == cluster][0]], points[members].mean(0))
    assert torch.equal(labels, torch.cdist(points, centres).argmin(1))


def test_kmeans_is_seeded_by_its_generator_only() -> None:
    points, _ = blobs()
    torch.manual_seed(0)
    a = fit_kmeans(points, 5, torch.Generator().manual_seed(7))
    torch.manual_seed(99)
    b = fit_kmeans(points, 5, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_kmeans_plus_plus_picks_distinct_points_even_with_duplicates() -> None:
    points = torch.tensor([[0.0, 0.0]] * 5 + [[1.0, 1.0]])
    centres = kmeans_plus_plus(points, 3, torch.Generator().manual_seed(0))
    assert len({tuple(c.tolist()) for c in centres}) == 2  # both distinct points are chosen before repeats
    with pytest.raises(ValueError, match="1 <= k <= N"):
        fit_kmeans(points, 7, torch.Generator())
