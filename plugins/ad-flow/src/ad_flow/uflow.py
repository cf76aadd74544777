"""U-Flow (Tailanian, Pardo, Musé, U-Flow: A U-shaped Normalizing Flow for Anomaly Detection with
Unsupervised Threshold, 2022/2024).

Multi-scale features (the paper's MS-CaiT, or a CNN's first three stages) feed a U-shaped normalizing flow:
the coarsest scale is transformed first; half of its channels become that scale's latent, the other half is
invertibly up-sampled (2x2 pixel shuffle) and concatenated to the next finer scale's features, and so on.
Every stage is a chain of all-in-one affine coupling blocks whose subnets alternate 3x3 and 1x1 kernels.
Trained by maximum likelihood. The anomaly map is either 1 - mean over scales of exp(-mean_c z²/2) (the
paper's likelihood map) or -log10 NFA, whose threshold 0 is the paper's automatic, a-contrario one (ties in
the NFA map are broken by a thousandth of the likelihood map).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ad_core.components.backbone import BackboneConfig
from ad_core.components.vit import FrozenViT
from ad_core.model import AnomalyModel
from ad_core.training import StepContext, TrainingPlan
from ad_core.types import Batch
from ad_flow.coupling import AffineCouplingBlock, SequentialFlow
from ad_flow.nfa import log_nfa

SCORE_MAPS = ("nfa", "likelihood")
# The -log NFA map takes few distinct values (window counts) and saturates when a flow is far from trained, so
# whole images tie; this multiple of the likelihood map (in [0, 1]) orders tied pixels and moves the decision
# at 0 by at most 1e-3 in log10 NFA (NFA < 1.0023 instead of < 1).
NFA_TIE_BREAK = 1e-3
MCAIT = "mcait"
# The paper's MS-CaiT (its Table 6): CaiT-M48 at 448 px read after block index 40, CaiT-S24 at 224 px after 20.
MCAIT_PARTS = (("cait_m48_448.fb_dist_in1k", 448, 40), ("cait_s24_224.fb_dist_in1k", 224, 20))


class CnnScales(nn.Module):
    """A CNN's feature maps (finest first), each layer-normalised over (C, H, W) per image."""

    def __init__(self, backbone: BackboneConfig) -> None:
        super().__init__()
        self.backbone = backbone.frozen()
        self.channels = self.backbone.channels

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [F.layer_norm(f, f.shape[1:]) for f in self.backbone(images)]


class MultiScaleCait(nn.Module):
    """The paper's MS-CaiT extractor: two CaiT models, each fed the image resized to its own size (bicubic)."""

    def __init__(self, pretrained: bool, backbone_dir: str | None) -> None:
        super().__init__()
        self.parts = nn.ModuleList(
            FrozenViT(BackboneConfig(name, (block,), pretrained, backbone_dir=backbone_dir), size)
            for name, size, block in MCAIT_PARTS
        )
        self.channels = [part.channels[0] for part in self.parts]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for part in self.parts:
            x = images
            if tuple(x.shape[-2:]) != part.image_size:
                x = F.interpolate(x, size=part.image_size, mode="bicubic", align_corners=True)
            maps.append(part(x)[0])
        return maps


def coupling_subnet(kernel_size: int, ratio: float):
    """The paper's subnet: conv, ReLU, conv with `same` padding and int(ratio * in) hidden channels."""

    def build(in_channels: int, out_channels: int) -> nn.Module:
        hidden = max(1, int(in_channels * ratio))
        return nn.Sequential(nn.Conv2d(in_channels, hidden, kernel_size, padding="same"), nn.ReLU(),
                             nn.Conv2d(hidden, out_channels, kernel_size, padding="same"))

    return build


class UShapedFlow(nn.Module):
    """Flow stages from the coarsest scale to the finest, joined by split / pixel-shuffle / concatenate.

    `channels` lists the feature channels finest first; latents come back finest first as well.
    """

    def __init__(self, channels: Sequence[int], flow_steps: int, clamp: float, subnet_ratio: float,
                 soft_permutation: bool, seed: int) -> None:
        super().__init__()
        n = len(channels)
        stage_channels = [0] * n
        stage_channels[-1] = channels[-1]
        for i in reversed(range(1, n)):
            stage_channels[i - 1] = channels[i - 1] + self.sent_up(stage_channels[i]) // 4
        self.stages = nn.ModuleList(
            SequentialFlow(
                AffineCouplingBlock(c, coupling_subnet(3 if step % 2 == 0 else 1, subnet_ratio), clamp=clamp,
                                    soft_permutation=soft_permutation, seed=seed + 100 * i + step)
                for step in range(flow_steps)
            )
            for i, c in enumerate(stage_channels)
        )

    @staticmethod
    def sent_up(channels: int) -> int:
        """Channels of a stage's output that go on to the finer scale (about half, a multiple of 4)."""
        return channels // 8 * 4

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        n = len(features)
        latents: list[torch.Tensor] = [features[0]] * n
        x = features[-1]
        log_det = x.new_zeros(x.shape[0])
        for i in reversed(range(n)):
            x, stage_log_det = self.stages[i](x)
            log_det = log_det + stage_log_det
            if i == 0:
                latents[0] = x
                break
            up = self.sent_up(x.shape[1])
            latents[i] = x[:, up:]
            x = torch.cat([features[i - 1], F.pixel_shuffle(x[:, :up], 2)], 1)  # invertible 2x up-sampling
        return latents, log_det


