"""PaDiM (Defard et al., "PaDiM: a Patch Distribution Modeling Framework for Anomaly Detection and
Localization", ICPR 2020 workshops).

Every patch position of the first feature map gets a multivariate Gaussian of the embeddings seen
there in training (layers concatenated, a random subset of channels); a test patch is scored by
its Mahalanobis distance to the Gaussian of its position.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from ad_core.components.backbone import BackboneConfig, image_chunks
from ad_core.components.draws import random_subset
from ad_core.components.maps import gaussian_blur
from ad_memory.features import MemoryBankModel

if TYPE_CHECKING:
    from ad_core.plugin_api import World

# Channel subsets of the paper / anomalib for the two usual backbones (d = 100 and 550).
N_FEATURES_DEFAULTS = {"resnet18": 100, "wide_resnet50_2": 550}
# Elements of one [positions, batch, channels] or [positions, C, C] chunk processed at once (16 MiB of float32).
CHUNK_ELEMENTS = 1 << 22


def _position_chunks(positions: int, per_position: int) -> list[slice]:
    step = max(1, CHUNK_ELEMENTS // max(1, per_position))
    return [slice(start, min(positions, start + step)) for start in range(0, positions, step)]


class Padim(MemoryBankModel):
    """PaDiM with streaming, numerically centred covariance accumulation."""


    def __init__(
        self,
        backbone: str = "resnet18",
        layers: Sequence[str] = ("layer1", "layer2", "layer3"),
        pretrained: bool = True,
        weights_file: str | None = None,
        backbone_dir: str | None = None,
        n_features: int | None = None,
        epsilon: float = 0.01,
        sigma: float = 4.0,
        stats_dtype: str = "float64",
        seed: int = 0,
    ) -> None:
        super().__init__(BackboneConfig(backbone, layers, pretrained, weights_file, backbone_dir))
        total = sum(self.backbone.channels)
        if n_features is None:
            n_features = N_FEATURES_DEFAULTS.get(backbone.split(".")[0], total)
        if not 0 < n_features <= total:
            raise ValueError(f"n_features must be in [1, {total}] for {backbone} {list(layers)}, got {n_features}")
        if stats_dtype not in ("float64", "float32"):
            raise ValueError(f"stats_dtype must be 'float64' or 'float32', got {stats_dtype!r}")
        self.n_features = int(n_features)
        self.epsilon = float(epsilon)
        self.sigma = float(sigma)
        self.stats_dtype = getattr(torch, stats_dtype)
        self.seed = int(seed)
        self.register_buffer("channel_index", random_subset(total, self.n_features, self.seed))
        self.register_buffer("mean", torch.empty(0, self.n_features))
        self.register_buffer("inv_covariance", torch.empty(0, self.n_features, self.n_features))
        # Per layer: which of the chosen channels it provides (local indices), so unused ones are never upsampled.
        offsets = torch.tensor([0, *self.backbone.channels]).cumsum(0)
        self._layer_channels = [
            (self.channel_index[(self.channel_index >= lo) & (self.channel_index < hi)] - lo)
            for lo, hi in zip(offsets[:-1].tolist(), offsets[1:].tolist())
        ]
        self._reset_statistics()

    # -- features ------------------------------------------------------------------------------------
    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """[B, h*w, n_features] embeddings on the first layer's grid (deeper layers nearest-upsampled)."""
        features = self.backbone(images)
        h, w = features[0].shape[-2:]
        parts = []
        for feature, channels in zip(features, self._layer_channels):
            if len(channels) == 0:
                continue
            part = feature.index_select(1, channels.to(feature.device))
            if part.shape[-2:] != (h, w):
                part = F.interpolate(part, size=(h, w), mode="nearest")
            parts.append(part.permute(0, 2, 3, 1))  # positions first
        emb = torch.cat(parts, dim=3)
        return emb.reshape(emb.shape[0], h * w, self.n_features), (h, w)

    # -- fitting -------------------------------------------------------------------------------------
    def _reset_statistics(self) -> None:
        self._count = 0
        self._shift: torch.Tensor | None = None
        self._sum: torch.Tensor | None = None
        self._sum_outer: torch.Tensor | None = None

    @torch.no_grad()
    def update(self, batch: Any) -> None:
        """Accumulate per-position sums of (x - s) and (x - s)(x - s)^T, s = the first batch's mean.

        Only these sums are kept (never the embeddings), in `stats_dtype`; the shift keeps them
        centred so even float32 sums do not cancel catastrophically.
        """
        images = batch.image if hasattr(batch, "image") else batch
        if self.is_fitted:
            self.fitted.fill_(False)
            self._reset_statistics()
        for chunk in image_chunks(images):
            self._accumulate(self.embed(chunk)[0])

    def _accumulate(self, emb: torch.Tensor) -> None:
        x = emb.transpose(0, 1)  # [P, B, C]
        positions, _, c = x.shape
        if self._shift is None:
            self._shift = x.mean(1, keepdim=True)
            self._sum = torch.zeros(positions, c, dtype=torch.float64, device=x.device)
            self._sum_outer = torch.zeros(positions, c, c, dtype=self.stats_dtype, device=x.device)
        elif positions != self._shift.shape[0]:
            raise ValueError(f"all training images must have the same size: got {positions} positions, "
                             f"expected {self._shift.shape[0]}")
        centred = x - self._shift
        self._sum += centred.sum(1, dtype=torch.float64)
        for part in _position_chunks(positions, c * c):
            block = centred[part]
            self._sum_outer[part] += torch.bmm(block.transpose(1, 2), block).to(self.stats_dtype)
        self._count += x.shape[1]

    @torch.no_grad()
    def merge_distributed(self, world: World) -> None:
        """Exact merge of the processes' sums (torchrun): each rank re-centres its sums on rank 0's shift s0,
        sum(x - s0) = sum(x - s) + n d and sum((x - s0)(x - s0)^T) = sum((x - s)(x - s)^T) + S d^T + d S^T + n d d^T
        with d = s - s0 and S = sum(x - s), then the sums and counts are added over the ranks."""
        if self._sum is None or self._sum_outer is None or self._shift is None:
            raise RuntimeError("Padim.merge_distributed() called before any update(): no training images")
        shift0 = self._shift.contiguous().clone()
        world.broadcast_tensor(shift0)
        d = (self._shift - shift0)[:, 0].double()  # [P, C]
        n = self._count
        for part in _position_chunks(d.shape[0], d.shape[1] ** 2):
            s_part, d_part = self._sum[part], d[part]
            cross = s_part[:, :, None] * d_part[:, None, :]
            correction = cross + cross.transpose(1, 2) + n * d_part[:, :, None] * d_part[:, None, :]
            self._sum_outer[part] += correction.to(self.stats_dtype)
        self._sum += n * d
        self._shift = shift0
        world.sum(self._sum)
        world.sum(self._sum_outer)
        self._count = world.sum_int(n, self._sum.device)

    @torch.no_grad()
    def finalize(self) -> None:
        """Mean and regularised inverse covariance per position; frees the accumulators."""
        if self._count == 0 or self._sum is None or self._sum_outer is None or self._shift is None:
            raise RuntimeError("Padim.finalize() called before any update(): no training images")
        if self._count < 2:
            raise ValueError("PaDiM needs at least 2 training images to estimate a covariance")
        n = self._count
        positions, c = self._sum.shape
        mean_shifted = self._sum / n  # float64
        mean = (mean_shifted + self._shift[:, 0].double()).float()
        inv = torch.empty(positions, c, c, dtype=torch.float32, device=self._sum.device)
        eye = torch.eye(c, dtype=self.stats_dtype, device=self._sum.device)
        for part in _position_chunks(positions, c * c):
            m = mean_shifted[part].to(self.stats_dtype)
            cov = (self._sum_outer[part] - n * m[:, :, None] * m[:, None, :]) / (n - 1) + self.epsilon * eye
            chol = torch.linalg.cholesky(cov)
            inv[part] = torch.cholesky_inverse(chol).float()
        self._reset_statistics()
        self.set_buffer("mean", mean)
        self.set_buffer("inv_covariance", inv)
        self.mark_fitted()

    # -- scoring -------------------------------------------------------------------------------------
    def mahalanobis(self, emb: torch.Tensor) -> torch.Tensor:
        """[B, P, C] embeddings -> [B, P] Mahalanobis distances to each position's Gaussian."""
        if emb.shape[1] != self.mean.shape[0]:
            raise ValueError(f"PaDiM was fitted on {self.mean.shape[0]} positions per image but got "
                             f"{emb.shape[1]}: predict at the training image size")
        b, positions, c = emb.shape
        out = emb.new_empty(positions, b)
        delta_all = emb.transpose(0, 1)  # [P, B, C] view
        for part in _position_chunks(positions, max(b * c, c * c)):
            delta = delta_all[part] - self.mean[part, None, :]
            out[part] = (torch.bmm(delta, self.inv_covariance[part]) * delta).sum(2)
        return out.t().clamp_(min=0).sqrt_()

    def compute(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = []
        for chunk in image_chunks(images):
            emb, (h, w) = self.embed(chunk)
            maps.append(self.mahalanobis(emb).view(-1, 1, h, w))
        dist = torch.cat(maps)
        amap = F.interpolate(dist, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        amap = gaussian_blur(amap, self.sigma)
        return amap.amax(dim=(1, 2)), amap
