"""EfficientAD's networks: the patch description networks (PDN-S, PDN-M) and the autoencoder.

Layer stacks as in the paper's tables (Batzner et al., WACV 2024, Tables 6-8). The networks take
ImageNet-normalised images. Every output feature of a PDN describes a 33x33 patch of the input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

OUT_CHANNELS = 384
PATCH_SIZE = 33  # receptive field of one PDN output feature
AE_DOWNSAMPLINGS = 5  # stride-2 convolutions of the encoder before its bottleneck
MIN_IMAGE_SIZE = PATCH_SIZE  # one whole patch; the encoder needs 2**5 = 32 pixels, the PDN 33 unpadded


def check_image_size(height: int, width: int) -> None:
    """Refuse inputs smaller than one PDN patch (the unpadded PDN would return nothing, the AE cannot encode)."""
    if min(height, width) < MIN_IMAGE_SIZE:
        raise ValueError(
            f"EfficientAD needs images of at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} pixels (its PDN describes "
            f"{PATCH_SIZE}x{PATCH_SIZE} patches and its autoencoder halves the image {AE_DOWNSAMPLINGS} times), "
            f"got {height}x{width}: use image_size >= {MIN_IMAGE_SIZE} (the paper uses 256)"
        )


class SmallPDN(nn.Module):
    """PDN-S: conv 4x4/128 (pad 3), avg-pool 2x2/2 (pad 1), conv 4x4/256 (pad 3), avg-pool, conv 3x3/256 (pad 1),
    conv 4x4/out (pad 0); ReLU after every convolution but the last."""

    def __init__(self, out_channels: int = OUT_CHANNELS, padding: bool = True) -> None:
        super().__init__()
        p = 1 if padding else 0
        self.conv1 = nn.Conv2d(3, 128, kernel_size=4, padding=3 * p)
        self.avgpool1 = nn.AvgPool2d(kernel_size=2, stride=2, padding=p)
        self.conv2 = nn.Conv2d(128, 256, kernel_size=4, padding=3 * p)
        self.avgpool2 = nn.AvgPool2d(kernel_size=2, stride=2, padding=p)
        self.conv3 = nn.Conv2d(256, 256, kernel_size=3, padding=p)
        self.conv4 = nn.Conv2d(256, out_channels, kernel_size=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool1(F.relu(self.conv1(x)))
        x = self.avgpool2(F.relu(self.conv2(x)))
        return self.conv4(F.relu(self.conv3(x)))


class MediumPDN(nn.Module):
    """PDN-M: conv 4x4/256 (pad 3), avg-pool 2x2/2 (pad 1), conv 4x4/512 (pad 3), avg-pool, conv 1x1/512,
    conv 3x3/512 (pad 1), conv 4x4/out, conv 1x1/out; ReLU after every convolution but the last."""

    def __init__(self, out_channels: int = OUT_CHANNELS, padding: bool = True) -> None:
        super().__init__()
        p = 1 if padding else 0
        self.conv1 = nn.Conv2d(3, 256, kernel_size=4, padding=3 * p)
        self.avgpool1 = nn.AvgPool2d(kernel_size=2, stride=2, padding=p)
        self.conv2 = nn.Conv2d(256, 512, kernel_size=4, padding=3 * p)
        self.avgpool2 = nn.AvgPool2d(kernel_size=2, stride=2, padding=p)
        self.conv3 = nn.Conv2d(512, 512, kernel_size=1)
        self.conv4 = nn.Conv2d(512, 512, kernel_size=3, padding=p)
        self.conv5 = nn.Conv2d(512, out_channels, kernel_size=4)
        self.conv6 = nn.Conv2d(out_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool1(F.relu(self.conv1(x)))
        x = self.avgpool2(F.relu(self.conv2(x)))
        x = F.relu(self.conv4(F.relu(self.conv3(x))))
        return self.conv6(F.relu(self.conv5(x)))


PDNS = {"small": SmallPDN, "medium": MediumPDN}


def build_pdn(size: str, out_channels: int = OUT_CHANNELS, padding: bool = True) -> nn.Module:
    if size not in PDNS:
        raise ValueError(f"unknown EfficientAD size {size!r}; choose one of {sorted(PDNS)}")
    return PDNS[size](out_channels, padding)


def pdn_output_size(size: int, padding: bool = True) -> int:
    """Side of the PDN's feature map for an input side of `size` (the same for PDN-S and PDN-M)."""
    p = 1 if padding else 0
    for kernel, pad, pool in ((4, 3 * p, True), (4, 3 * p, True), (3, p, False), (4, 0, False)):
        size = size + 2 * pad - kernel + 1
        if pool:
            size = (size + 2 * p - 2) // 2 + 1
    return size


class AutoEncoder(nn.Module):
    """The paper's autoencoder: six strided convolutions down to a 64-dim code, then eight convolutions
    with bilinear upsampling (and dropout 0.2) back to the PDN's feature-map size, 384 channels.

    At the paper's 256 px the bottleneck convolution is 8x8 on an 8x8 map, giving a 1x1 code. For smaller
    inputs its kernel shrinks to the map it sees (still a 1x1 code) and the decoder's intermediate sizes
    scale with the input (never below 1); at 256 px both are exactly the paper's.
    """

    def __init__(self, image_size: tuple[int, int], out_channels: int = OUT_CHANNELS, padding: bool = True,
                 dropout: float = 0.2) -> None:
        super().__init__()
        height, width = image_size
        check_image_size(height, width)
        bottleneck = (min(8, height >> AE_DOWNSAMPLINGS), min(8, width >> AE_DOWNSAMPLINGS))
        channels = [3, 32, 32, 64, 64, 64]
        self.encoder = nn.ModuleList(
            [nn.Conv2d(channels[i], channels[i + 1], kernel_size=4, stride=2, padding=1) for i in range(5)]
            + [nn.Conv2d(64, 64, kernel_size=bottleneck)]
        )
        self.decoder = nn.ModuleList([nn.Conv2d(64, 64, kernel_size=4, padding=2) for _ in range(6)]
                                     + [nn.Conv2d(64, 64, kernel_size=3, padding=1)])
        self.head = nn.Conv2d(64, out_channels, kernel_size=3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.padding = padding
        self.min_size = (bottleneck[0] << AE_DOWNSAMPLINGS, bottleneck[1] << AE_DOWNSAMPLINGS)

    def check_input(self, height: int, width: int) -> None:
        check_image_size(height, width)
        if height < self.min_size[0] or width < self.min_size[1]:
            raise ValueError(f"this EfficientAD's autoencoder was built for images of at least "
                             f"{self.min_size[0]}x{self.min_size[1]} pixels (its image_size), got {height}x{width}")

    def upsample_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Sizes the code is upsampled to before each decoder convolution (3, 8, 15, 32, 63, 127 at 256 px),
        then the PDN's feature-map size."""
        sizes = [(max(1, height // d - o), max(1, width // d - o))
                 for d, o in ((64, 1), (32, 0), (16, 1), (8, 0), (4, 1), (2, 1))]
        return [*sizes, (pdn_output_size(height, self.padding), pdn_output_size(width, self.padding))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sizes = self.upsample_sizes(*x.shape[-2:])
        for conv in self.encoder[:-1]:
            x = F.relu(conv(x))
        x = self.encoder[-1](x)
        for i, conv in enumerate(self.decoder):
            x = F.interpolate(x, size=sizes[i], mode="bilinear", align_corners=False)
            x = F.relu(conv(x))
            if i < 6:
                x = self.dropout(x)
        return self.head(x)
