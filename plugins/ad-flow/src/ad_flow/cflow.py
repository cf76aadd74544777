"""CFLOW-AD (Gudovskiy et al., "CFLOW-AD: Real-Time Unsupervised Anomaly Detection with Localization via
Conditional Normalizing Flows", WACV 2022).

A frozen encoder gives feature maps at several scales. Every feature vector ("fiber") of a scale is modelled
by that scale's conditional normalizing flow, the condition being a 2D sinusoidal encoding of the fiber's
position. Training draws random batches of N fibers from the image batch and takes one optimiser step per
fiber batch, minimising -log sigmoid(log p(x) / C). At test time the per-dimension log-likelihood maps are
turned into probabilities, upsampled and summed over scales; the anomaly map is their complement and the
image score its maximum.

The reference normalises each scale's log-likelihoods by their maximum over the whole test set, so scores
depend on the other test images. Here the maximum is taken over the training fibers of the last training
epoch (a constant of the fitted model), and the complement is taken from the number of scales (the largest
summed probability) instead of the test set's largest summed map. Both constants shift or scale every map
alike, so rankings within a test set are those of the reference, and scores no longer depend on the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ad_core.components.backbone import BackboneConfig, image_chunks
from ad_core.model import AnomalyModel
from ad_core.training import StepContext, TrainingPlan
from ad_core.types import Batch
from ad_flow.coupling import AffineCouplingBlock, SequentialFlow

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def positional_encoding_2d(channels: int, height: int, width: int) -> torch.Tensor:
    """[channels, height, width] sinusoidal encoding: the first half encodes x, the second half y."""
    if channels % 4:
        raise ValueError(f"the positional encoding needs a multiple of 4 channels, got {channels}")
    half = channels // 2
    frequencies = torch.exp(torch.arange(0.0, half, 2) * -(math.log(1e4) / half))
    x = torch.arange(float(width)).unsqueeze(1) * frequencies  # [W, half/2]
    y = torch.arange(float(height)).unsqueeze(1) * frequencies  # [H, half/2]
    encoding = torch.zeros(channels, height, width)
    encoding[0:half:2] = torch.sin(x).t().unsqueeze(1).expand(-1, height, -1)
    encoding[1:half:2] = torch.cos(x).t().unsqueeze(1).expand(-1, height, -1)
    encoding[half::2] = torch.sin(y).t().unsqueeze(2).expand(-1, -1, width)
    encoding[half + 1 :: 2] = torch.cos(y).t().unsqueeze(2).expand(-1, -1, width)
    return encoding


def fc_subnet(in_features: int, out_features: int) -> nn.Module:
    """The reference's coupling subnet: Linear(in, 2 in), ReLU, Linear(2 in, out)."""
    return nn.Sequential(nn.Linear(in_features, 2 * in_features), nn.ReLU(), nn.Linear(2 * in_features, out_features))


class WarmupCosine:
    """The reference's learning-rate factor per epoch. Training is cut into `meta_epochs` equal meta epochs
    (the reference: 25 of 8 epochs each); the rate warms up linearly from 1/10 over the first two of them,
    then follows a cosine per meta epoch down to 1/1000. Short runs keep the shape (a 5-epoch run has no
    epoch left to warm up in and starts on the cosine)."""

    def __init__(self, num_epochs: int, meta_epochs: int = 25, warm_meta_epochs: int = 2, decay: float = 1e-3) -> None:
        self.num_epochs = max(1, int(num_epochs))
        self.meta_epochs = max(1, int(meta_epochs))
        self.warm = int(warm_meta_epochs)
        self.decay = float(decay)

    def cosine(self, meta_epoch: int) -> float:
        return self.decay + (1 - self.decay) * (1 + math.cos(math.pi * meta_epoch / self.meta_epochs)) / 2

    def __call__(self, epoch: int) -> float:
        meta_epoch = epoch * self.meta_epochs // self.num_epochs
        if meta_epoch >= self.warm:
            return self.cosine(meta_epoch)
        # The reference warms up per iteration; per epoch, take the warm-up's value at the epoch's middle.
        progress = min(1.0, (epoch + 0.5) * self.meta_epochs / (self.warm * self.num_epochs))
        return 0.1 + progress * (self.cosine(self.warm) - 0.1)


