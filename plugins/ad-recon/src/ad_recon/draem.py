"""DRAEM (Zavrtanik, Kristan and Skočaj, "DRAEM - A discriminatively trained reconstruction embedding for
surface anomaly detection", ICCV 2021).

A reconstructive sub-network (encoder-decoder, base width 128) learns to restore normal images from images with
simulated anomalies (`ad_recon.draem_synthesis`); a discriminative U-Net (base width 64) sees the reconstruction
and the input side by side (6 channels) and segments the anomaly (2 classes). Loss (authors' code): L2 + (1 - SSIM)
of the reconstruction + focal loss (gamma 2) of the segmentation. Adam, lr 1e-4, for both sub-networks, the
learning rate multiplied by 0.2 at 80 % and 90 % of the run (700 epochs in the paper). The anomaly map is the
segmentation's anomalous-class probability; the image score is the maximum of that map average-pooled over
21x21 pixels (the authors' test code; `score_pooling=1` takes the plain maximum, as anomalib does).
Images are fed in [0, 1]: DRAEM is trained without ImageNet normalisation.

anomalib 2.7's training regime is an option, off by default: `focal_alpha` (kornia's focal loss: class weights
[1 - a, a], mean over classes x pixels; anomalib uses a = 1, which ignores the background class),
`empty_mask_retries=10` and `opacity_range=(0.1, 1.0)` (its augmenter; see `ad_recon.draem_synthesis`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ad_core.plugin_api import AnomalyModel, Batch, StepContext, TrainingPlan
from ad_core.plugin_api import components as C
from ad_recon.draem_synthesis import DraemSynthesis
from ad_recon.sizes import as_size, check_multiple

STRIDE = 32  # the discriminative U-Net halves the image five times


def conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def double_conv(cin: int, cmid: int, cout: int | None = None) -> nn.Sequential:
    return nn.Sequential(*conv_bn_relu(cin, cmid), *conv_bn_relu(cmid, cmid if cout is None else cout))


def up_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True), *conv_bn_relu(cin, cout))


class Encoder(nn.Module):
    """Double convolutions with max pooling between them; every block's output is kept (for the U-Net)."""

    def __init__(self, cin: int, width: int, multipliers: Sequence[int]) -> None:
        super().__init__()
        channels = [cin, *(width * m for m in multipliers)]
        self.blocks = nn.ModuleList(double_conv(a, b) for a, b in zip(channels[:-1], channels[1:]))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for index, block in enumerate(self.blocks):
            x = block(x if index == 0 else F.max_pool2d(x, 2))
            outputs.append(x)
        return outputs


class ReconstructiveNetwork(nn.Module):
    """Encoder (1, 2, 4, 8, 8 x width, four poolings) and a decoder without skip connections."""

    def __init__(self, width: int = 128) -> None:
        super().__init__()
        self.encoder = Encoder(3, width, (1, 2, 4, 8, 8))
        self.stages = nn.ModuleList(
            nn.ModuleDict({"up": up_conv(width * cin, width * cin), "block": double_conv(width * cin, width * cin,
                                                                                          width * cout)})
            for cin, cout in ((8, 4), (4, 2), (2, 1), (1, 1)))
        self.out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.encoder(x)[-1]
        for stage in self.stages:
            x = stage["block"](stage["up"](x))
        return self.out(x)


