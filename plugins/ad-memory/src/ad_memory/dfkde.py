"""DFKDE: Deep Feature Kernel Density Estimation, as in anomalib (Akcay et al., "Anomalib", ICIP 2022).

Globally pooled CNN features of the normal images are reduced by PCA, scaled by the largest norm
seen in training, and modelled by a Gaussian kernel density estimate with Scott's bandwidth
(as scipy's `gaussian_kde`). An image is anomalous when its feature has low density. Image-level
only: there is no anomaly map.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ad_core.components.backbone import BackboneConfig
from ad_core.components.draws import random_subset
from ad_core.components.pca import fit_pca
from ad_memory.features import MemoryBankModel

SCORE_TYPES = ("nll", "probability")
SCALINGS = ("scale", "norm")


class Dfkde(MemoryBankModel):
    """Gaussian KDE over PCA-reduced deep features (`ad_core.components.pca`); the KDE is plain torch."""


    def __init__(
        self,
        backbone: str = "resnet18",
        layers: Sequence[str] = ("layer4",),
        pretrained: bool = True,
        weights_file: str | None = None,
        backbone_dir: str | None = None,
        n_pca_components: int = 16,
        feature_scaling: str = "scale",
        max_training_points: int = 40000,
        score_type: str = "nll",
        seed: int = 0,
    ) -> None:
        super().__init__(BackboneConfig(backbone, layers, pretrained, weights_file, backbone_dir))
        if feature_scaling not in SCALINGS:
            raise ValueError(f"feature_scaling must be one of {SCALINGS}, got {feature_scaling!r}")
        if score_type not in SCORE_TYPES:
            raise ValueError(f"score_type must be one of {SCORE_TYPES}, got {score_type!r}")
        if n_pca_components < 1 or max_training_points < 2:
            raise ValueError("n_pca_components must be >= 1 and max_training_points >= 2")
        self.n_pca_components = int(n_pca_components)
        self.feature_scaling = feature_scaling
        self.max_training_points = int(max_training_points)
        self.score_type = score_type
        self.seed = int(seed)
        dim = sum(self.backbone.channels)
        self.register_buffer("pca_mean", torch.zeros(dim))
        self.register_buffer("pca_components", torch.empty(dim, 0))
        self.register_buffer("max_length", torch.ones(()))
        self.register_buffer("kde_data", torch.empty(0, 0))
        self.register_buffer("bandwidth_transform", torch.empty(0, 0))
        self.register_buffer("log_norm", torch.zeros(()))
        self._features: list[torch.Tensor] = []

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled features of the chosen layers, concatenated: [B, D]."""
        return torch.cat([F.adaptive_avg_pool2d(f, 1).flatten(1) for f in self.backbone(images)], dim=1)

    @torch.no_grad()
    def update(self, batch: Any) -> None:
        """Keep the pooled features (a few KB per image); the fit happens in `finalize`."""
        images = batch.image if hasattr(batch, "image") else batch
        if self.is_fitted:
            self.fitted.fill_(False)
            self._features = []
        self._features.append(self.embed(images))

    def _reduce(self, features: torch.Tensor) -> torch.Tensor:
        """PCA projection, then the training-time scaling."""
        projected = (features - self.pca_mean) @ self.pca_components
        if self.feature_scaling == "norm":
            return projected / torch.linalg.vector_norm(projected, dim=1, keepdim=True).clamp_min(1e-12)
        return projected / self.max_length

    @torch.no_grad()
    def finalize(self) -> None:
        """Subsample, fit PCA (SVD), scale, and fit the KDE (Scott's rule) in float64."""
        if not self._features:
            raise RuntimeError("Dfkde.finalize() called before any update(): no training images")
        features = torch.cat(self._features).double()
        self._features = []
        n = features.shape[0]
        if n < 2:
            raise ValueError("DFKDE needs at least 2 training images")
        if n > self.max_training_points:
            features = features[random_subset(n, self.max_training_points, self.seed).to(features.device)]
            n = features.shape[0]
        # PCA: the rank of n centred points is at most n - 1, so fit_pca never keeps more components.
        pca = fit_pca(features, n_components=self.n_pca_components)
        mean, components = pca.mean, pca.components
        k = components.shape[1]
        projected = pca.project(features)
        max_length = torch.linalg.vector_norm(projected, dim=1).max().clamp_min(1e-12)
        if self.feature_scaling == "norm":
            data = projected / torch.linalg.vector_norm(projected, dim=1, keepdim=True).clamp_min(1e-12)
        else:
            data = projected / max_length
        # Gaussian KDE, Scott's factor n^(-1/(d+4)): kernel covariance = data covariance * factor^2.
        factor = n ** (-1.0 / (k + 4))
        centred = data - data.mean(0)
        covariance = centred.T @ centred / (n - 1)
        covariance = covariance + 1e-10 * covariance.diagonal().mean().clamp_min(1e-12) * torch.eye(k, dtype=data.dtype,
                                                                                                 device=data.device)
        inv_kernel_cov = torch.linalg.inv(covariance) / factor**2
        transform = torch.linalg.cholesky(inv_kernel_cov)  # inv_kernel_cov = L L^T
        log_norm = torch.log(torch.diagonal(transform)).sum() - 0.5 * k * math.log(2 * math.pi)
        self.set_buffer("pca_mean", mean.float())
        self.set_buffer("pca_components", components.float())
        self.set_buffer("max_length", max_length.float())
        self.set_buffer("kde_data", (data @ transform).float())
        self.set_buffer("bandwidth_transform", transform.float())
        self.set_buffer("log_norm", log_norm.float())
        self.mark_fitted()

    def log_density(self, features: torch.Tensor) -> torch.Tensor:
        """log of the KDE density at each feature: log(mean_i N(x; x_i, H)), computed stably."""
        x = self._reduce(features) @ self.bandwidth_transform
        data = self.kde_data
        d2 = ((x * x).sum(1, keepdim=True) - 2 * x @ data.T + (data * data).sum(1)).clamp_min(0)
        return torch.logsumexp(-0.5 * d2, dim=1) + self.log_norm - math.log(data.shape[0])

    def compute(self, images: torch.Tensor) -> tuple[torch.Tensor, None]:
        log_p = self.log_density(self.embed(images))
        if self.score_type == "probability":
            # anomalib's mapping of the log-density to an anomaly probability
            return torch.sigmoid(-0.05 * (log_p - 12.0)), None
        return -log_p, None