class CFlow(AnomalyModel):
    """CFLOW-AD with fiber-batch training; see the module docstring for the score normalisation."""

    automatic_optimization = False  # several optimiser steps (fiber batches) per image batch

    def __init__(
        self,
        backbone: str = "wide_resnet50_2",
        layers: Sequence[str] = ("layer2", "layer3", "layer4"),
        coupling_blocks: int = 8,
        clamp_alpha: float = 1.9,
        condition_dim: int = 128,
        fiber_batch_size: int = 256,
        soft_permutation: bool = True,
        lr: float = 2e-4,
        lr_schedule: bool = True,
        meta_epochs: int = 25,
        pretrained: bool = True,
        weights_file: str | None = None,
        backbone_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if coupling_blocks < 1 or fiber_batch_size < 1:
            raise ValueError("coupling_blocks and fiber_batch_size must be at least 1")
        self.condition_dim = int(condition_dim)
        positional_encoding_2d(self.condition_dim, 1, 1)  # validates condition_dim early
        self.fiber_batch_size = int(fiber_batch_size)
        self.lr = float(lr)
        self.lr_schedule, self.meta_epochs = bool(lr_schedule), int(meta_epochs)
        self.seed = int(seed)
        self.encoder = BackboneConfig(backbone, layers, pretrained, weights_file, backbone_dir).frozen()
        self.decoders = nn.ModuleList(
            SequentialFlow(
                AffineCouplingBlock(channels, fc_subnet, condition_channels=self.condition_dim, clamp=clamp_alpha,
                                    soft_permutation=soft_permutation, seed=1000 * (scale + 1) + 10 * seed + block)
                for block in range(coupling_blocks)
            )
            for scale, channels in enumerate(self.encoder.channels)
        )
        # Per scale: the largest per-dimension log-likelihood of a training fiber (see the module docstring).
        self.register_buffer("log_prob_max", torch.zeros(len(self.decoders)))
        self._epoch_max = torch.full((len(self.decoders),), -math.inf)
        self._generator = torch.Generator().manual_seed(self.seed)

    def log_prob(self, scale: int, fibers: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """log p(fiber) / C for [N, C] fibers and their [N, P] position encodings."""
        z, log_det = self.decoders[scale](fibers, condition)
        channels = fibers.shape[1]
        return (-channels * LOG_SQRT_2PI - 0.5 * z.pow(2).sum(1) + log_det) / channels

    def _fibers(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B*H*W, C] fibers and their [B*H*W, P] position encodings (image-major, then row-major)."""
        b, c, h, w = feature.shape
        encoding = positional_encoding_2d(self.condition_dim, h, w).to(feature)
        condition = encoding.flatten(1).t().repeat(b, 1)
        return feature.permute(0, 2, 3, 1).reshape(b * h * w, c), condition

    # -- training ------------------------------------------------------------------------------------
    def training_step(self, batch: Batch, ctx: StepContext) -> torch.Tensor:
        """One optimiser step per batch of `fiber_batch_size` random fibers, scale after scale."""
        features = self.encoder(batch.image)
        total, count = 0.0, 0
        for scale, feature in enumerate(features):
            fibers, condition = self._fibers(feature)
            # Whole fiber batches only, as the reference; a small last image batch gives one smaller fiber batch.
            used = max(fibers.shape[0] // self.fiber_batch_size * self.fiber_batch_size, min(fibers.shape[0],
                                                                                           self.fiber_batch_size))
            order = torch.randperm(fibers.shape[0], generator=self._generator).to(fibers.device)
            for index in order[:used].split(self.fiber_batch_size):
                log_prob = self.log_prob(scale, fibers[index], condition[index])
                loss = -F.logsigmoid(log_prob)
                ctx.optimizer.zero_grad(set_to_none=True)
                ctx.backward(loss.mean())
                ctx.step_optimizer(ctx.optimizer)
                total += float(loss.detach().sum())
                count += loss.numel()
                self._epoch_max[scale] = max(float(self._epoch_max[scale]), float(log_prob.detach().max()))
        return torch.tensor(total / count)

    def training_state(self) -> dict[str, torch.Tensor]:
        """The fiber shuffle's generator and this epoch's running maxima: a resumed run continues them."""
        return {"fiber_generator": self._generator.get_state(), "epoch_max": self._epoch_max.clone()}

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        if state:
            self._generator.set_state(state["fiber_generator"])
            self._epoch_max.copy_(state["epoch_max"])

    def on_train_epoch_end(self, epoch: int) -> None:
        self.log_prob_max.copy_(self._epoch_max.to(self.log_prob_max))
        self._epoch_max.fill_(-math.inf)

    def configure_optimizers(self, plan: TrainingPlan) -> torch.optim.Optimizer | dict:
        """Adam; with a number of epochs, the reference's warm-up and cosine over them (`WarmupCosine`)."""
        optimizer = torch.optim.Adam(self.decoders.parameters(), lr=self.lr)
        if not (self.lr_schedule and plan.num_epochs):
            return optimizer
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(plan.num_epochs, self.meta_epochs))
        return {"optimizer": optimizer, "scheduler": schedule, "interval": "epoch"}

    # -- scoring -------------------------------------------------------------------------------------
    def compute(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = torch.cat([self._anomaly_map(chunk) for chunk in image_chunks(images)])
        return maps.amax(dim=(-2, -1)), maps

    def _anomaly_map(self, images: torch.Tensor) -> torch.Tensor:
        probability = torch.zeros(images.shape[0], *images.shape[-2:], device=images.device)
        for scale, feature in enumerate(self.encoder(images)):
            b, _, h, w = feature.shape
            fibers, condition = self._fibers(feature)
            log_prob = torch.cat([
                self.log_prob(scale, part, cond)
                for part, cond in zip(fibers.split(4096), condition.split(4096))
            ])
            scale_map = torch.exp(log_prob - self.log_prob_max[scale]).view(b, 1, h, w)
            probability += F.interpolate(scale_map, size=images.shape[-2:], mode="bilinear", align_corners=True)[:, 0]
        return len(self.decoders) - probability
