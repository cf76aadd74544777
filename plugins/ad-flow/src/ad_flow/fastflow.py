"""FastFlow (Yu et al., "FastFlow: Unsupervised Anomaly Detection and Localization via 2D Normalizing
Flows", 2021).

A frozen backbone gives feature maps (CNN stages, or a transformer's token map); each map goes through
its own 2D normalizing flow whose coupling subnets are small convolutional networks (3x3, or alternating
3x3 / 1x1), so the flow sees local context. Training maximises the likelihood of normal features; at test
time each position's likelihood exp(-0.5 * mean_c z^2) is upsampled, averaged over the stages and
negated into the anomaly map, and the image score is the map's maximum.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import nn

from ad_core.components.backbone import BackboneConfig, image_chunks
from ad_core.components.maps import resize_map
from ad_core.components.vit import FrozenViT
from ad_core.model import AnomalyModel
from ad_core.training import StepContext, TrainingPlan
from ad_core.types import Batch
from ad_flow.coupling import AffineCouplingBlock, SequentialFlow


def conv_subnet(in_channels: int, out_channels: int, kernel_size: int, hidden_ratio: float) -> nn.Module:
    """The paper's coupling subnet: conv, ReLU, conv with `hidden_ratio * in_channels` hidden channels."""
    hidden = max(1, int(in_channels * hidden_ratio))
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden, kernel_size, padding="same"),
        nn.ReLU(),
        nn.Conv2d(hidden, out_channels, kernel_size, padding="same"),
    )


def fastflow_stage(channels: int, flow_steps: int, hidden_ratio: float, conv3x3_only: bool, clamp: float,
                   seed: int) -> SequentialFlow:
    """One stage's flow: odd steps use 1x1 subnets unless `conv3x3_only`."""
    blocks = []
    for step in range(flow_steps):
        kernel = 1 if step % 2 == 1 and not conv3x3_only else 3
        subnet = functools.partial(conv_subnet, kernel_size=kernel, hidden_ratio=hidden_ratio)
        blocks.append(AffineCouplingBlock(channels, subnet, clamp=clamp, seed=seed + step))
    return SequentialFlow(blocks)


class FastFlow(AnomalyModel):
    """FastFlow over CNN stages (`layers`) or, with `feature_block`, over a transformer's token map.

    CNN features get a trainable LayerNorm over [C, H, W] as in the reference implementation, so the
    model is built for one `image_size`.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        layers: Sequence[str] = ("layer1", "layer2", "layer3"),
        feature_block: int | None = None,
        flow_steps: int = 8,
        hidden_ratio: float = 1.0,
        conv3x3_only: bool = True,
        clamp: float = 2.0,
        image_size: int = 256,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        pretrained: bool = True,
        weights_file: str | None = None,
        backbone_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if flow_steps < 1:
            raise ValueError(f"flow_steps must be at least 1, got {flow_steps}")
        self.image_size = (int(image_size), int(image_size))
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        if feature_block is None:
            config = BackboneConfig(backbone, layers, pretrained, weights_file, backbone_dir)
            self.backbone: nn.Module = config.frozen()
        else:
            config = BackboneConfig(backbone, (feature_block,), pretrained, weights_file, backbone_dir)
            self.backbone = FrozenViT(config, image_size)
        deepest = max(self.backbone.strides)
        if image_size < deepest:
            raise ValueError(f"image_size {image_size} is too small for {backbone}: its deepest feature map has "
                             f"stride {deepest}, so use at least {deepest} (the paper uses 256)")
        shapes = self._feature_shapes()
        # Transformer features already went through the transformer's own final norm.
        self.norms = nn.ModuleList(nn.LayerNorm(list(shape)) for shape in shapes) if feature_block is None else None
        self.flows = nn.ModuleList(
            fastflow_stage(shape[0], flow_steps, hidden_ratio, conv3x3_only, clamp, seed=1000 * (stage + 1) + seed)
            for stage, shape in enumerate(shapes)
        )

    @torch.no_grad()
    def _feature_shapes(self) -> list[tuple[int, int, int]]:
        probe = torch.zeros(1, 3, *self.image_size)
        return [tuple(f.shape[1:]) for f in self.backbone(probe)]

    def _check_size(self, images: torch.Tensor) -> None:
        if tuple(images.shape[-2:]) != self.image_size:
            raise ValueError(f"FastFlow was built for {self.image_size[0]}x{self.image_size[1]} images (its "
                             f"normalisation and flows are sized by the feature maps), got "
                             f"{tuple(images.shape[-2:])}: build it with image_size={images.shape[-1]}")

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        features = self.backbone(images)
        if self.norms is not None:
            features = [norm(f) for norm, f in zip(self.norms, features)]
        return features

    def latents(self, images: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(z, log|det J|) of every stage."""
        self._check_size(images)
        return [flow(f) for flow, f in zip(self.flows, self.features(images))]

    # -- training ------------------------------------------------------------------------------------
    def training_step(self, batch: Batch, ctx: StepContext) -> torch.Tensor:
        """Negative log-likelihood, summed over stages, averaged over images."""
        loss = torch.zeros((), device=batch.image.device)
        for z, log_det in self.latents(batch.image):
            loss = loss + (0.5 * z.pow(2).sum(dim=(1, 2, 3)) - log_det).mean()
        return loss

    def configure_optimizers(self, plan: TrainingPlan) -> torch.optim.Optimizer:
        trainable = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.Adam(trainable, lr=self.lr, weight_decay=self.weight_decay)

    # -- scoring -------------------------------------------------------------------------------------
    def compute(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = torch.cat([self._anomaly_map(chunk) for chunk in image_chunks(images)])
        return maps.amax(dim=(-2, -1)), maps

    def _anomaly_map(self, images: torch.Tensor) -> torch.Tensor:
        """The map reads only z: the flows run without their log-determinants."""
        self._check_size(images)
        stage_maps = []
        for z in (flow.transform(f) for flow, f in zip(self.flows, self.features(images))):
            likelihood = torch.exp(-0.5 * z.pow(2).mean(dim=1))
            stage_maps.append(resize_map(-likelihood, images.shape[-2:]))
        return torch.stack(stage_maps).mean(0)
