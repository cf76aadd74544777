"""Principal component analysis by SVD, with the number of components fixed or chosen by explained variance.

Used to reduce deep features before density estimation (DFKDE) and by any model that whitens or
compresses features; float64 by default so small variances are not lost to rounding.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class PCAFit(NamedTuple):
    """mean [D], components [D, k] (orthonormal columns, by decreasing variance), explained variance [k]."""

    mean: torch.Tensor
    components: torch.Tensor
    explained_variance: torch.Tensor

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Coordinates [N, k] of features [N, D] in the principal basis."""
        return (features - self.mean) @ self.components


def fit_pca(features: torch.Tensor, n_components: int | None = None,
            variance_ratio: float | None = None) -> PCAFit:
    """Fit PCA to [N, D] features: keep `n_components`, or the fewest components whose explained variance
    reaches `variance_ratio` of the total (e.g. 0.97), never more than the rank bound min(N - 1, D).

    The arithmetic follows the features' dtype (pass float64 for the reference precision).
    """
    if (n_components is None) == (variance_ratio is None):
        raise ValueError("give exactly one of n_components and variance_ratio")
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"PCA needs [N, D] features with N >= 2, got {tuple(features.shape)}")
    n, dim = features.shape
    mean = features.mean(0)
    _, singular, vh = torch.linalg.svd(features - mean, full_matrices=False)
    variance = singular.pow(2) / (n - 1)
    limit = min(n - 1, dim)
    if n_components is not None:
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        k = min(int(n_components), limit)
    else:
        if not 0 < variance_ratio <= 1:
            raise ValueError(f"variance_ratio must be in (0, 1], got {variance_ratio}")
        cumulative = variance.cumsum(0) / variance.sum().clamp_min(torch.finfo(variance.dtype).tiny)
        k = min(int((cumulative < variance_ratio).sum()) + 1, limit)
    return PCAFit(mean, vh[:k].T, variance[:k])
