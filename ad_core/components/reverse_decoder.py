"""The reverse-distillation pair: the one-class bottleneck and the ResNet decoder that mirrors a frozen ResNet
encoder's layer1-3.

Reverse Distillation (Deng and Li, CVPR 2022) introduced them and UniNet (Wei et al., CVPR 2025) reuses them
(its bottleneck with its own residual block), so they live here. The decoder upsamples a layer4-sized embedding back to layer3, layer2 and layer1's grids and
channels with 2x2 transposed convolutions (the authors' `de_resnet`), one stage per encoder stage with the
encoder's block type, depths and base width.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import timm
import torch
import torch.nn.functional as F
from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn


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
        raise ValueError(f"the reverse decoder needs a ResNet-style backbone with layer1-4; {backbone!r} is not one")
    block = type(stages[0][0])
    if block not in DECODER_BLOCKS or getattr(stages[0][0].conv1, "groups", 1) != 1:
        raise ValueError(f"the reverse decoder supports ResNet basic or bottleneck blocks without groups "
                         f"(resnet18/34/50, wide_resnet50_2 ...); {backbone!r} uses {block.__name__}")
    base_width = stages[0][0].conv1.out_channels if block is Bottleneck else 64
    return block, [len(stage) for stage in stages], base_width


class OneClassBottleneck(nn.Module):
    """OCBE: multi-scale feature fusion of layer1-3, then a ResNet stage (the one-class embedding) that halves
    the grid to layer4's size and resolution.

    `block(inplanes, planes, stride=, downsample=, base_width=)` builds the stage's residual blocks (a timm ResNet
    block in Reverse Distillation, UniNet's own); their output has `512 * expansion` channels.
    """

    def __init__(self, block: Callable[..., nn.Module], expansion: int, depth: int, base_width: int) -> None:
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
