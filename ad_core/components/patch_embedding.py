"""PatchCore's locally aware patch features as a fixed linear map (Roth et al., CVPR 2022).

Shared by the models that read them: PatchCore's memory bank, and EfficientAD's teacher distillation, whose
target is the same aggregation of a backbone's layer-2 and layer-3 features pooled to 384 channels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def adaptive_pool_plan(length: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices [size, K] and weights [size, K] such that out[i] = sum_k w[i,k] * x[idx[i,k]]
    equals `F.adaptive_avg_pool1d(x, size)` for a vector of `length` (bins overlap when not divisible)."""
    i = torch.arange(size)
    starts = (i * length) // size
    ends = ((i + 1) * length + size - 1) // size
    width = ends - starts
    offsets = torch.arange(int(width.max()))
    valid = offsets[None] < width[:, None]
    index = torch.where(valid, starts[:, None] + offsets[None], starts[:, None])
    weight = valid.to(torch.float64) / width[:, None].to(torch.float64)
    return index, weight


class LayerMap(nn.Module):
    """The part of the patch aggregation that one layer contributes, as a grouped 3x3 convolution.

    Output channel t of the final embedding is a weighted sum of 3x3-shifted input channels. Each
    input channel feeds at most `m` outputs, so a convolution with `groups=C` and `m` kernels per
    channel computes every (output, channel) term; `gathers` then sums the terms of each output.
    """

    def __init__(self, channels: int, entries: torch.Tensor, patch_size: int) -> None:
        super().__init__()
        # entries: [E, 4] float64 rows (t, c, pos, weight) for this layer.
        t = entries[:, 0].long()
        c = entries[:, 1].long()
        pos = entries[:, 2].long()
        w = entries[:, 3]
        k2 = patch_size * patch_size
        pair_key = c * (int(t.max()) + 1) + t  # sorted by channel, then output
        pairs, pair_of_entry = torch.unique(pair_key, sorted=True, return_inverse=True)
        n_out_max = int(t.max()) + 1
        pair_c = pairs // n_out_max
        pair_t = pairs % n_out_max
        kernels = torch.zeros(len(pairs), k2, dtype=torch.float64)
        kernels.index_put_((pair_of_entry, pos), w, accumulate=True)
        counts = torch.bincount(pair_c, minlength=channels)
        first = torch.cumsum(counts, 0) - counts
        slot = torch.arange(len(pairs)) - first[pair_c]
        m = int(counts.max())
        weight = torch.zeros(channels, m, k2, dtype=torch.float64)
        weight[pair_c, slot] = kernels
        target = torch.full((channels, m), -1, dtype=torch.long)
        target[pair_c, slot] = pair_t
        target = target.flatten()
        outputs = torch.unique(pair_t, sorted=True)
        # For each output, the r-th conv channel feeding it (or -1); sums over r give the output.
        slot_index = torch.arange(channels * m)
        valid = target >= 0
        order = torch.argsort(target[valid] * (channels * m) + slot_index[valid])
        fed_t = target[valid][order]
        fed_s = slot_index[valid][order]
        position_in_output = torch.searchsorted(outputs, fed_t)
        rank = torch.arange(len(fed_t)) - torch.searchsorted(fed_t, fed_t)
        n_rank = int(rank.max()) + 1
        gathers = torch.full((n_rank, len(outputs)), -1, dtype=torch.long)
        gathers[rank, position_in_output] = fed_s

        self.channels = channels
        self.multiplier = m
        self.padding = patch_size // 2
        self.register_buffer("weight", weight.view(channels * m, 1, patch_size, patch_size).float(), persistent=False)
        self.register_buffer("outputs", outputs, persistent=False)
        self.register_buffer("gathers", gathers, persistent=False)
        self.identity = n_rank == 1 and len(outputs) == channels * m and bool(
            (gathers[0] == torch.arange(channels * m)).all()
        )
        self.complete = bool((gathers >= 0).all())
        lo, hi = int(outputs[0]), int(outputs[-1]) + 1
        self.output_range = (lo, hi) if hi - lo == len(outputs) else None

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """[B,C,h,w] -> [B,h,w,len(outputs)] (positions first, as the memory bank wants them)."""
        y = F.conv2d(feature, self.weight, padding=self.padding, groups=self.channels)
        y = y.permute(0, 2, 3, 1)  # a view: conv output is channels_last for channels_last input
        if self.identity:
            return y
        flat = y.reshape(-1, y.shape[-1])
        out = None
        for row in self.gathers:
            if self.complete:
                term = flat.index_select(1, row)
            else:
                term = flat.index_select(1, row.clamp(min=0)) * (row >= 0).to(flat.dtype)
            out = term if out is None else out.add_(term)
        return out.view(*y.shape[:3], -1)


