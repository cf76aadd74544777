"""CS-Flow (Rudolph et al., Fully Convolutional Cross-Scale-Flows for Image-based Defect Detection, WACV 2022).

One EfficientNet feature map of the image at three resolutions (full, 1/2, 1/4) goes through a fully
convolutional normalizing flow whose coupling blocks process the three scales jointly: the subnetwork that
computes a scale's affine parameters also sees its neighbouring scales (up- and down-sampled). Trained by
maximum likelihood; the image score is the mean of z²/2 over every latent, the map the channel mean of z².
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ad_core.backbones import create_model
from ad_core.components.backbone import BackboneConfig
from ad_core.model import AnomalyModel
from ad_core.training import StepContext, TrainingPlan
from ad_core.types import Batch

N_SCALES = 3
MAP_MODES = ("first", "product")


class EfficientNetStage(nn.Module):
    """The stem and the first `stage + 1` block stages of a timm EfficientNet, frozen.

    CS-Flow reads the output of the 304-channel stage of EfficientNet-B5 (stride 32), which is not one of
    timm's `features_only` levels, so the network is cut by hand.
    """

    def __init__(self, backbone: BackboneConfig, stage: int) -> None:
        super().__init__()
        name = backbone.name
        full = create_model(name, pretrained=backbone.pretrained, weights_file=backbone.weights_file,
                            backbone_dir=backbone.backbone_dir)
        if not all(hasattr(full, attr) for attr in ("conv_stem", "bn1", "blocks")):
            raise ValueError(f"CS-Flow needs an EfficientNet-style timm backbone (conv_stem, bn1, blocks), "
                             f"got {name!r}")
        if not 0 <= stage < len(full.blocks):
            raise ValueError(f"stage must lie in [0, {len(full.blocks) - 1}] for {name!r}, got {stage}")
        self.body = nn.Sequential(full.conv_stem, full.bn1, *full.blocks[: stage + 1])
        self.body.requires_grad_(False)
        self.body.eval()
        convs = [m for m in self.body.modules() if isinstance(m, nn.Conv2d)]
        self.channels = convs[-1].out_channels
        self.stride = math.prod(m.stride[0] for m in convs)

    def train(self, mode: bool = True) -> EfficientNetStage:
        return super().train(False)  # frozen: BatchNorm statistics never move

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)


def soft_clamp(s: torch.Tensor, clamp: float) -> torch.Tensor:
    """The paper's bounded log-scale: clamp · (2/π) · atan(s / clamp), close to s near 0, within ±clamp."""
    return clamp * 0.636 * torch.atan(s / clamp)


