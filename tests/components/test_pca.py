"""PCA by SVD: orthonormal components by decreasing variance, chosen by count or explained variance."""

from __future__ import annotations

import pytest
import torch

from ad_core.components.pca import fit_pca


def data() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    # variances 16, 4, 1, 0.01 along four known orthogonal axes, rotated
    latent = torch.randn(500, 4, generator=g, dtype=torch.float64) * torch.tensor([4.0, 2.0, 1.0, 0.1], dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))
    return latent @ rotation.T + 3.0


def test_components_match_the_covariance_eigenvectors() -> None:
    x = data()
    pca = fit_pca(x, n_components=2)
    cov = torch.cov(x.T)
    values, vectors = torch.linalg.eigh(cov)
    torch.testing.assert_close(pca.explained_variance, values.flip(0)[:2])
    torch.testing.assert_close(pca.components.abs(), vectors.flip(1)[:, :2].abs())
    torch.testing.assert_close(pca.components.T @ pca.components, torch.eye(2, dtype=torch.float64))
    projected = pca.project(x)
    torch.testing.assert_close(projected.mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(projected.var(0), pca.explained_variance)


def test_variance_ratio_keeps_the_fewest_components_that_reach_it() -> None:
    x = data()
    total = torch.cov(x.T).trace()
    variances = torch.linalg.eigvalsh(torch.cov(x.T)).flip(0)
    ratios = variances.cumsum(0) / total
    for threshold in (0.5, float(ratios[1]) + 1e-6, 0.999):
        expected = int((ratios < threshold).sum()) + 1
        assert fit_pca(x, variance_ratio=threshold).components.shape[1] == expected


def test_rank_bound_and_bad_arguments() -> None:
    x = data()[:3]
    assert fit_pca(x, n_components=10).components.shape == (4, 2)  # 3 points span at most 2 dimensions
    with pytest.raises(ValueError, match="exactly one"):
        fit_pca(x)
    with pytest.raises(ValueError, match="N >= 2"):
        fit_pca(x[:1], n_components=1)