class DiscriminativeNetwork(nn.Module):
    """U-Net: encoder (1, 2, 4, 8, 8, 8 x width, five poolings), decoder with skip connections, 2-class logits."""

    def __init__(self, width: int = 64, cin: int = 6, classes: int = 2) -> None:
        super().__init__()
        self.encoder = Encoder(cin, width, (1, 2, 4, 8, 8, 8))
        self.stages = nn.ModuleList(
            nn.ModuleDict({"up": up_conv(width * cin_up, width * cout),
                           "block": double_conv(width * (cout + skip), width * cout)})
            for cin_up, cout, skip in ((8, 8, 8), (8, 4, 8), (4, 2, 4), (2, 1, 2), (1, 1, 1)))
        self.out = nn.Conv2d(width, classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = self.encoder(x)
        x = skips[-1]
        for stage, skip in zip(self.stages, reversed(skips[:-1])):
            x = stage["block"](torch.cat([stage["up"](x), skip], dim=1))
        return self.out(x)


def pooled_max(amap: torch.Tensor, kernel: int) -> torch.Tensor:
    """Max of the map [B, H, W] average-pooled over kernel x kernel (zero padding, stride 1); plain max if <= 1.

    The box mean is taken along columns, then rows (2k additions per pixel instead of k^2: the square 21x21
    `avg_pool2d` on one channel cost about 5 % of DRAEM's predict at 64 px); equal to it to rounding."""
    if kernel > 1:
        pad = kernel // 2
        amap = F.avg_pool2d(amap.unsqueeze(1), (kernel, 1), stride=1, padding=(pad, 0))
        amap = F.avg_pool2d(amap, (1, kernel), stride=1, padding=(0, pad)).squeeze(1)
    return amap.amax(dim=(1, 2))


class Draem(AnomalyModel):
    """DRAEM; trained by the core's gradient trainer on anomalies synthesised per batch from its own seed."""

    def __init__(self, image_size: int | Sequence[int] = 256, anomaly_source_dir: str | Path | None = None,
                 lr: float = 1e-4, lr_milestones: Sequence[float] = (0.8, 0.9), lr_gamma: float = 0.2,
                 score_pooling: int = 21, anomaly_probability: float = 0.5, rotation_probability: float = 0.3,
                 reconstructive_width: int = 128,
                 discriminative_width: int = 64, seed: int = 0, normalize: bool = False,
                 focal_alpha: float | None = None, empty_mask_retries: int = 0,
                 opacity_range: Sequence[float] = (0.2, 1.0)) -> None:
        super().__init__()
        if normalize:
            raise ValueError("DRAEM is trained on images in [0, 1] (the synthetic textures and the SSIM loss assume "
                             "it): it cannot run with normalize=True. Leave normalize at its default (False).")
        check_multiple("DRAEM", as_size(image_size), STRIDE, STRIDE)
        self.reconstructive = ReconstructiveNetwork(int(reconstructive_width))
        self.discriminative = DiscriminativeNetwork(int(discriminative_width))
        if isinstance(opacity_range, str) or not isinstance(opacity_range, Sequence) or len(opacity_range) != 2:
            raise ValueError(f"opacity_range must be two numbers (low, high), got {opacity_range}")
        if focal_alpha is not None and not 0.0 <= float(focal_alpha) <= 1.0:
            raise ValueError(f"focal_alpha must be None (the authors' focal loss) or in [0, 1], got {focal_alpha}")
        self.synthesis = DraemSynthesis(C.TextureSource(anomaly_source_dir), float(anomaly_probability),
                                        rotation_probability=float(rotation_probability),
                                        opacity_range=(float(opacity_range[0]), float(opacity_range[1])),
                                        empty_mask_retries=int(empty_mask_retries))
        self.focal_alpha = None if focal_alpha is None else float(focal_alpha)
        self.lr, self.lr_milestones, self.lr_gamma = float(lr), tuple(float(m) for m in lr_milestones), float(lr_gamma)
        self.score_pooling, self.seed = int(score_pooling), int(seed)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction [B, 3, H, W], segmentation logits [B, 2, H, W])."""
        check_multiple("DRAEM", (int(images.shape[-2]), int(images.shape[-1])), STRIDE, STRIDE)
        reconstruction = self.reconstructive(images)
        return reconstruction, self.discriminative(torch.cat([reconstruction, images], dim=1))

    def loss(self, images: torch.Tensor, augmented: torch.Tensor, masks: torch.Tensor
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L2 + (1 - SSIM) between reconstruction and clean image, + focal loss of the segmentation."""
        reconstruction, logits = self(augmented)
        parts = {"l2": F.mse_loss(reconstruction, images), "ssim": C.ssim_loss(reconstruction, images),
                 "focal": self.focal(torch.softmax(logits, dim=1), masks)}
        return parts["l2"] + parts["ssim"] + parts["focal"], parts

    def focal(self, probabilities: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """The authors' focal loss (both classes weighted 1, smoothed target), or with `focal_alpha` kornia's as
        anomalib uses it: class weights [1 - a, a], the mean over classes x pixels (half the per-pixel mean).
        The smoothing is kept in both, so log p stays finite (0 x log 0 would be NaN at a = 1)."""
        if self.focal_alpha is None:
            return C.focal_loss(probabilities, masks)
        return C.focal_loss(probabilities, masks, alpha=self.focal_alpha) / probabilities.shape[1]

    def training_step(self, batch: Batch, ctx: StepContext) -> torch.Tensor:
        count, height, width = batch.image.shape[0], batch.image.shape[-2], batch.image.shape[-1]
        if count * (height // STRIDE) * (width // STRIDE) < 2:
            raise ValueError(f"DRAEM needs at least 2 training images at {height}x{width} px: its U-Net's batch "
                             "norm needs 2 values per channel at the 1x1 bottleneck (use larger images or more)")
        generator = C.seeded_generator(self.seed * 1_000_003 + ctx.step)  # reproducible, and resumable by step
        images, augmented, masks = self.synthesis(batch.image, generator)
        loss, parts = self.loss(images, augmented, masks)
        ctx.log(**{f"loss_{k}": v.item() for k, v in parts.items()})
        return loss

    def configure_optimizers(self, plan: TrainingPlan) -> dict:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.lr)
        milestones = sorted({max(1, int(m * plan.total_steps)) for m in self.lr_milestones})
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=self.lr_gamma)
        return {"optimizer": optimizer, "scheduler": scheduler, "interval": "step"}

    def compute(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, logits = self(images)
        amap = torch.softmax(logits, dim=1)[:, 1]
        return pooled_max(amap, self.score_pooling), amap
