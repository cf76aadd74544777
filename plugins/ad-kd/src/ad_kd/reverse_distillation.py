"""Reverse Distillation (Deng and Li, "Anomaly Detection via Reverse Distillation from One-Class
Embedding", CVPR 2022).

A frozen pretrained ResNet encoder (the teacher) gives layer1-3 features. A trainable one-class bottleneck
embedding (OCBE) fuses them (multi-scale feature fusion: strided 3x3 convolutions bring layer1 and layer2 to
layer3's grid, concatenated with layer3) and compresses them with a ResNet stage (one-class embedding). A
decoder (the student) that mirrors the encoder, upsampling with 2x2 transposed convolutions, reconstructs the
encoder's three feature maps from that embedding. Trained on normal images with 1 − cosine similarity per
scale; on anomalies the reconstruction fails, so the per-position 1 − cos maps, upsampled and summed (Eq. 3),
then Gaussian-smoothed (σ = 4), are the anomaly map and their maximum the image score.
"""

from __future__ import annotations

from collections.abc import Sequence

import timm
import torch
import torch.nn.functional as F
from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn

from ad_core.components.backbone import BackboneConfig
from ad_core.components.maps import gaussian_blur
from ad_core.model import AnomalyModel
from ad_core.training import StepContext, TrainingPlan
from ad_core.types import Batch
from ad_kd.distillation import cosine_distance, fuse_maps

LAYERS = ("layer1", "layer2", "layer3")


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


def deconv2x2(cin: int, cout: int) -> nn.ConvTranspose2d:
    """The decoder's upsampling: a 2x2 transposed convolution with stride 2 doubles the grid."""
    return nn.ConvTranspose2d(cin, cout, 2, stride=2, bias=False)


class DecoderBasicBlock(nn.Module):
    """ResNet basic block in reverse: the first 3x3 convolution becomes a 2x2 transposed one when upsampling."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, upsample: nn.Module | None = None, base_width: int = 64) -> None:
        super().__init__()
        self.conv1 = deconv2x2(inplanes, planes) if upsample is not None else conv3x3(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.upsample = upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = self.upsample(x) if self.upsample is not None else x
        return F.relu(out + identity)


class DecoderBottleneck(nn.Module):
    """ResNet bottleneck in reverse: the middle 3x3 convolution becomes a 2x2 transposed one when upsampling."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, upsample: nn.Module | None = None, base_width: int = 64) -> None:
        super().__init__()
        width = planes * base_width // 64
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = deconv2x2(width, width) if upsample is not None else conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.upsample = upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = self.upsample(x) if self.upsample is not None else x
        return F.relu(out + identity)


DECODER_BLOCKS: dict[type, type[nn.Module]] = {BasicBlock: DecoderBasicBlock, Bottleneck: DecoderBottleneck}


def resnet_layout(backbone: str) -> tuple[type, list[int], int]:
    """(timm block class, blocks per stage layer1-4, base width) of a timm ResNet, read without weights."""
    with torch.device("meta"):
        model = timm.create_model(backbone, pretrained=False)
    stages = [getattr(model, f"layer{i}", None) for i in range(1, 5)]
    if any(stage is None for stage in stages):
        raise ValueError(f"Reverse Distillation needs a ResNet-style backbone with layer1-4; {backbone!r} is not one")
    block = type(stages[0][0])
    if block not in DECODER_BLOCKS or getattr(stages[0][0].conv1, "groups", 1) != 1:
        raise ValueError(f"Reverse Distillation supports ResNet basic or bottleneck blocks without groups "
                         f"(resnet18/34/50, wide_resnet50_2 ...); {backbone!r} uses {block.__name__}")
    base_width = stages[0][0].conv1.out_channels if block is Bottleneck else 64
    return block, [len(stage) for stage in stages], base_width


class OneClassBottleneck(nn.Module):
    """OCBE: multi-scale feature fusion of layer1-3, then a ResNet stage (the one-class embedding) that halves
    the grid to layer4's size and resolution."""

    def __init__(self, block: type, expansion: int, depth: int, base_width: int) -> None:
        super().__init__()
        c1, c2, c3, c4 = 64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion
        self.fuse1 = nn.Sequential(conv3x3(c1, c2, 2), nn.BatchNorm2d(c2), nn.ReLU(inplace=True),
                                   conv3x3(c2, c3, 2), nn.BatchNorm2d(c3), nn.ReLU(inplace=True))
        self.fuse2 = nn.Sequential(conv3x3(c2, c3, 2), nn.BatchNorm2d(c3), nn.ReLU(inplace=True))
        downsample = nn.Sequential(conv1x1(3 * c3, c4, 2), nn.BatchNorm2d(c4))
        blocks = [block(3 * c3, 512, stride=2, downsample=downsample, base_width=base_width)]
        blocks += [block(c4, 512, base_width=base_width) for _ in range(depth - 1)]
        self.embed = nn.Sequential(*blocks)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        f1, f2, f3 = features
        return self.embed(torch.cat([self.fuse1(f1), self.fuse2(f2), f3], dim=1))


