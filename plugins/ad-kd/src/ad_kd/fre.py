"""FRE (Ndiour et al., "FRE: A Fast Method For Anomaly Detection And Segmentation", BMVC 2023).

Normal images' deep features lie close to a low-dimensional linear subspace. A tied shallow linear
autoencoder (encoder W, decoder Wᵀ: a learnt PCA) is fitted to the average-pooled layer-3 feature tensor of a
frozen backbone, flattened per image. The feature reconstruction error e = u − (T⁻¹∘T)u scores an image by
‖e‖²; re-arranged as the feature tensor and averaged over channels it is the anomaly map.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from ad_core.data.transforms import to_size
from ad_core.components.backbone import BackboneConfig
from ad_core.model import AnomalyModel
from ad_core.training import StepContext, TrainingPlan
from ad_core.types import Batch


class TiedAutoencoder(nn.Module):
    """x ↦ Wᵀ(Wx + b_e) + b_d with one weight matrix W [latent, input] (Xavier-initialised)."""

    def __init__(self, input_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(latent_dim, input_dim))
        nn.init.xavier_uniform_(self.weight)
        self.encoder_bias = nn.Parameter(torch.zeros(latent_dim))
        self.decoder_bias = nn.Parameter(torch.zeros(input_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.weight, self.encoder_bias), self.weight.t(), self.decoder_bias)


class Fre(AnomalyModel):
    """Feature reconstruction error of a tied linear autoencoder; trains with the core's gradient trainer.

    The autoencoder's input size is the pooled feature tensor's, so it depends on `image_size`: predict at
    the size the model was built for.
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        layer: str | int = "layer3",
        pretrained: bool = True,
        weights_file: str | None = None,
        backbone_dir: str | None = None,
        pooling_kernel_size: int = 2,
        latent_dim: int = 220,
        lr: float = 1e-3,
        image_size: int | tuple[int, int] = 256,
    ) -> None:
        super().__init__()
        if pooling_kernel_size < 1 or latent_dim < 1:
            raise ValueError(f"pooling_kernel_size and latent_dim must be >= 1, got {pooling_kernel_size}, "
                             f"{latent_dim}")
        self.backbone = BackboneConfig(backbone, (layer,), pretrained, weights_file, backbone_dir).frozen()
        self.pooling_kernel_size = int(pooling_kernel_size)
        self.lr = float(lr)
        self.image_size = to_size(image_size)
        with torch.no_grad():  # the backbone's own arithmetic (padding, rounding) gives the feature size
            probe = self.backbone(torch.zeros(1, 3, *self.image_size))[0]
        k = self.pooling_kernel_size
        channels, h, w = probe.shape[1], probe.shape[2] // k, probe.shape[3] // k
        if h < 1 or w < 1:
            raise ValueError(f"image size {self.image_size} is too small for FRE on {backbone} {layer} with "
                             f"pooling {pooling_kernel_size}: the pooled feature map would be empty")
        self.feature_shape = (channels, h, w)
        self.autoencoder = TiedAutoencoder(channels * h * w, int(latent_dim))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled layer features [B, C, h, w] of the frozen backbone."""
        feature = self.backbone(images)[0]
        if self.pooling_kernel_size > 1:
            feature = F.avg_pool2d(feature, self.pooling_kernel_size)
        if tuple(feature.shape[1:]) != self.feature_shape:
            raise ValueError(f"FRE was built for {self.image_size[0]}x{self.image_size[1]} images (features "
                             f"{self.feature_shape}) but got {tuple(images.shape[-2:])} images (features "
                             f"{tuple(feature.shape[1:])}): use the model's image_size")
        return feature

    def training_step(self, batch: Batch, ctx: StepContext) -> torch.Tensor:
        u = self.features(batch.image).flatten(1)
        return F.mse_loss(self.autoencoder(u), u)

    def configure_optimizers(self, plan: TrainingPlan) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.autoencoder.parameters(), lr=self.lr)

    def compute(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature = self.features(images)
        u = feature.flatten(1)
        error = (u - self.autoencoder(u)).pow(2).view_as(feature)
        return error.sum(dim=(1, 2, 3)), error.mean(1)
