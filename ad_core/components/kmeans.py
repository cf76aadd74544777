"""Seeded k-means (Lloyd's algorithm) with k-means++ seeding (Arthur & Vassilvitskii 2007).

CFA builds its memory bank of patch-feature centroids this way; any model that clusters features uses it.
Every random choice comes from the `torch.Generator` passed in.
"""

from __future__ import annotations

import torch

from ad_core.components.knn import knn_search


def kmeans_plus_plus(points: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k initial centres [k, D]: the first uniformly at random, each next one drawn with probability
    proportional to its squared distance to the nearest centre chosen so far."""
    n = points.shape[0]
    first = int(torch.randint(n, (1,), generator=generator))
    chosen = [first]
    d2 = (points - points[first]).pow(2).sum(1)
    for _ in range(1, k):
        total = float(d2.sum())
        if total <= 0:  # every point coincides with a centre: take the first unchosen ones
            index = next(i for i in range(n) if i not in chosen)
        else:
            index = int(torch.multinomial((d2 / total).double().cpu(), 1, generator=generator))
        chosen.append(index)
        d2 = torch.minimum(d2, (points - points[index]).pow(2).sum(1))
    return points[torch.tensor(chosen, device=points.device)].clone()


def fit_kmeans(points: torch.Tensor, k: int, generator: torch.Generator, iterations: int = 100,
           tolerance: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster [N, D] points into k: (centres [k, D], label of each point [N]).

    Lloyd iterations from k-means++ centres until no centre moves by more than `tolerance` (relative to
    the data's scale) or `iterations` is reached. A cluster that empties keeps its previous centre.
    """
    if points.ndim != 2 or not 1 <= k <= points.shape[0]:
        raise ValueError(f"kmeans needs [N, D] points and 1 <= k <= N, got {tuple(points.shape)} and k={k}")
    x = points.float()
    centres = kmeans_plus_plus(x, k, generator)
    scale = float(x.var(0).sum()) or 1.0
    labels = knn_search(x, centres, 1)[1][:, 0]
    for _ in range(iterations):
        sums = torch.zeros_like(centres).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k).to(x.dtype)
        updated = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centres)
        shift = float((updated - centres).pow(2).sum(1).max())
        centres = updated
        labels = knn_search(x, centres, 1)[1][:, 0]
        if shift <= tolerance * scale:
            break
    return centres, labels