class CrossScaleSubnet(nn.Module):
    """The affine parameters of all three scales at once (the paper's Fig. 4).

    Each scale has two convolutions with a leaky ReLU between; the hidden activations of the finer neighbour
    come in through a strided convolution and those of the coarser neighbour through bilinear up-sampling and
    a convolution. A learned per-scale factor, zero at start, makes every block start as the identity.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int, kernel_size: int,
                 leaky_slope: float = 0.1) -> None:
        super().__init__()
        pad = kernel_size // 2

        def conv(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=pad)

        self.first = nn.ModuleList(conv(in_channels, hidden) for _ in range(N_SCALES))
        self.second = nn.ModuleList(conv(hidden, out_channels) for _ in range(N_SCALES))
        self.from_coarser = nn.ModuleList(conv(hidden, out_channels) for _ in range(N_SCALES - 1))
        self.from_finer = nn.ModuleList(conv(hidden, out_channels, stride=2) for _ in range(N_SCALES - 1))
        self.act = nn.LeakyReLU(leaky_slope)
        self.gamma = nn.Parameter(torch.zeros(N_SCALES))

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        hidden = [self.act(conv(x)) for conv, x in zip(self.first, xs)]
        out = [conv(h) for conv, h in zip(self.second, hidden)]
        for i in range(N_SCALES - 1):
            up = F.interpolate(hidden[i + 1], size=hidden[i].shape[-2:], mode="bilinear", align_corners=False)
            out[i] = out[i] + self.from_coarser[i](up)
            out[i + 1] = out[i + 1] + self.from_finer[i](hidden[i])
        return [o * g for o, g in zip(out, self.gamma)]


class CrossScaleCoupling(nn.Module):
    """A GLOW-style affine coupling block applied to the three scales in parallel.

    The channels are split in two halves; each half is scaled and shifted by parameters computed (across
    scales) from the other half, first half first. Scales are soft-clamped.
    """

    def __init__(self, channels: int, hidden: int, kernel_size: int, clamp: float, leaky_slope: float) -> None:
        super().__init__()
        self.c1, self.c2 = channels // 2, channels - channels // 2
        self.clamp = float(clamp)
        self.net_first = CrossScaleSubnet(self.c2, 2 * self.c1, hidden, kernel_size, leaky_slope)
        self.net_second = CrossScaleSubnet(self.c1, 2 * self.c2, hidden, kernel_size, leaky_slope)

    def _affine(self, net: CrossScaleSubnet, cond: list[torch.Tensor], xs: list[torch.Tensor], split: int,
                reverse: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
        out, logdet = [], 0.0
        for x, params in zip(xs, net(cond)):
            log_s, t = soft_clamp(params[:, :split], self.clamp), params[:, split:]
            out.append((x - t) * torch.exp(-log_s) if reverse else x * torch.exp(log_s) + t)
            logdet = logdet + log_s.flatten(1).sum(1)
        return out, logdet

    def forward(self, xs: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        first = [x[:, : self.c1] for x in xs]
        second = [x[:, self.c1 :] for x in xs]
        first, logdet1 = self._affine(self.net_first, second, first, self.c1, reverse=False)
        second, logdet2 = self._affine(self.net_second, first, second, self.c2, reverse=False)
        return [torch.cat(pair, 1) for pair in zip(first, second)], logdet1 + logdet2

    def inverse(self, zs: list[torch.Tensor]) -> list[torch.Tensor]:
        first = [z[:, : self.c1] for z in zs]
        second = [z[:, self.c1 :] for z in zs]
        second, _ = self._affine(self.net_second, first, second, self.c2, reverse=True)
        first, _ = self._affine(self.net_first, second, first, self.c1, reverse=True)
        return [torch.cat(pair, 1) for pair in zip(first, second)]


class CrossScaleFlow(nn.Module):
    """Coupling blocks, each preceded by a fixed random channel permutation (the same at every scale)."""

    def __init__(self, channels: int, n_blocks: int, hidden: int, kernel_sizes: list[int], clamp: float,
                 leaky_slope: float, seed: int = 0) -> None:
        super().__init__()
        if len(kernel_sizes) != n_blocks:
            raise ValueError(f"kernel_sizes needs one size per coupling block ({n_blocks}), got {kernel_sizes}")
        self.blocks = nn.ModuleList(
            CrossScaleCoupling(channels, hidden, k, clamp, leaky_slope) for k in kernel_sizes
        )
        generator = torch.Generator().manual_seed(seed)
        for i in range(n_blocks):
            self.register_buffer(f"perm{i}", torch.randperm(channels, generator=generator))

    def _perm(self, i: int) -> torch.Tensor:
        return getattr(self, f"perm{i}")

    def forward(self, xs: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        logdet = xs[0].new_zeros(xs[0].shape[0])
        for i, block in enumerate(self.blocks):
            xs, ld = block([x[:, self._perm(i)] for x in xs])
            logdet = logdet + ld
        return xs, logdet

    def inverse(self, zs: list[torch.Tensor]) -> list[torch.Tensor]:
        for i in reversed(range(len(self.blocks))):
            inv = torch.argsort(self._perm(i))
            zs = [z[:, inv] for z in self.blocks[i].inverse(zs)]
        return zs


class CSFlow(AnomalyModel):
    """CS-Flow; defaults are the paper's (EfficientNet-B5 stage 304 ch, 4 blocks, clamp 3, 1024 hidden)."""

    def __init__(
        self,
        backbone: str = "tf_efficientnet_b5.aa_in1k",
        stage: int = 5,
        n_coupling_blocks: int = 4,
        hidden_channels: int = 1024,
        kernel_sizes: list[int] | None = None,
        clamp: float = 3.0,
        leaky_slope: float = 0.1,
        map_mode: str = "first",
        lr: float = 2e-4,
        weight_decay: float = 1e-5,
        adam_eps: float = 1e-4,
        seed: int = 0,
        pretrained: bool = True,
        weights_file: str | None = None,
        backbone_dir: str | None = None,
    ) -> None:
        super().__init__()
        if map_mode not in MAP_MODES:
            raise ValueError(f"map_mode must be one of {MAP_MODES}, got {map_mode!r}")
        if n_coupling_blocks < 1:
            raise ValueError(f"n_coupling_blocks must be at least 1, got {n_coupling_blocks}")
        self.map_mode = map_mode
        self.lr, self.weight_decay, self.adam_eps = float(lr), float(weight_decay), float(adam_eps)
        self.extractor = EfficientNetStage(BackboneConfig(backbone, (), pretrained, weights_file, backbone_dir), stage)
        sizes = list(kernel_sizes) if kernel_sizes is not None else [3] * (n_coupling_blocks - 1) + [5]
        self.flow = CrossScaleFlow(self.extractor.channels, n_coupling_blocks, hidden_channels, sizes, clamp,
                                   leaky_slope, seed)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The feature map of the image at full, half and quarter resolution."""
        h, w = images.shape[-2:]
        multiple = 4 * self.extractor.stride
        if h % multiple or w % multiple:
            raise ValueError(f"CS-Flow needs image sides that are multiples of {multiple} (4 x the backbone "
                             f"stride {self.extractor.stride}) so the three scales align, got {h}x{w}")
        scaled = [images] + [
            F.interpolate(images, size=(h // 2**s, w // 2**s), mode="bilinear", align_corners=False, antialias=True)
            for s in range(1, N_SCALES)
        ]
        return [self.extractor(x) for x in scaled]

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        return self.flow(self.features(images))

    def training_step(self, batch: Batch, ctx: StepContext) -> torch.Tensor:
        """Negative log-likelihood per latent dimension (the paper's loss), averaged over the batch."""
        zs, logdet = self(batch.image)
        sq = sum(z.pow(2).flatten(1).sum(1) for z in zs)
        dims = sum(z[0].numel() for z in zs)
        return torch.mean(0.5 * sq - logdet) / dims

    def configure_optimizers(self, plan: TrainingPlan) -> torch.optim.Optimizer:
        params = [p for p in self.flow.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=self.lr, eps=self.adam_eps, weight_decay=self.weight_decay)

    def compute(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        zs, _ = self(images)
        score = 0.5 * torch.cat([z.flatten(1) for z in zs], 1).pow(2).mean(1)
        maps = [z.pow(2).mean(1, keepdim=True) for z in zs]
        if self.map_mode == "first":
            amap = maps[0]
        else:  # product of the three scales' maps at the finest resolution (anomalib's default)
            amap = maps[0]
            for m in maps[1:]:
                amap = amap * F.interpolate(m, size=maps[0].shape[-2:], mode="bilinear", align_corners=False)
        return score, amap[:, 0]
