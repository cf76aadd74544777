"""CFA (Lee et al., "CFA: Coupled-hypersphere-based Feature Adaptation for Target-Oriented Anomaly Localization",
IEEE Access 2022).

A frozen CNN's layer features, each average-pooled 3x3 and fused on the first layer's grid, pass a trainable
1x1 CoordConv patch descriptor. Before training, the memory bank is built from the target's own features: the
per-position mean of the descriptor's features over the normal images, compressed by k-means to 1/γ_c of the
positions when γ_c > 1. Training adapts the descriptor with the coupled-hypersphere loss: each patch feature is
pulled inside the radius-r spheres of its K nearest bank items and kept a margin away from the next J (hard
negatives). A patch's anomaly score is its softmin-weighted distance to the nearest of its K nearest bank items;
the map is upsampled and Gaussian-smoothed, and the image score is its maximum.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ad_core.plugin_api import AnomalyModel, BackboneConfig, Batch, StepContext, TrainingPlan, components, gaussian_blur

# The loss's scale 1/ν and the repulsion margin α of the authors' code (ν = 1e-3, α = 0.1).
LOSS_SCALE = 1e3
REPULSION_MARGIN = 0.1


class CoordConv(nn.Conv2d):
    """A 1x1 convolution over the input and two coordinate channels in [-1, 1] (row, then column)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels + 2, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        rows = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype) if h > 1 else x.new_zeros(1)
        cols = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype) if w > 1 else x.new_zeros(1)
        coords = torch.stack(torch.meshgrid(rows, cols, indexing="ij")).expand(b, 2, h, w)
        return super().forward(torch.cat([x, coords], 1))


def fuse_layers(features: Sequence[torch.Tensor]) -> torch.Tensor:
    """Each layer average-pooled 3x3 (stride 1), bilinearly resized to the first layer's grid, concatenated."""
    pooled = [F.avg_pool2d(f, 3, 1, 1) for f in features]
    size = pooled[0].shape[-2:]
    return torch.cat([pooled[0], *(F.interpolate(p, size=size, mode="bilinear", align_corners=False)
                                   for p in pooled[1:])], 1)


def hypersphere_loss(distances: torch.Tensor, k: int, j: int, radius: float) -> torch.Tensor:
    """The coupled-hypersphere loss from squared distances [N, M] of patch features to the bank.

    Attraction: the K nearest items' squared distances beyond r²; repulsion: the J items after the K nearest
    inside r² + α (the authors' indexing: items J .. K+J-1 of the K+J nearest).
    """
    nearest = distances.topk(k + j, dim=1, largest=False).values
    attract = (nearest[:, :k] - radius**2).clamp_min(0).mean()
    repel = (radius**2 - nearest[:, j:] - REPULSION_MARGIN).clamp_min(0).mean()
    return (attract + repel) * LOSS_SCALE


