"""Dinomaly (Guo et al., "Dinomaly: The Less Is More Philosophy in Multi-Class Unsupervised Anomaly Detection",
CVPR 2025).

A frozen DINOv2-with-registers ViT encodes the image; the token sequences (class and register tokens included)
after eight middle blocks are averaged and passed through a noisy bottleneck (an MLP with dropout 0.2 on its
input, hidden and output) and eight decoder ViT blocks with linear attention, which spreads attention over the
whole image instead of letting it copy each patch from itself. Encoder and decoder layers are fused in two groups
of four (mean); training reconstructs each fused encoder group with a loose, group-wise cosine loss (one cosine
between whole flattened maps per image) whose gradient on the 90 % best-reconstructed points (the ratio ramps
up over the first 1000 steps) is scaled by 0.1. The anomaly map is the mean over the groups of 1 − cos per
patch, upsampled, Gaussian-smoothed (σ = 4 on a 5-px kernel at 256 px); the image score is the mean of its top 1 %.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ad_core.plugin_api import AnomalyModel, BackboneConfig, Batch, FrozenViT, StepContext, TrainingPlan, components
from ad_foundation.stable_adamw import StableAdamW

# The authors' encoder blocks per DINOv2 size (two groups of four; ViT-L reads every other block from 4).
ENCODER_BLOCKS = {
    "vit_small_patch14_reg4_dinov2": (2, 3, 4, 5, 6, 7, 8, 9),
    "vit_base_patch14_reg4_dinov2": (2, 3, 4, 5, 6, 7, 8, 9),
    "vit_large_patch14_reg4_dinov2": (4, 6, 8, 10, 12, 14, 16, 18),
}
GROUPS = ((0, 1, 2, 3), (4, 5, 6, 7))  # encoder blocks and decoder layers fused per group (decoder: last first)
DECODER_DEPTH = 8
LINEAR_ATTENTION_EPS = 1e-6  # the authors' guard of the normaliser against NaN
DECODER_NORM_EPS = 1e-8
INIT_STD = 0.01  # trunc-normal(0.01) on [-0.03, 0.03] for every trainable linear layer
KERNEL_TRUNCATE = 0.5  # 0.5 σ each side: the authors' 5-tap kernel at σ = 4


class LinearAttention(nn.Module):
    """Softmax-free attention with φ(x) = elu(x) + 1: out_s = φ(q_s)·(Σ_t φ(k_t) v_tᵀ) / (φ(q_s)·Σ_t φ(k_t) + ε).

    Cost linear in the number of tokens; it cannot focus on one key, which is the point in Dinomaly (the decoder
    must not learn an identity mapping of anomalous patches).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, eps: float = LINEAR_ATTENTION_EPS) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"the width {dim} must be a multiple of the number of heads {num_heads}")
        self.num_heads, self.eps = num_heads, eps
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k = F.elu(q) + 1.0, F.elu(k) + 1.0
        kv = k.transpose(-2, -1) @ v  # [b, heads, d, d]
        normaliser = q @ k.sum(dim=-2).unsqueeze(-1) + self.eps  # [b, heads, n, 1]
        out = (q @ kv) / normaliser
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Sequential):
    """Linear → GELU → dropout → linear → dropout; `input_dropout` also drops the input (the noisy bottleneck)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0, input_dropout: bool = False) -> None:
        layers: list[nn.Module] = [nn.Dropout(dropout)] if input_dropout else []
        super().__init__(*layers, nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                         nn.Dropout(dropout))


class DecoderBlock(nn.Module):
    """A pre-norm ViT block (LayerNorm ε = 1e-8) with linear attention and a 4x MLP."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=DECODER_NORM_EPS)
        self.attn = LinearAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=DECODER_NORM_EPS)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def hard_mining_cosine_loss(encoded: Sequence[torch.Tensor], decoded: Sequence[torch.Tensor], ratio: float,
                            factor: float) -> torch.Tensor:
    """The loose group-wise cosine loss with hard mining, averaged over groups of [B,C,h,w] maps.

    Per group: mean over images of 1 − cos(flattened encoder map, flattened decoder map) (one cosine per image:
    the loose constraint). The points (b, y, x) whose own 1 − cos is below the (1 − ratio) top quantile of the
    batch, i.e. the `ratio` best reconstructed, get their gradient multiplied by `factor`.
    """
    loss = encoded[0].new_zeros(())
    for enc, dec in zip(encoded, decoded):
        enc = enc.detach()
        with torch.no_grad():
            distance = 1 - F.cosine_similarity(enc, dec, dim=1)  # [B,h,w]
            k = max(1, int(distance.numel() * (1 - ratio)))
            threshold = distance.flatten().topk(k).values[-1]
            easy = (distance < threshold).unsqueeze(1)
        loss = loss + (1 - F.cosine_similarity(enc.flatten(1), dec.flatten(1), dim=1)).mean()
        if dec.requires_grad:
            dec.register_hook(lambda grad, easy=easy: torch.where(easy, grad * factor, grad))
    return loss / len(encoded)