class ReverseDecoder(nn.Module):
    """Three upsampling stages from the embedding back to layer3, layer2 and layer1's grids and channels."""

    def __init__(self, block: type[nn.Module], depths: Sequence[int], base_width: int) -> None:
        super().__init__()
        expansion = block.expansion
        inplanes = 512 * expansion
        stages = []
        for planes, depth in zip((256, 128, 64), depths):
            upsample = nn.Sequential(deconv2x2(inplanes, planes * expansion), nn.BatchNorm2d(planes * expansion))
            blocks = [block(inplanes, planes, upsample=upsample, base_width=base_width)]
            inplanes = planes * expansion
            blocks += [block(inplanes, planes, base_width=base_width) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)

    def forward(self, embedding: torch.Tensor) -> list[torch.Tensor]:
        """Reconstructions in the encoder's order: [layer1, layer2, layer3]."""
        out, x = [], embedding
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out[::-1]


def init_weights(module: nn.Module) -> None:
    """The authors' initialisation: He-normal (fan-out) convolutions, unit BatchNorm."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def reconstruction_loss(encoded: Sequence[torch.Tensor], decoded: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ_scales mean_batch (1 − cos) of each scale's whole feature map flattened (as the authors' code)."""
    total = encoded[0].new_zeros(())
    for e, d in zip(encoded, decoded):
        total = total + (1 - F.cosine_similarity(e.flatten(1), d.flatten(1), dim=1)).mean()
    return total


class ReverseDistillation(AnomalyModel):
    """Frozen encoder, trainable OCBE and decoder; trains with the core's gradient trainer."""

    def __init__(
        self,
        backbone: str = "wide_resnet50_2",
        pretrained: bool = True,
        weights_file: str | None = None,
        backbone_dir: str | None = None,
        lr: float = 0.005,
        betas: Sequence[float] = (0.5, 0.999),
        fusion: str = "sum",
        sigma: float = 4.0,
    ) -> None:
        super().__init__()
        if fusion not in ("sum", "product"):
            raise ValueError(f"fusion must be 'sum' (the paper) or 'product', got {fusion!r}")
        block, depths, base_width = resnet_layout(backbone)
        self.encoder = BackboneConfig(backbone, LAYERS, pretrained, weights_file, backbone_dir).frozen()
        decoder_block = DECODER_BLOCKS[block]
        expected = [64 * decoder_block.expansion, 128 * decoder_block.expansion, 256 * decoder_block.expansion]
        if self.encoder.channels != expected:
            raise ValueError(f"{backbone}: encoder channels {self.encoder.channels}, expected {expected}")
        self.bottleneck = OneClassBottleneck(block, decoder_block.expansion, depths[3], base_width)
        self.decoder = ReverseDecoder(decoder_block, depths[:3], base_width)
        init_weights(self.bottleneck)
        init_weights(self.decoder)
        self.lr, self.betas = float(lr), (float(betas[0]), float(betas[1]))
        self.fusion, self.sigma = fusion, float(sigma)

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(encoder features, decoder reconstructions), both [layer1, layer2, layer3]."""
        encoded = self.encoder(images)
        decoded = self.decoder(self.bottleneck(encoded))
        if any(e.shape != d.shape for e, d in zip(encoded, decoded)):
            raise ValueError(f"Reverse Distillation needs image sides that are multiples of 32 (the decoder doubles "
                             f"the embedding's grid three times); got {tuple(images.shape[-2:])}")
        return encoded, decoded

    def training_step(self, batch: Batch, ctx: StepContext) -> torch.Tensor:
        return reconstruction_loss(*self(batch.image))

    def configure_optimizers(self, plan: TrainingPlan) -> torch.optim.Optimizer:
        params = [*self.bottleneck.parameters(), *self.decoder.parameters()]
        return torch.optim.Adam(params, lr=self.lr, betas=self.betas)

    def compute(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        encoded, decoded = self(images)
        maps = [cosine_distance(e, d) for e, d in zip(encoded, decoded)]
        amap = gaussian_blur(fuse_maps(maps, images.shape[-2:], self.fusion), self.sigma)
        return amap.amax(dim=(1, 2)), amap