class Cfa(AnomalyModel):
    """The descriptor trains by gradient; the bank is built in `on_fit_start` from the training images."""

    def __init__(
        self,
        backbone: str = "wide_resnet50_2",
        layers: Sequence[str | int] = ("layer1", "layer2", "layer3"),
        pretrained: bool = True,
        weights_file: str | None = None,
        backbone_dir: str | None = None,
        gamma_c: int = 1,
        gamma_d: int = 1,
        num_nearest: int = 3,
        num_hard_negatives: int = 3,
        radius: float = 1e-5,
        lr: float = 1e-3,
        weight_decay: float = 5e-4,
        sigma: float = 4.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if gamma_c < 1 or gamma_d < 1:
            raise ValueError(f"gamma_c and gamma_d must be >= 1, got {gamma_c} and {gamma_d}")
        if num_nearest < 1 or num_hard_negatives < 0:
            raise ValueError(f"num_nearest must be >= 1 and num_hard_negatives >= 0, got {num_nearest} and "
                             f"{num_hard_negatives}")
        self.backbone = BackboneConfig(backbone, tuple(layers), pretrained, weights_file, backbone_dir).frozen()
        channels = sum(self.backbone.channels)
        if channels // gamma_d < 1:
            raise ValueError(f"gamma_d={gamma_d} leaves no descriptor channel of the {channels} fused ones")
        self.descriptor = CoordConv(channels, channels // gamma_d)
        self.gamma_c = int(gamma_c)
        self.num_nearest = int(num_nearest)
        self.num_hard_negatives = int(num_hard_negatives)
        self.radius = float(radius)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.sigma = float(sigma)
        self.seed = int(seed)
        self.register_buffer("memory_bank", torch.empty(0, channels // gamma_d))  # [M, C]

    def patch_features(self, images: torch.Tensor) -> torch.Tensor:
        """The descriptor's target-oriented features [B, C, h, w] (gradients flow into the descriptor only)."""
        return self.descriptor(fuse_layers(self.backbone(images)))

    # -- fitting ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def on_fit_start(self, loader: Iterable[Batch]) -> None:
        """The bank: per-position mean features over the training images, k-means-compressed when γ_c > 1."""
        device = self.descriptor.weight.device
        total, count = None, 0
        for batch in loader:
            features = self.patch_features(batch.image.to(device))
            if total is not None and features.shape != (features.shape[0], *total.shape):
                raise ValueError(f"all training images must have the same size: features "
                                 f"{tuple(features.shape[1:])} after {tuple(total.shape)}")
            total = features.sum(0) if total is None else total + features.sum(0)
            count += features.shape[0]
        if total is None:
            raise ValueError("the training set is empty: at least one normal image is needed")
        bank = (total / count).flatten(1).T.contiguous()  # [h*w, C]
        if self.gamma_c > 1:
            clusters = bank.shape[0] // self.gamma_c
            if clusters < 1:
                raise ValueError(f"gamma_c={self.gamma_c} leaves no cluster of the {bank.shape[0]} feature positions")
            bank, _ = components.fit_kmeans(bank, clusters, components.seeded_generator(self.seed))
        if bank.shape[0] < self.num_nearest + self.num_hard_negatives:
            raise ValueError(f"the memory bank has {bank.shape[0]} items but the loss needs at least "
                             f"{self.num_nearest + self.num_hard_negatives} (K + J): use larger images or a "
                             f"smaller gamma_c")
        self.memory_bank = bank
        self.fitted.fill_(False)

    def configure_optimizers(self, plan: TrainingPlan) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.descriptor.parameters(), lr=self.lr, weight_decay=self.weight_decay,
                                 amsgrad=True)

    def training_step(self, batch: Batch, ctx: StepContext) -> torch.Tensor:
        features = self.patch_features(batch.image).flatten(2).transpose(1, 2).flatten(0, 1)  # [B*h*w, C]
        bank = self.memory_bank
        distances = (features.pow(2).sum(1, keepdim=True) + bank.pow(2).sum(1)
                     - 2 * features @ bank.T)
        return hypersphere_loss(distances, self.num_nearest, self.num_hard_negatives, self.radius)

    def finalize(self) -> None:
        if self.memory_bank.shape[0] == 0:
            raise RuntimeError("Cfa.finalize() called before on_fit_start(): the memory bank is empty")
        self.mark_fitted()

    # -- scoring ---------------------------------------------------------------------------------------
    def compute(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.patch_features(images)
        b, c, h, w = features.shape
        distances, _ = components.knn_search(features.flatten(2).transpose(1, 2).reshape(-1, c), self.memory_bank,
                                             self.num_nearest)
        score = F.softmin(distances, dim=1)[:, 0] * distances[:, 0]
        amap = F.interpolate(score.view(b, 1, h, w), size=images.shape[-2:], mode="bilinear",
                             align_corners=False)[:, 0]
        amap = gaussian_blur(amap, self.sigma)
        return amap.amax(dim=(1, 2)), amap
