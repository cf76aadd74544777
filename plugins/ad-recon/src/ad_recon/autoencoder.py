"""The convolutional autoencoder baseline of Bergmann et al., "Improving Unsupervised Defect Segmentation by
Applying Structural Similarity to Autoencoders" (VISAPP 2019).

Encoder (Table 1 of the paper): nine convolutions, 4x4 stride 2 / 3x3 stride 1 with 32-64-128 channels, then a
convolution the size of the remaining grid that maps to a latent vector of `latent_dim` (100) values; the decoder
mirrors it with transposed convolutions. LeakyReLU 0.2 after every layer except the latent and the output.
Trained on normal images with a per-pixel L2 loss (`loss="l2"`) or the SSIM loss (`loss="ssim"`, 11x11 window);
the anomaly map is the matching residual (squared error, or 1 - SSIM averaged over channels), the image score its
maximum.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ad_core.plugin_api import AnomalyModel, Batch, StepContext, TrainingPlan
from ad_core.plugin_api import components as C
from ad_recon.sizes import as_size, check_multiple

# (kernel, stride, out channels) of the encoder before the latent layer (the paper's Table 1).
ENCODER_LAYERS = ((4, 2, 32), (4, 2, 32), (3, 1, 32), (4, 2, 64), (3, 1, 64), (4, 2, 128), (3, 1, 64), (3, 1, 32))
STRIDE = 16  # four stride-2 layers
LOSSES = ("l2", "ssim")


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


def build_encoder(latent_dim: int, grid: tuple[int, int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for kernel, stride, out in ENCODER_LAYERS:
        layers += [nn.Conv2d(channels, out, kernel, stride, padding=1 if kernel == 4 else kernel // 2), _act()]
        channels = out
    layers.append(nn.Conv2d(channels, latent_dim, grid))  # the whole grid to one latent vector
    return nn.Sequential(*layers)


def build_decoder(latent_dim: int, grid: tuple[int, int]) -> nn.Sequential:
    layers: list[nn.Module] = [nn.ConvTranspose2d(latent_dim, 32, grid), _act()]
    channels = 32
    for kernel, stride, out in reversed(ENCODER_LAYERS[1:]):
        if stride == 2:
            layers += [nn.ConvTranspose2d(channels, out, kernel, stride, padding=1), _act()]
        else:
            layers += [nn.Conv2d(channels, out, kernel, padding=kernel // 2), _act()]
        channels = out
    layers.append(nn.ConvTranspose2d(channels, 3, 4, 2, padding=1))  # mirrors the first layer, linear output
    return nn.Sequential(*layers)


class Autoencoder(AnomalyModel):
    """Convolutional autoencoder with an L2 or SSIM objective and residual map; trained by the gradient trainer."""

    def __init__(self, image_size: int | Sequence[int] = 128, latent_dim: int = 100, loss: str = "l2",
                 lr: float = 2e-4, weight_decay: float = 1e-5, ssim_window: int = 11) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.size = as_size(image_size)
        check_multiple("the autoencoder", self.size, STRIDE, STRIDE)
        grid = (self.size[0] // STRIDE, self.size[1] // STRIDE)
        self.encoder = build_encoder(int(latent_dim), grid)
        self.decoder = build_decoder(int(latent_dim), grid)
        self.loss, self.lr, self.weight_decay, self.ssim_window = loss, float(lr), float(weight_decay), int(ssim_window)

    def _check_input(self, images: torch.Tensor) -> None:
        if tuple(images.shape[-2:]) != self.size:
            raise ValueError(f"the autoencoder was built for {self.size[0]}x{self.size[1]} images (its latent layer "
                             f"spans the whole grid), got {images.shape[-2]}x{images.shape[-1]}")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self._check_input(images)
        return self.decoder(self.encoder(images))

    def residual(self, images: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """The per-pixel residual [B, H, W]: squared error or 1 - SSIM, averaged over channels."""
        if self.loss == "ssim":
            _, dissimilarity = C.ssim_loss(reconstruction, images, window_size=self.ssim_window, return_map=True)
            return dissimilarity.mean(1)
        return (reconstruction - images).pow(2).mean(1)

    def training_step(self, batch: Batch, ctx: StepContext) -> torch.Tensor:
        reconstruction = self(batch.image)
        if self.loss == "ssim":
            return C.ssim_loss(reconstruction, batch.image, window_size=self.ssim_window)
        return (reconstruction - batch.image).pow(2).mean()

    def configure_optimizers(self, plan: TrainingPlan) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    def compute(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        amap = self.residual(images, self(images))
        return amap.amax(dim=(1, 2)), amap