def mining_ratio(step: int, final: float, ramp_steps: int) -> float:
    """The share of easy points at optimiser step `step` (from 0): linear from 0 to `final` over `ramp_steps`."""
    return final if ramp_steps <= 0 else min(final * step / ramp_steps, final)


def top_mean(maps: torch.Tensor, ratio: float) -> torch.Tensor:
    """Per map [B,...], the mean of its `ratio` highest values (at least one value)."""
    flat = maps.flatten(1)
    k = max(1, int(flat.shape[1] * ratio))
    return flat.topk(k, dim=1).values.mean(dim=1)


class WarmCosine:
    """Learning-rate factor per step: linear warm-up from 0 (numpy's linspace over `warmup` steps), then a cosine
    from 1 to `final` (a fraction of the base rate) over the remaining steps, `final` after them."""

    def __init__(self, total: int, warmup: int, final: float) -> None:
        self.total, self.warmup, self.final = int(total), int(min(warmup, total)), float(final)

    def __call__(self, step: int) -> float:
        if step >= self.total:
            return self.final
        if step < self.warmup:
            return step / max(self.warmup - 1, 1)
        progress = (step - self.warmup) / (self.total - self.warmup)
        return self.final + 0.5 * (1 - self.final) * (1 + math.cos(math.pi * progress))


