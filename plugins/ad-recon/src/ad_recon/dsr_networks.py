"""DSR's networks (Zavrtanik, Kristan and Skočaj, ECCV 2022; layers as in the authors' code).

- `DualSubspaceVQ`: the VQ-VAE of the paper's Fig. 2 (general, pretrained on ImageNet, frozen while DSR trains).
  Encoder_hi (stride 4) and encoder_lo (stride 8) features are quantised by the codebooks K_hi and K_lo; the
  general object appearance decoder rebuilds an image from [upsampled Q_lo, Q_hi].
- `VectorQuantizer`: nearest code, straight-through gradient, commitment loss, EMA codebook updates (used only when
  the VQ stage itself is trained).
- `SubspaceRestriction`: an encoder-decoder (no skips) that maps possibly anomalous quantised features to features
  that re-quantise to normal appearance.
- `ObjectSpecificDecoder`: rebuilds the image from the restricted quantised features.
- `Unet`: the anomaly detection module (6 channels in) and the upsampling module (8 channels in), 2 classes out.

Every norm is an InstanceNorm without affine parameters, so train and eval modes compute the same thing.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


def conv_in_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.InstanceNorm2d(cout), nn.ReLU(inplace=True)]


def double_conv(cin: int, cmid: int, cout: int | None = None) -> nn.Sequential:
    return nn.Sequential(*conv_in_relu(cin, cmid), *conv_in_relu(cmid, cmid if cout is None else cout))


def up_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True), *conv_in_relu(cin, cout))


class Residual(nn.Module):
    """relu(x) + conv1x1(relu(conv3x3(relu(x)))): the authors' block, whose in-place first ReLU also rectifies the
    skip path."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1, bias=False), nn.ReLU(inplace=True),
                                   nn.Conv2d(hidden, channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        return x + self.block(x)


class ResidualStack(nn.Module):
    def __init__(self, channels: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Residual(channels, hidden) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return F.relu(x)


class Quantized(NamedTuple):
    quantized: torch.Tensor  # [B, D, H, W], straight-through: its gradient flows to the input features
    commitment: torch.Tensor  # commitment_cost * ||sg(q) - z||^2 (mean)
    indices: torch.Tensor  # [B, H, W] nearest code per position


class VectorQuantizer(nn.Module):
    """Codebook of `num_embeddings` codes of `embedding_dim`; EMA-updated (van den Oord et al. 2017, appendix)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, commitment_cost: float = 0.25, decay: float = 0.99,
                 epsilon: float = 1e-5) -> None:
        super().__init__()
        self.codebook = nn.Embedding(num_embeddings, embedding_dim)
        self.codebook.weight.data.normal_()
        self.codebook.weight.requires_grad_(False)  # moved by the EMA update, never by a gradient
        self.register_buffer("ema_cluster_size", torch.zeros(num_embeddings))
        self.register_buffer("ema_weight", torch.randn(num_embeddings, embedding_dim))
        self.commitment_cost, self.decay, self.epsilon = commitment_cost, decay, epsilon

    @property
    def codes(self) -> torch.Tensor:
        return self.codebook.weight

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code of each row of `flat` [N, D] (squared Euclidean distance)."""
        codes = self.codes
        distances = flat.pow(2).sum(1, keepdim=True) + codes.pow(2).sum(1) - 2 * flat @ codes.t()
        return distances.argmin(dim=1)

    def forward(self, z: torch.Tensor) -> Quantized:
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        indices = self.nearest(flat)
        quantized = self.codes[indices].view(b, h, w, d).permute(0, 3, 1, 2)
        commitment = self.commitment_cost * F.mse_loss(z, quantized.detach())
        return Quantized(z + (quantized - z).detach(), commitment, indices.view(b, h, w))

    @torch.no_grad()
    def ema_update(self, z: torch.Tensor, indices: torch.Tensor) -> None:
        """Move each code to the running mean of the features assigned to it (Laplace-smoothed counts)."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        onehot = F.one_hot(indices.reshape(-1), self.codes.shape[0]).to(flat.dtype)
        self.ema_cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        total = self.ema_cluster_size.sum()
        self.ema_cluster_size.copy_((self.ema_cluster_size + self.epsilon)
                                    / (total + self.codes.shape[0] * self.epsilon) * total)
        self.ema_weight.mul_(self.decay).add_(onehot.t() @ flat, alpha=1 - self.decay)
        self.codebook.weight.copy_(self.ema_weight / self.ema_cluster_size.unsqueeze(1))


class EncoderHi(nn.Module):
    """Image -> F_hi features at stride 4."""

    def __init__(self, hidden: int, res_hidden: int, res_layers: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, hidden // 2, 4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(hidden // 2, hidden, 4, stride=2, padding=1)
        self.conv3 = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.residual = ResidualStack(hidden, res_hidden, res_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(self.conv3(F.relu(self.conv2(F.relu(self.conv1(x))))))


class EncoderLo(nn.Module):
    """F_hi features -> F_lo features at stride 8."""

    def __init__(self, hidden: int, res_hidden: int, res_layers: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(hidden, hidden, 4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.residual = ResidualStack(hidden, res_hidden, res_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(F.relu(self.conv2(F.relu(self.conv1(x)))))


class GeneralDecoder(nn.Module):
    """[upsampled Q_lo, Q_hi] (stride 4) -> image: the general object appearance decoder."""

    def __init__(self, cin: int, hidden: int, res_hidden: int, res_layers: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, hidden, 3, padding=1)
        self.residual = ResidualStack(hidden, res_hidden, res_layers)
        self.deconv1 = nn.ConvTranspose2d(hidden, hidden // 2, 4, stride=2, padding=1)
        self.deconv2 = nn.ConvTranspose2d(hidden // 2, 3, 4, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.deconv2(F.relu(self.deconv1(self.residual(self.conv1(x)))))


class VQOutput(NamedTuple):
    z_lo: torch.Tensor  # pre-quantisation F_lo [B, D, H/8, W/8]
    quantized_lo: Quantized
    z_hi: torch.Tensor  # pre-quantisation F_hi [B, D, H/4, W/4]
    quantized_hi: Quantized
    encoded_hi: torch.Tensor  # encoder_hi's output (the hi quantisation also sees the upsampled Q_lo)
    reconstruction: torch.Tensor  # the general decoder's image


class DualSubspaceVQ(nn.Module):
    """The dual-subspace VQ-VAE; `forward` quantises and decodes, `hi_features` re-derives F_hi from a Q_lo."""

    def __init__(self, embedding_dim: int = 128, num_embeddings: int = 4096, hidden: int = 128,
                 res_hidden: int = 64, res_layers: int = 2, commitment_cost: float = 0.25, decay: float = 0.99
                 ) -> None:
        super().__init__()
        self.encoder_hi = EncoderHi(hidden, res_hidden, res_layers)
        self.encoder_lo = EncoderLo(hidden, res_hidden, res_layers)
        self.pre_vq_hi = nn.Conv2d(hidden + embedding_dim, embedding_dim, 1)
        self.pre_vq_lo = nn.Conv2d(hidden, embedding_dim, 1)
        self.quantizer_hi = VectorQuantizer(num_embeddings, embedding_dim, commitment_cost, decay)
        self.quantizer_lo = VectorQuantizer(num_embeddings, embedding_dim, commitment_cost, decay)
        self.general_decoder = GeneralDecoder(2 * embedding_dim, hidden, res_hidden, res_layers)
        self.upsample_lo = nn.ConvTranspose2d(embedding_dim, embedding_dim, 4, stride=2, padding=1)

    def hi_features(self, encoded_hi: torch.Tensor, quantized_lo: torch.Tensor) -> torch.Tensor:
        """F_hi: encoder_hi's output joined with the upsampled Q_lo, projected to the codebook's dimension."""
        return self.pre_vq_hi(torch.cat([encoded_hi, self.upsample_lo(quantized_lo)], dim=1))

    def decode(self, quantized_lo: torch.Tensor, quantized_hi: torch.Tensor,
               decoder: nn.Module | None = None) -> torch.Tensor:
        """An image from (Q_lo, Q_hi) by the general decoder, or by `decoder` (the object-specific one)."""
        joined = torch.cat([self.upsample_lo(quantized_lo), quantized_hi], dim=1)
        return (decoder or self.general_decoder)(joined)

    def forward(self, images: torch.Tensor) -> VQOutput:
        encoded_hi = self.encoder_hi(images)
        z_lo = self.pre_vq_lo(self.encoder_lo(encoded_hi))
        q_lo = self.quantizer_lo(z_lo)
        z_hi = self.hi_features(encoded_hi, q_lo.quantized)
        q_hi = self.quantizer_hi(z_hi)
        return VQOutput(z_lo, q_lo, z_hi, q_hi, encoded_hi, self.decode(q_lo.quantized, q_hi.quantized))


class SubspaceRestriction(nn.Module):
    """Three-level encoder (base width = the codebook dimension) and a decoder without skip connections; its output
    is re-quantised with the subspace's codebook."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.block1 = double_conv(width, width)
        self.block2 = double_conv(width, 2 * width)
        self.block3 = double_conv(2 * width, 4 * width)
        self.up2 = up_conv(4 * width, 2 * width)
        self.dec2 = double_conv(2 * width, 2 * width)
        self.up3 = up_conv(2 * width, width)
        self.dec3 = double_conv(width, width)
        self.out = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor, quantizer: VectorQuantizer) -> tuple[torch.Tensor, torch.Tensor]:
        """(restored features, their quantisation)."""
        x = self.block3(F.max_pool2d(self.block2(F.max_pool2d(self.block1(x), 2)), 2))
        x = self.out(self.dec3(self.up3(self.dec2(self.up2(x)))))
        return x, quantizer(x).quantized


class ObjectSpecificDecoder(nn.Module):
    """[upsampled Q_lo, Q_hi] -> image, trained per object (the authors' ImageReconstructionNetwork)."""

    def __init__(self, cin: int, hidden: int, res_hidden: int, res_layers: int, bottleneck: int = 64) -> None:
        super().__init__()
        self.block1 = double_conv(cin, cin, 2 * cin)
        self.block2 = double_conv(2 * cin, 2 * cin, 4 * cin)
        self.project = nn.Conv2d(4 * cin, bottleneck, 1)
        self.up1 = nn.ConvTranspose2d(bottleneck, bottleneck, 4, stride=2, padding=1)
        self.up2 = nn.ConvTranspose2d(bottleneck, bottleneck, 4, stride=2, padding=1)
        self.conv1 = nn.Conv2d(bottleneck, hidden, 3, padding=1)
        self.residual = ResidualStack(hidden, res_hidden, res_layers)
        self.deconv1 = nn.ConvTranspose2d(hidden, hidden // 2, 4, stride=2, padding=1)
        self.deconv2 = nn.ConvTranspose2d(hidden // 2, 3, 4, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project(F.max_pool2d(self.block2(F.max_pool2d(self.block1(x), 2)), 2))
        x = self.conv1(F.relu(self.up2(F.relu(self.up1(x)))))
        return self.deconv2(F.relu(self.deconv1(self.residual(x))))


class Unet(nn.Module):
    """Four-level U-Net (widths 1, 2, 4, 4 x base) with skip connections; the anomaly detection module (6 channels
    in) and the upsampling module (8 channels in) are both this network with 2 output classes."""

    def __init__(self, cin: int, cout: int = 2, width: int = 64) -> None:
        super().__init__()
        self.block1 = double_conv(cin, width)
        self.block2 = double_conv(width, 2 * width)
        self.block3 = double_conv(2 * width, 4 * width)
        self.block4 = double_conv(4 * width, 4 * width)
        self.up1 = up_conv(4 * width, 4 * width)
        self.dec1 = double_conv(8 * width, 4 * width)
        self.up2 = up_conv(4 * width, 2 * width)
        self.dec2 = double_conv(4 * width, 2 * width)
        self.up3 = up_conv(2 * width, width)
        self.dec3 = double_conv(2 * width, width)
        self.out = nn.Conv2d(width, cout, 3, padding=1)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Logits [B, cout, H, W] of the inputs joined on the channel axis."""
        b1 = self.block1(torch.cat(inputs, dim=1))
        b2 = self.block2(F.max_pool2d(b1, 2))
        b3 = self.block3(F.max_pool2d(b2, 2))
        x = self.block4(F.max_pool2d(b3, 2))
        x = self.dec1(torch.cat([self.up1(x), b3], dim=1))
        x = self.dec2(torch.cat([self.up2(x), b2], dim=1))
        x = self.dec3(torch.cat([self.up3(x), b1], dim=1))
        return self.out(x)


# The authors' checkpoint names (and anomalib's) -> ours, applied in order to every key.
_AUTHORS_NAMES = (
    ("_encoder_b.", "encoder_hi."), ("_encoder_t.", "encoder_lo."), ("_pre_vq_conv_bot.", "pre_vq_hi."),
    ("_pre_vq_conv_top.", "pre_vq_lo."), ("_vq_vae_bot.", "quantizer_hi."), ("_vq_vae_top.", "quantizer_lo."),
    ("_decoder_b.", "general_decoder."), ("upsample_t.", "upsample_lo."),
    ("_residual_stack._layers.", "residual.layers."),
    ("._block.1.", ".block.0."), ("._block.3.", ".block.2."), ("_conv_trans_1.", "deconv1."),
    ("_conv_trans_2.", "deconv2."), ("_conv_1.", "conv1."), ("_conv_2.", "conv2."), ("_conv_3.", "conv3."),
    ("_embedding.weight", "codebook.weight"), ("_ema_cluster_size", "ema_cluster_size"), ("_ema_w", "ema_weight"),
)


def vq_state_from_authors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The authors' `DiscreteLatentModel` state dict (their `vq_model_pretrained_128_4096.pckl`, also anomalib's)
    under our names; a state already in our layout passes unchanged."""
    renamed = {}
    for key, value in state.items():
        for old, new in _AUTHORS_NAMES:
            key = key.replace(old, new)
        renamed[key] = value
    return renamed