class UFlow(AnomalyModel):
    """U-Flow; `backbone="mcait"` is the paper's extractor, a timm CNN name uses its layers 1-3."""

    def __init__(
        self,
        backbone: str = MCAIT,
        layers: Sequence[str] = ("layer1", "layer2", "layer3"),
        flow_steps: int = 4,
        clamp: float = 2.0,
        subnet_ratio: float = 1.0,
        soft_permutation: bool = False,
        score_map: str = "nfa",
        nfa_window: int = 7,
        nfa_probability: float = 0.5,
        lr: float = 1e-4,
        weight_decay: float = 1e-5,
        lr_end_factor: float = 0.4,
        seed: int = 0,
        pretrained: bool = True,
        weights_file: str | None = None,
        backbone_dir: str | None = None,
    ) -> None:
        super().__init__()
        if score_map not in SCORE_MAPS:
            raise ValueError(f"score_map must be one of {SCORE_MAPS}, got {score_map!r}")
        if flow_steps < 1:
            raise ValueError(f"flow_steps must be at least 1, got {flow_steps}")
        self.score_map = score_map
        self.nfa_window, self.nfa_probability = int(nfa_window), float(nfa_probability)
        self.lr, self.weight_decay, self.lr_end_factor = float(lr), float(weight_decay), float(lr_end_factor)
        if backbone == MCAIT:
            if weights_file is not None:
                raise ValueError("mcait reads two CaiT models: put both weight files in backbone_dir instead of "
                                 "passing weights_file")
            self.extractor: nn.Module = MultiScaleCait(pretrained, backbone_dir)
        else:
            self.extractor = CnnScales(BackboneConfig(backbone, layers, pretrained, weights_file, backbone_dir))
        self.flow = UShapedFlow(self.extractor.channels, flow_steps, clamp, subnet_ratio, soft_permutation, seed)

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        features = self.extractor(images)
        for finer, coarser in zip(features, features[1:]):
            if finer.shape[-2] != 2 * coarser.shape[-2] or finer.shape[-1] != 2 * coarser.shape[-1]:
                raise ValueError(
                    f"U-Flow needs each feature scale to be twice the next one; got {tuple(finer.shape[-2:])} and "
                    f"{tuple(coarser.shape[-2:])} for images of {tuple(images.shape[-2:])}: use an image size that "
                    f"is a multiple of the coarsest stride"
                )
        return self.flow(features)

    def training_step(self, batch: Batch, ctx: StepContext) -> torch.Tensor:
        """Negative log-likelihood of the latents of all scales, per image, averaged over the batch."""
        latents, log_det = self(batch.image)
        half_sq = sum(0.5 * z.pow(2).flatten(1).sum(1) for z in latents)
        return torch.mean(half_sq - log_det)

    def configure_optimizers(self, plan: TrainingPlan) -> torch.optim.Optimizer | dict:
        """Adam; with a number of epochs, the rate falls linearly to `lr_end_factor` over them."""
        optimizer = torch.optim.Adam(self.flow.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        if not plan.num_epochs:
            return optimizer
        schedule = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=self.lr_end_factor,
                                                     total_iters=int(plan.num_epochs))
        return {"optimizer": optimizer, "scheduler": schedule, "interval": "epoch"}

    def fixed_thresholds(self) -> dict[str, float]:
        """With the -log NFA map, 0 is the a-contrario threshold (NFA < epsilon = 1)."""
        return {"nfa": 0.0} if self.score_map == "nfa" else {}

    def likelihood_map(self, latents: list[torch.Tensor]) -> torch.Tensor:
        """1 - mean over scales of exp(-mean_c z² / 2), at the finest latent resolution."""
        size = latents[0].shape[-2:]
        probs = [
            F.interpolate(torch.exp(-0.5 * z.pow(2).mean(1, keepdim=True)), size=size, mode="bilinear",
                          align_corners=False)
            for z in latents
        ]
        return 1.0 - torch.stack(probs).mean(0)[:, 0]

    def compute(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latents, _ = self(images)
        amap = self.likelihood_map(latents)
        if self.score_map == "nfa":
            amap = -log_nfa(latents, self.nfa_window, self.nfa_probability) + NFA_TIE_BREAK * amap
        return amap.flatten(1).amax(1), amap