class Dinomaly(AnomalyModel):
    """Dinomaly: a frozen DINOv2-reg encoder, a noisy MLP bottleneck, a linear-attention decoder (trainer `gradient`).

    `vit_overrides` are timm keyword arguments that shrink the encoder (`depth`, `embed_dim`, `num_heads`) for
    tests with random weights; the decoder takes the encoder's width and number of heads.
    """

    def __init__(
        self,
        backbone: str = "vit_base_patch14_reg4_dinov2",
        target_layers: Sequence[int] | None = None,
        bottleneck_dropout: float = 0.2,
        mining_final_ratio: float = 0.9,
        mining_ramp_steps: int = 1000,
        easy_gradient_factor: float = 0.1,
        lr: float = 2e-3,
        final_lr: float = 2e-4,
        warmup_steps: int = 100,
        weight_decay: float = 1e-4,
        sigma: float = 4.0,
        map_size: int = 256,
        top_ratio: float = 0.01,
        pretrained: bool = True,
        weights_file: str | None = None,
        backbone_dir: str | None = None,
        vit_overrides: dict[str, int] | None = None,
    ) -> None:
        super().__init__()
        if target_layers is None:
            if backbone not in ENCODER_BLOCKS:
                raise ValueError(f"no default encoder blocks for {backbone!r}: pass target_layers (eight block "
                                 f"indices) or use one of {sorted(ENCODER_BLOCKS)}")
            target_layers = ENCODER_BLOCKS[backbone]
        if len(target_layers) != DECODER_DEPTH:
            raise ValueError(f"Dinomaly reads {DECODER_DEPTH} encoder blocks (two groups of four), got "
                             f"{list(target_layers)}")
        if not 0.0 <= mining_final_ratio < 1.0 or not 0.0 <= easy_gradient_factor <= 1.0:
            raise ValueError("mining_final_ratio must lie in [0, 1) and easy_gradient_factor in [0, 1], got "
                             f"{mining_final_ratio} and {easy_gradient_factor}")
        if not 0.0 < top_ratio <= 1.0:
            raise ValueError(f"top_ratio must lie in (0, 1], got {top_ratio}")
        self.mining_final_ratio, self.mining_ramp_steps = float(mining_final_ratio), int(mining_ramp_steps)
        self.easy_gradient_factor = float(easy_gradient_factor)
        self.lr, self.final_lr, self.warmup_steps = float(lr), float(final_lr), int(warmup_steps)
        self.weight_decay, self.sigma = float(weight_decay), float(sigma)
        self.map_size, self.top_ratio = int(map_size), float(top_ratio)
        config = BackboneConfig(backbone, tuple(int(b) for b in target_layers), pretrained, weights_file, backbone_dir)
        self.encoder = FrozenViT(config, norm=False, **(vit_overrides or {}))
        dim, heads = self.encoder.channels[0], int(self.encoder.model.blocks[0].attn.num_heads)
        self.bottleneck = Mlp(dim, 4 * dim, bottleneck_dropout, input_dropout=True)
        self.decoder = nn.ModuleList(DecoderBlock(dim, heads) for _ in range(DECODER_DEPTH))
        for module in [*self.bottleneck.modules(), *self.decoder.modules()]:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=INIT_STD, a=-3 * INIT_STD, b=3 * INIT_STD)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        self.register_buffer("blur_kernel", components.gaussian_kernel1d(self.sigma, KERNEL_TRUNCATE),
                             persistent=False)

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The fused encoder and decoder groups as [B,C,h,w] maps (prefix tokens dropped after decoding)."""
        tokens = self.encoder.tokens(images)
        x = self.bottleneck(torch.stack(tokens, dim=1).mean(dim=1))
        decoded = []
        for block in self.decoder:
            x = block(x)
            decoded.append(x)
        decoded.reverse()  # the last decoder layer reconstructs the first encoder block
        h, w = images.shape[-2] // self.encoder.strides[0], images.shape[-1] // self.encoder.strides[0]
        prefix = self.encoder.num_prefix_tokens

        def grid(sequences: list[torch.Tensor]) -> list[torch.Tensor]:
            fused = [torch.stack([sequences[i] for i in group], dim=1).mean(dim=1)[:, prefix:] for group in GROUPS]
            return [f.transpose(1, 2).reshape(f.shape[0], -1, h, w) for f in fused]

        return grid(tokens), grid(decoded)

    def configure_optimizers(self, plan: TrainingPlan) -> dict[str, object]:
        """StableAdamW (AMSGrad, ε = 1e-10) on bottleneck and decoder; warm-up + cosine over the run's steps."""
        params = [*self.bottleneck.parameters(), *self.decoder.parameters()]
        optimizer = StableAdamW(params, lr=self.lr, betas=(0.9, 0.999), eps=1e-10, weight_decay=self.weight_decay,
                                amsgrad=True)
        schedule = WarmCosine(plan.total_steps, self.warmup_steps, self.final_lr / self.lr)
        return {"optimizer": optimizer, "scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, schedule),
                "interval": "step"}

    def training_step(self, batch: Batch, ctx: StepContext) -> torch.Tensor:
        encoded, decoded = self(batch.image)
        ratio = mining_ratio(ctx.step, self.mining_final_ratio, self.mining_ramp_steps)
        ctx.log(mining_ratio=ratio)
        return hard_mining_cosine_loss(encoded, decoded, ratio, self.easy_gradient_factor)

    def raw_map(self, images: torch.Tensor) -> torch.Tensor:
        """Mean over the groups of 1 − cos per patch, bilinearly upsampled (corners aligned) to the image: [B,H,W]."""
        encoded, decoded = self(images)
        maps = [1 - F.cosine_similarity(e, d, dim=1).unsqueeze(1) for e, d in zip(encoded, decoded)]
        maps = [F.interpolate(m, size=images.shape[-2:], mode="bilinear", align_corners=True) for m in maps]
        return torch.cat(maps, dim=1).mean(dim=1)

    def smooth(self, amap: torch.Tensor) -> torch.Tensor:
        """The map resized so its short side is `map_size`, then blurred by the 5-tap σ = 4 kernel (zero padding)."""
        height, width = (int(side) for side in amap.shape[-2:])  # plain ints, also while the exporter traces
        scale = self.map_size / min(height, width)
        size = (round(height * scale), round(width * scale))
        x = F.interpolate(amap.unsqueeze(1), size=size, mode="bilinear", align_corners=False)
        kernel = self.blur_kernel.to(x)
        radius = kernel.numel() // 2
        x = F.conv2d(x, kernel.view(1, 1, -1, 1), padding=(radius, 0))
        return F.conv2d(x, kernel.view(1, 1, 1, -1), padding=(0, radius))[:, 0]

    def compute(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        amap = self.smooth(self.raw_map(images))
        return top_mean(amap, self.top_ratio), amap
