"""DFM (Ahuja et al., "Probabilistic Modeling of Deep Features for Out-of-Distribution and Adversarial
Detection", 2019).

Normal images' deep features are modelled by a Gaussian in a PCA subspace. Each image's average-pooled layer
feature tensor is flattened to one vector; PCA keeps the components that explain 97 % of the training variance.
An image is scored by its feature reconstruction error (`fre`: the squared distance of the vector to the
subspace, which, re-arranged as the feature tensor and summed over channels, is also the anomaly map) or by the
negative log-likelihood of its PCA coordinates under the Gaussian fitted to the training coordinates (`nll`,
image level only).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

from ad_core.plugin_api import AnomalyModel, BackboneConfig, Batch, components

SCORE_TYPES = ("fre", "nll")


class Dfm(AnomalyModel):
    """One data pass collects the pooled feature vectors; `finalize` fits the PCA (and so the Gaussian).

    The feature vector's length depends on the image size: predict at the training size.
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        layer: str | int = "layer3",
        pretrained: bool = True,
        weights_file: str | None = None,
        backbone_dir: str | None = None,
        pooling_kernel_size: int = 4,
        variance_ratio: float = 0.97,
        n_components: int | None = None,
        score_type: str = "fre",
    ) -> None:
        super().__init__()
        if score_type not in SCORE_TYPES:
            raise ValueError(f"score_type must be one of {SCORE_TYPES}, got {score_type!r}")
        if pooling_kernel_size < 1:
            raise ValueError(f"pooling_kernel_size must be >= 1, got {pooling_kernel_size}")
        if n_components is None and not 0 < variance_ratio <= 1:
            raise ValueError(f"variance_ratio must be in (0, 1], got {variance_ratio}")
        if n_components is not None and n_components < 1:
            raise ValueError(f"n_components must be >= 1 (or None to keep `variance_ratio` of the variance), "
                             f"got {n_components}")
        self.backbone = BackboneConfig(backbone, (layer,), pretrained, weights_file, backbone_dir).frozen()
        self.pooling_kernel_size = int(pooling_kernel_size)
        self.variance_ratio = float(variance_ratio)
        self.n_components = None if n_components is None else int(n_components)
        self.score_type = score_type
        # Sized by the data: the training vectors' mean [D], principal directions [D, k], and the maximum-
        # likelihood variance [k] of the training coordinates along them (the Gaussian is diagonal there).
        self.register_buffer("mean", torch.empty(0))
        self.register_buffer("components", torch.empty(0, 0))
        self.register_buffer("variance", torch.empty(0))
        self._bank: list[torch.Tensor] = []

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Average-pooled layer features [B, C, h, w]."""
        parts = []
        for chunk in components.image_chunks(images):
            feature = self.backbone(chunk)[0]
            if self.pooling_kernel_size > 1:
                feature = F.avg_pool2d(feature, self.pooling_kernel_size)
            parts.append(feature)
        feature = torch.cat(parts)
        if feature.shape[-2] < 1 or feature.shape[-1] < 1:
            raise ValueError(f"images of {tuple(images.shape[-2:])} are too small for pooling kernel "
                             f"{self.pooling_kernel_size} on {self.backbone.name}: the pooled map is empty")
        return feature

    # -- fitting ---------------------------------------------------------------------------------------
    def on_fit_start(self, loader: Iterable[Batch]) -> None:
        """A new fit forgets the vectors and statistics of any earlier one."""
        self._bank = []
        self.fitted.fill_(False)

    @torch.no_grad()
    def update(self, batch: Batch) -> None:
        vectors = self.features(batch.image).flatten(1)
        if self._bank and vectors.shape[1] != self._bank[0].shape[1]:
            raise ValueError(f"all training images must have the same size: feature vectors of length "
                             f"{vectors.shape[1]} after {self._bank[0].shape[1]}")
        self._bank.append(vectors)

    @torch.no_grad()
    def finalize(self) -> None:
        """PCA of the collected vectors in float64; the vectors are then freed."""
        if not self._bank:
            raise ValueError("the training set is empty: at least 2 normal images are needed")
        vectors = torch.cat(self._bank)
        self._bank = []
        if vectors.shape[0] < 2:
            raise ValueError(f"DFM needs at least 2 training images to fit its PCA, got {vectors.shape[0]}")
        fit = components.fit_pca(vectors.double(), n_components=self.n_components,
                                 variance_ratio=None if self.n_components is not None else self.variance_ratio)
        n = vectors.shape[0]
        self.mean = fit.mean.float()
        self.components = fit.components.float().contiguous()
        self.variance = (fit.explained_variance * (n - 1) / n).float()
        self.mark_fitted()

    # -- scoring ---------------------------------------------------------------------------------------
    def compute(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        feature = self.features(images)
        vectors = feature.flatten(1)
        if vectors.shape[1] != self.mean.shape[0]:
            raise ValueError(f"DFM was fitted on feature vectors of length {self.mean.shape[0]} but "
                             f"{tuple(images.shape[-2:])} images give {vectors.shape[1]}: predict at the "
                             f"training image size")
        centred = vectors - self.mean
        coordinates = centred @ self.components
        if self.score_type == "nll":
            variance = self.variance.clamp_min(torch.finfo(self.variance.dtype).tiny)
            return (coordinates.pow(2) / variance).sum(1) + variance.log().sum(), None
        error = (centred - coordinates @ self.components.T).pow(2).view_as(feature)
        amap = F.interpolate(error.sum(1, keepdim=True), size=images.shape[-2:], mode="bilinear",
                             align_corners=False)[:, 0]
        return error.sum(dim=(1, 2, 3)), amap