class PatchEmbedder(nn.Module):
    """The authors' locally aware patch features, exactly, at a fraction of the cost.

    Reference pipeline (patchcore-inspection): for each layer, unfold 3x3 neighbourhoods (zero
    padding, stride 1), upsample deeper layers' unfolded maps bilinearly to the first layer's grid,
    adaptive-average-pool each flattened C*3*3 vector to `pretrain_embed_dim`, stack the layers and
    adaptive-average-pool the L*D vector to `target_embed_dim`. All steps are linear and bilinear
    upsampling commutes with channel mixing, so each layer is mapped first (at its own resolution,
    by a grouped conv) and only its `target_embed_dim`-sized contribution is upsampled.
    """

    def __init__(self, channels: Sequence[int], patch_size: int = 3, pretrain_embed_dim: int = 1024,
                 target_embed_dim: int = 1024) -> None:
        super().__init__()
        self.target_embed_dim = target_embed_dim
        k2 = patch_size * patch_size
        n_layers = len(channels)
        agg_index, agg_weight = adaptive_pool_plan(n_layers * pretrain_embed_dim, target_embed_dim)
        maps = []
        for layer, c in enumerate(channels):
            layer_index, layer_weight = adaptive_pool_plan(c * k2, pretrain_embed_dim)
            rows = []
            for k in range(agg_index.shape[1]):
                j = agg_index[:, k]
                w1 = agg_weight[:, k]
                mine = (j // pretrain_embed_dim == layer) & (w1 > 0)
                if not mine.any():
                    continue
                t = torch.arange(target_embed_dim)[mine]
                jj = j[mine] % pretrain_embed_dim
                for k2_ in range(layer_index.shape[1]):
                    e = layer_index[jj, k2_]
                    w = w1[mine] * layer_weight[jj, k2_]
                    keep = w > 0
                    rows.append(torch.stack([t[keep].double(), (e[keep] // k2).double(),
                                             (e[keep] % k2).double(), w[keep]], dim=1))
            if not rows:
                raise ValueError(f"layer {layer} contributes nothing to a {target_embed_dim}-d embedding")
            maps.append(LayerMap(c, torch.cat(rows), patch_size))
        self.maps = nn.ModuleList(maps)

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, tuple[int, int]]:
        """Feature maps -> patch embeddings [B*h*w, target_embed_dim] on the first map's grid, and (h, w)."""
        b = features[0].shape[0]
        h, w = features[0].shape[-2:]
        out = features[0].new_zeros(b, h, w, self.target_embed_dim)
        for layer_map, feature in zip(self.maps, features):
            part = layer_map(feature)  # [B,h_l,w_l,n]
            if part.shape[1:3] != (h, w):
                part = F.interpolate(part.permute(0, 3, 1, 2), size=(h, w), mode="bilinear", align_corners=False)
                part = part.permute(0, 2, 3, 1)
            if layer_map.output_range is not None:
                lo, hi = layer_map.output_range
                out[..., lo:hi] += part
            else:
                out.index_add_(3, layer_map.outputs, part)
        return out.view(b * h * w, self.target_embed_dim), (h, w)
