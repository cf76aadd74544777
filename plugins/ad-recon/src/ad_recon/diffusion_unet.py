"""The guided-diffusion UNet (Dhariwal and Nichol 2021) that is DiffusionAD's reconstruction sub-network.

It predicts the noise ε of a noisy image x_t given the step t. Layout, as in the authors' 256 px configuration:
a sinusoidal timestep embedding through a two-layer MLP (width 4 × base channels) added to every residual
block; per level `num_res_blocks` residual blocks (GroupNorm 32, SiLU, 3×3 convs, zero-initialised last conv),
self-attention after the blocks of the levels whose downsampling factor is in `attention_downsample`
(256 px with factors 8, 16, 32: attention at 32, 16 and 8 px); BigGAN-style residual blocks that halve or
double the resolution between levels; a middle of residual block, attention, residual block; a decoder that
concatenates every encoder activation (skip connections); a zero-initialised output conv.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

GROUPS = 32  # GroupNorm groups: every width of the network must be a multiple of it


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] of steps t [B]: sin and cos of t·10000^(−i/(dim/2)), i < dim/2."""
    half = dim // 2
    frequencies = torch.exp(-math.log(10000.0) / half * torch.arange(half, dtype=torch.float32, device=t.device))
    angles = t.float()[:, None] * frequencies[None]
    return torch.cat((angles.sin(), angles.cos()), dim=-1)


def zeroed(module: nn.Module) -> nn.Module:
    """The module with its parameters set to zero: a residual branch that starts as the identity."""
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, plus the projected timestep embedding, GroupNorm-SiLU-dropout-conv, plus a skip.

    `resample` "down" (2×2 average pooling) or "up" (nearest ×2) is applied to both paths before the first conv
    (BigGAN-style resampling).
    """

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int, dropout: float = 0.0,
                 resample: str | None = None) -> None:
        super().__init__()
        if resample not in (None, "down", "up"):
            raise ValueError(f"resample is None, 'down' or 'up', got {resample!r}")
        self.resample = resample
        self.norm_in = nn.GroupNorm(GROUPS, in_channels)
        self.conv_in = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.embed = nn.Linear(embed_dim, out_channels)
        self.norm_out = nn.GroupNorm(GROUPS, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv_out = zeroed(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def _resampled(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(self._resampled(F.silu(self.norm_in(x))))
        h = h + self.embed(F.silu(emb))[:, :, None, None]
        h = self.conv_out(self.dropout(F.silu(self.norm_out(h))))
        return self.skip(self._resampled(x)) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all positions, residual, with a zero-initialised output projection.

    The qkv projection's channels are grouped per head ([head][q, k, v][channel]), as in guided-diffusion's
    legacy ordering.
    """

    def __init__(self, channels: int, num_heads: int) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"{channels} channels do not split into {num_heads} attention heads")
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(GROUPS, channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj = zeroed(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        flat = x.reshape(b, c, h * w)
        qkv = self.qkv(self.norm(flat)).reshape(b * self.num_heads, 3 * c // self.num_heads, h * w)
        q, k, v = qkv.chunk(3, dim=1)
        weights = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / math.sqrt(q.shape[1]), dim=-1)
        out = torch.einsum("bts,bcs->bct", weights, v).reshape(b, c, h * w)
        return (flat + self.proj(out)).reshape(b, c, h, w)


class Stage(nn.ModuleList):
    """Residual and attention blocks applied in order, each given the timestep embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for block in self:
            x = block(x, emb) if isinstance(block, (ResBlock, AttentionBlock)) else block(x)
        return x


class GuidedDiffusionUNet(nn.Module):
    """ε_θ(x_t, t): predicts the noise in x_t [B, C, H, W] (H and W multiples of `downsample_factor`)."""

    def __init__(self, in_channels: int = 3, base_channels: int = 128,
                 channel_mults: Sequence[int] = (1, 1, 2, 2, 4, 4), num_res_blocks: int = 2,
                 attention_downsample: Sequence[int] = (8, 16, 32), num_heads: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        if not channel_mults or num_res_blocks < 1:
            raise ValueError("the UNet needs at least one level and one residual block per level")
        widths = [base_channels * int(m) for m in channel_mults]
        if any(w % GROUPS for w in widths):
            raise ValueError(f"every UNet width must be a multiple of {GROUPS} (GroupNorm groups), got {widths}")
        self.base_channels = base_channels
        self.downsample_factor = 2 ** (len(widths) - 1)
        attention = {int(a) for a in attention_downsample}
        embed_dim = 4 * base_channels
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))

        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.down = nn.ModuleList()
        skips, ch, factor = [widths[0]], widths[0], 1
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                blocks = [ResBlock(ch, width, embed_dim, dropout)]
                ch = width
                if factor in attention:
                    blocks.append(AttentionBlock(ch, num_heads))
                self.down.append(Stage(blocks))
                skips.append(ch)
            if level < len(widths) - 1:
                self.down.append(Stage([ResBlock(ch, ch, embed_dim, dropout, resample="down")]))
                skips.append(ch)
                factor *= 2

        self.middle = Stage([ResBlock(ch, ch, embed_dim, dropout), AttentionBlock(ch, num_heads),
                             ResBlock(ch, ch, embed_dim, dropout)])

        self.up = nn.ModuleList()
        for level in reversed(range(len(widths))):
            for block in range(num_res_blocks + 1):
                blocks = [ResBlock(ch + skips.pop(), widths[level], embed_dim, dropout)]
                ch = widths[level]
                if factor in attention:
                    blocks.append(AttentionBlock(ch, num_heads))
                if level and block == num_res_blocks:
                    blocks.append(ResBlock(ch, ch, embed_dim, dropout, resample="up"))
                    factor //= 2
                self.up.append(Stage(blocks))

        self.head = nn.Sequential(nn.GroupNorm(GROUPS, ch), nn.SiLU(), zeroed(nn.Conv2d(ch, in_channels, 3, padding=1)))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.downsample_factor or w % self.downsample_factor:
            raise ValueError(f"the UNet needs H and W divisible by {self.downsample_factor}, got {h}x{w}")
        emb = self.time_mlp(timestep_embedding(t, self.base_channels))
        h = self.stem(x)
        skips = [h]
        for stage in self.down:
            h = stage(h, emb)
            skips.append(h)
        h = self.middle(h, emb)
        for stage in self.up:
            h = stage(torch.cat((h, skips.pop()), dim=1), emb)
        return self.head(h)
