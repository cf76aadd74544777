"""DiffusionAD (Zhang et al., "DiffusionAD: Norm-guided One-step Denoising Diffusion for Anomaly Detection",
arXiv:2303.08730).

Reconstruction by noise-to-norm: an image is noised to a step t, and a guided-diffusion UNet's noise
estimate turns it back into a normal-looking image x̂_0 in one step, so an anomaly drowned in the noise is
not reconstructed. Norm guidance: the same image noised to a larger step (t_b ≥ 300) is denoised too; its
cleaner-but-blurrier x̂_0 is re-noised to the normal step t_a and pulls the normal step's noise estimate
towards it (`LinearSchedule.guided_noise`, weight `condition_w`), then x̂_0 comes in one step from the guided
estimate. A DRAEM-like segmentation network reads [input, x̂_0] and outputs the anomaly mask (the map); the
image score is the mean of its `top_k` largest pixels.

Training (the authors' recipe): half of the images get a synthetic anomaly (`ad_recon.diffusionad_synthesis`:
a rotated Perlin mask, kept on the object's foreground when foreground masks are given, filled with an augmented
texture or, for objects, the image's own shuffled strips); the UNet learns the noise of the normal images at a
random normal step t_a ∈ [0, 300) and a random noisier step t_b ∈ [300, T) (MSE); the segmentation network
learns the masks from [augmented image, guided x̂_0] (5 × focal loss, α 0.5, γ 4, plus SmoothL1); one loss
trains both networks end to end, the UNet with Adam at 1e-4, the segmentation network with Adam at 1e-5 under
the authors' cosine schedule (`seg_cosine_steps`). Inference uses t_a = 200, t_b = 400: two UNet passes and one
segmentation pass per image.

Images enter in [0, 1] (the spec turns ImageNet normalisation off), as in the authors' code. The inference
noise is one fixed draw from `noise_seed`, the same for every image, so a prediction is deterministic and does
not depend on the batch (the authors draw fresh noise per call).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ad_core.plugin_api import AnomalyModel, Batch, StepContext, TrainingPlan, components
from ad_recon.diffusion_schedule import LinearSchedule
from ad_recon.diffusion_unet import GuidedDiffusionUNet
from ad_recon.diffusionad_synthesis import DiffusionADSynthesis

SEGMENTATION_DOWNSAMPLE = 32  # five 2x2 max-poolings
SELF_AUGMENT_WITH_FOREGROUND = 0.5  # the authors self-augment half of their object categories' anomalies


def conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(*conv_bn_relu(in_channels, out_channels), *conv_bn_relu(out_channels, out_channels))


class SegmentationSubNetwork(nn.Module):
    """DiffusionAD's segmentation sub-network (DRAEM's discriminative network with one sigmoid output).

    Encoder: six double-conv blocks of widths (1, 2, 4, 8, 8, 8) × base with 2× max-pooling between them; decoder:
    five steps of bilinear ×2 upsampling, a conv, concatenation with the encoder block of that size and a
    double conv; a final 3×3 conv and a sigmoid give the anomaly probability per pixel.
    """

    def __init__(self, in_channels: int = 6, base_channels: int = 64) -> None:
        super().__init__()
        widths = [base_channels * m for m in (1, 2, 4, 8, 8, 8)]
        self.encoder = nn.ModuleList([double_conv(in_channels, widths[0])] +
                                     [double_conv(a, b) for a, b in zip(widths, widths[1:])])
        # decoder step i: upsample + conv to outs[i], concatenate encoder block 5 - i, double conv to outs[i]
        outs = [base_channels * m for m in (8, 4, 2, 1, 1)]
        self.up = nn.ModuleList()
        self.fuse = nn.ModuleList()
        below = widths[-1]
        for skip, out in zip(reversed(widths[:-1]), outs):
            self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
                                         *conv_bn_relu(below, out)))
            self.fuse.append(double_conv(out + skip, out))
            below = out
        self.out = nn.Conv2d(below, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = []
        for index, block in enumerate(self.encoder):
            x = block(x if index == 0 else F.max_pool2d(x, 2))
            features.append(x)
        x = features.pop()
        for up, fuse in zip(self.up, self.fuse):
            x = fuse(torch.cat((up(x), features.pop()), dim=1))
        return torch.sigmoid(self.out(x))


def top_k_mean(maps: torch.Tensor, k: int) -> torch.Tensor:
    """Image scores [B]: the mean of the k largest values of each map [B, H, W] (all of them if fewer)."""
    flat = maps.flatten(1)
    return flat.topk(min(k, flat.shape[1]), dim=1).values.mean(dim=1)


def cosine_factor(step: int, half_period: int) -> float:
    """The segmentation rate's factor after `step` optimiser steps: (1 + cos(π step / half_period)) / 2.

    It falls from 1 to 0 over `half_period` steps and, past it, rises back and falls again with period
    2 × `half_period`: the closed form of torch's `CosineAnnealingLR(T_max=half_period, eta_min=0)` stepped on,
    which the authors step after every batch with T_max = 10.
    """
    return 0.5 * (1.0 + math.cos(math.pi * step / half_period))


def mask_loss(predicted: torch.Tensor, target: torch.Tensor, focal_weight: float, alpha: float,
              gamma: float) -> torch.Tensor:
    """focal_weight × focal(α, γ) + SmoothL1 between the predicted mask probabilities and the target [B, 1, H, W]."""
    probabilities = torch.cat((1.0 - predicted, predicted), dim=1)
    focal = components.focal_loss(probabilities, target, gamma=gamma, alpha=alpha)
    return focal_weight * focal + F.smooth_l1_loss(predicted, target)


class DiffusionAD(AnomalyModel):
    """Norm-guided one-step denoising diffusion plus a segmentation network; gradient-trained, two optimisers."""

    def __init__(
        self,
        base_channels: int = 128,
        channel_mults: Sequence[int] = (1, 1, 2, 2, 4, 4),
        num_res_blocks: int = 2,
        attention_downsample: Sequence[int] = (8, 16, 32),
        num_heads: int = 4,
        dropout: float = 0.0,
        seg_base_channels: int = 64,
        timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        normal_t_range: int = 300,
        condition_w: float = 1.0,
        eval_normal_t: int = 200,
        eval_noisier_t: int = 400,
        lr: float = 1e-4,
        seg_lr: float = 1e-5,
        weight_decay: float = 0.0,
        focal_weight: float = 5.0,
        focal_alpha: float = 0.5,
        focal_gamma: float = 4.0,
        seg_cosine_steps: int | None = 10,
        anomaly_probability: float = 0.5,
        opacity_range: Sequence[float] = (0.2, 0.8),
        anomaly_source_dir: str | None = None,
        foreground_dir: str | None = None,
        self_augment_probability: float | None = None,
        top_k: int = 50,
        noise_seed: int = 0,
    ) -> None:
        super().__init__()
        if not 0 < normal_t_range < timesteps:
            raise ValueError(f"normal_t_range must lie in (0, timesteps={timesteps}), got {normal_t_range}")
        if not 0 <= eval_normal_t < timesteps or not 0 <= eval_noisier_t < timesteps:
            raise ValueError(f"eval_normal_t and eval_noisier_t must lie in [0, {timesteps}), "
                             f"got {eval_normal_t}, {eval_noisier_t}")
        if seg_cosine_steps is not None and seg_cosine_steps < 1:
            raise ValueError(f"seg_cosine_steps must be at least 1 (or None: one annealing over the run), "
                             f"got {seg_cosine_steps}")
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        self.unet = GuidedDiffusionUNet(3, base_channels, channel_mults, num_res_blocks, attention_downsample,
                                        num_heads, dropout)
        self.segmentation = SegmentationSubNetwork(6, seg_base_channels)
        self.schedule = LinearSchedule(timesteps, beta_start, beta_end)
        self.normal_t_range, self.condition_w = int(normal_t_range), float(condition_w)
        self.eval_normal_t, self.eval_noisier_t = int(eval_normal_t), int(eval_noisier_t)
        self.lr, self.seg_lr, self.weight_decay = float(lr), float(seg_lr), float(weight_decay)
        self.focal_weight, self.focal_alpha, self.focal_gamma = float(focal_weight), float(focal_alpha), float(focal_gamma)
        self.seg_cosine_steps = None if seg_cosine_steps is None else int(seg_cosine_steps)
        foregrounds = components.ForegroundMasks(foreground_dir)
        if self_augment_probability is None:  # the authors' choice: objects (with foregrounds) yes, textures no
            self_augment_probability = SELF_AUGMENT_WITH_FOREGROUND if foreground_dir is not None else 0.0
        self.synthesis = DiffusionADSynthesis(components.TextureSource(anomaly_source_dir), foregrounds,
                                              float(anomaly_probability), float(self_augment_probability),
                                              opacity_range)
        self.top_k, self.noise_seed = int(top_k), int(noise_seed)
        self.multiple = max(SEGMENTATION_DOWNSAMPLE, self.unet.downsample_factor)

    # -- the one-step denoising ---------------------------------------------------------------------------
    def norm_guided_x0(self, x0: torch.Tensor, normal_t: torch.Tensor, noisier_t: torch.Tensor,
                       normal_noise: torch.Tensor, noisier_noise: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(guided x̂_0, ε̂ at the normal step, ε̂ at the noisier step) for images x0 noised with the given noises."""
        schedule = self.schedule
        x_normal = schedule.q_sample(x0, normal_t, normal_noise)
        x_noisier = schedule.q_sample(x0, noisier_t, noisier_noise)
        eps_normal = self.unet(x_normal, normal_t)
        eps_noisier = self.unet(x_noisier, noisier_t)
        x0_noisier = schedule.predict_x0(x_noisier, noisier_t, eps_noisier).clamp(-1.0, 1.0)
        guide = schedule.q_sample(x0_noisier, normal_t, eps_normal)
        eps_guided = schedule.guided_noise(eps_normal, x_normal, guide, normal_t, self.condition_w)
        return schedule.predict_x0(x_normal, normal_t, eps_guided).clamp(-1.0, 1.0), eps_normal, eps_noisier

    def _padded(self, images: torch.Tensor) -> torch.Tensor:
        """Images padded (edge pixels repeated, right and bottom) to multiples of both networks' strides."""
        h, w = images.shape[-2:]
        pad_h, pad_w = -h % self.multiple, -w % self.multiple
        return F.pad(images, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else images

    # -- training -----------------------------------------------------------------------------------------
    def training_step(self, batch: Batch, ctx: StepContext) -> torch.Tensor:
        # One generator per step, seeded from the global torch state (which the trainer saves and restores),
        # so synthesis, steps and noise are reproducible and a resumed run continues exactly.
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
        images, masks, labels = self.synthesis(batch.image, batch.path, generator)
        images, masks = self._padded(images), self._padded(masks)
        b, device = images.shape[0], images.device
        normal_t = torch.randint(0, self.normal_t_range, (b,), generator=generator).to(device)
        noisier_t = torch.randint(self.normal_t_range, self.schedule.timesteps, (b,), generator=generator).to(device)
        normal_noise = torch.randn(images.shape, generator=generator).to(images)
        noisier_noise = torch.randn(images.shape, generator=generator).to(images)
        x0, eps_normal, eps_noisier = self.norm_guided_x0(images, normal_t, noisier_t, normal_noise, noisier_noise)
        per_image = ((eps_normal - normal_noise).square().flatten(1).mean(1)
                     + (eps_noisier - noisier_noise).square().flatten(1).mean(1))
        normal = labels == 0
        # the noise is learnt on normal images only; a batch of anomalies alone adds no noise loss
        noise_loss = per_image[normal].mean() if bool(normal.any()) else per_image.sum() * 0.0
        seg_loss = mask_loss(self.segmentation(torch.cat((images, x0), dim=1)), masks, self.focal_weight,
                             self.focal_alpha, self.focal_gamma)
        ctx.log(noise_loss=float(noise_loss.detach()), mask_loss=float(seg_loss.detach()))
        return noise_loss + seg_loss

    def configure_optimizers(self, plan: TrainingPlan) -> list:
        unet = torch.optim.Adam(self.unet.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        seg = torch.optim.Adam(self.segmentation.parameters(), lr=self.seg_lr, weight_decay=self.weight_decay)
        half_period = self.seg_cosine_steps or max(plan.total_steps, 1)
        cosine = torch.optim.lr_scheduler.LambdaLR(seg, lambda step: cosine_factor(step, half_period))
        return [unet, {"optimizer": seg, "scheduler": cosine, "interval": "step"}]

    # -- inference ----------------------------------------------------------------------------------------
    def inference_noise(self, shape: Sequence[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed noises [C, H, W] of the normal and the noisier branch, drawn from `noise_seed`."""
        generator = torch.Generator().manual_seed(self.noise_seed)
        return (torch.randn(tuple(shape), generator=generator).to(device),
                torch.randn(tuple(shape), generator=generator).to(device))

    def compute(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = images.shape[-2:]
        padded = self._padded(images)
        b = padded.shape[0]
        normal_noise, noisier_noise = self.inference_noise(padded.shape[1:], padded.device)
        normal_t = torch.full((b,), self.eval_normal_t, dtype=torch.long, device=padded.device)
        noisier_t = torch.full((b,), self.eval_noisier_t, dtype=torch.long, device=padded.device)
        x0, _, _ = self.norm_guided_x0(padded, normal_t, noisier_t, normal_noise.expand_as(padded),
                                       noisier_noise.expand_as(padded))
        maps = self.segmentation(torch.cat((padded, x0), dim=1))[:, 0, :h, :w]
        return top_k_mean(maps, self.top_k), maps
