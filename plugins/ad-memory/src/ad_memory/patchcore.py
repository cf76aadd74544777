"""PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022).

Locally aware patch features of a frozen backbone are subsampled into a memory bank by greedy
k-center coreset selection; a test patch is scored by its distance to the nearest bank item, and
the image score is the largest patch score, reweighted by how isolated its nearest item is (Eq. 7).

Performance choices (results are those of the plain algorithm up to floating-point rounding):
- the authors' patch aggregation (unfold a 3x3 neighbourhood, adaptive-average-pool the flattened
  C*3*3 vector to 1024, then pool the stacked layers to 1024) is a fixed sparse linear map, so it is
  run as one grouped 3x3 convolution per layer at the layer's own resolution, before upsampling;
- the greedy coreset updates its min-distance vector lazily, block by block, with matrix products
  (exact greedy order: a block is only refreshed when its stale maximum could be the global one);
- the nearest-neighbour search is exact but pruned: a PCA lower bound on every distance (one thin
  matrix product) rules out most bank items, and only the rest are measured (`pruned_neighbours`);
- training patches are streamed: when the pending pool exceeds `max_pending_patches` it is reduced
  by a greedy coreset pass, so memory stays bounded (see `PatchCore.update`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ad_core.model import gaussian_blur
from ad_core.features import image_chunks, seeded_generator
from ad_memory.features import MemoryBankModel

# Elements of the [queries x bank] distance block computed at once at test time (32 MiB of float32).
NN_BLOCK_ELEMENTS = 1 << 23
# Exact pruned search (see `pruned_neighbours`): PCA dimensions of the lower bound, queries per block,
# relative float32 margin on the bound, the bank size below which brute force is used, and the
# candidates per query beyond which a block falls back to brute force.
SEARCH_DIM = 64
PRUNE_ROWS = 512
PRUNE_TOLERANCE = 1e-4
PRUNE_MIN_BANK = 1024
PRUNE_MAX_CANDIDATES = 16
# Largest magnitude float16 represents; pending patches beyond it stay float32.
FLOAT16_MAX = 65504.0


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


def sparse_random_projection(dim_in: int, dim_out: int, seed: int) -> torch.Tensor:
    """A [dim_in, dim_out] very sparse random projection (Li et al. 2006; density 1/sqrt(dim_in)).

    It approximately preserves distances (Johnson-Lindenstrauss), which is all the coreset needs.
    """
    generator = seeded_generator(seed)
    density = 1.0 / math.sqrt(dim_in)
    u = torch.rand(dim_in, dim_out, generator=generator)
    sign = torch.zeros(dim_in, dim_out)
    sign[u < density / 2] = -1.0
    sign[u > 1 - density / 2] = 1.0
    return sign * math.sqrt(1.0 / (density * dim_out))


def greedy_coreset(features: torch.Tensor, count: int, block_size: int = 256) -> torch.Tensor:
    """Indices of `count` points chosen by greedy k-center (farthest-point) selection.

    Starts at the point farthest from the mean (an outlier, as in the authors' start rule),
    then repeatedly adds the point farthest from the points chosen so far. The min-distance vector
    is updated lazily: each block of `block_size` points keeps the centres it has not yet seen and
    an upper bound on its largest min-distance; only the block whose bound is highest is refreshed
    (with one matrix product over its pending centres) until that block's exact maximum beats every
    other bound. This yields the same selection as the eager loop, with matrix-matrix instead of
    matrix-vector work.
    """
    n = features.shape[0]
    if count >= n:
        return torch.arange(n, device=features.device)
    if count <= 0:
        return torch.empty(0, dtype=torch.long, device=features.device)
    x = features.float().contiguous()
    sq = (x * x).sum(1)
    n_blocks = (n + block_size - 1) // block_size
    min_dist = torch.full((n,), float("inf"), device=x.device)
    centres = x.new_empty(count, x.shape[1])
    centre_sq = x.new_empty(count)
    chosen = torch.empty(count, dtype=torch.long, device=x.device)
    upper = [float("inf")] * n_blocks
    seen = [0] * n_blocks
    current = int(((x - x.mean(0)) ** 2).sum(1).argmax())
    for step in range(count):
        chosen[step] = current
        centres[step] = x[current]
        centre_sq[step] = sq[current]
        min_dist[current] = -1.0  # never chosen twice, even among duplicates
        while True:
            block = max(range(n_blocks), key=upper.__getitem__)
            lo, hi = block * block_size, min(n, (block + 1) * block_size)
            first = seen[block]
            part = min_dist[lo:hi]
            if first <= step:
                cross = torch.addmm(centre_sq[first : step + 1], x[lo:hi], centres[first : step + 1].T, alpha=-2)
                torch.minimum(part, cross.amin(1).add_(sq[lo:hi]), out=part)
                seen[block] = step + 1
            value, where = part.max(0)
            upper[block] = float(value)
            if upper[block] >= max(upper):
                current = lo + int(where)
                break
    return chosen


def brute_force_neighbours(queries: torch.Tensor, bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact nearest bank item of each query by blocks of |m|^2 - 2 q.m (bounded memory); the distance
    to the winner is then measured directly, free of the expansion's cancellation error."""
    bank_sq = (bank * bank).sum(1)
    rows = max(1, NN_BLOCK_ELEMENTS // max(1, bank.shape[0]))
    distances, indices = [], []
    for start in range(0, queries.shape[0], rows):
        q = queries[start : start + rows]
        index = torch.addmm(bank_sq, q, bank.T, alpha=-2).argmin(1)
        distances.append(torch.linalg.vector_norm(q - bank[index], dim=1))
        indices.append(index)
    return torch.cat(distances), torch.cat(indices)


def build_search_index(bank: torch.Tensor, dim: int = SEARCH_DIM) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean [D], orthonormal PCA basis [D, r] and the bank's bound coordinates [M, r+1] for pruned search.

    For an orthogonal projection P onto the top-r principal directions and residual norms rho,
    |q - m|^2 >= |P(q - m)|^2 + (rho_q - rho_m)^2: a lower bound, as one small matrix product.
    """
    r = min(dim, bank.shape[1], max(0, bank.shape[0] - 1))
    mean = bank.mean(0)
    if r == 0 or bank.shape[0] < PRUNE_MIN_BANK:
        return mean, bank.new_zeros(bank.shape[1], 0), bank.new_zeros(0, 0)
    centred = (bank - mean).double()
    _, vectors = torch.linalg.eigh(centred.T @ centred)
    basis = vectors[:, -r:].flip(1).contiguous()
    projected = centred @ basis
    residual = (centred.pow(2).sum(1) - projected.pow(2).sum(1)).clamp_min(0).sqrt()
    coords = torch.cat([projected, residual[:, None]], 1)
    return mean, basis.float(), coords.float().contiguous()


def pruned_neighbours(queries: torch.Tensor, bank: torch.Tensor, mean: torch.Tensor, basis: torch.Tensor,
                      coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact nearest neighbours, computing full distances only where the lower bound allows a win.

    Per query: the bank item with the smallest bound gives an upper bound U on the NN distance
    (its true distance); only items whose bound is below U (plus a float32 rounding margin) can be
    nearer, and only those are measured exactly. Blocks where the bound prunes poorly fall back to
    the brute-force product, so the worst case costs little more than brute force.
    """
    coords_sq = (coords * coords).sum(1)
    margin_scale = PRUNE_TOLERANCE * float(coords_sq.max())
    distances, indices = [], []
    for start in range(0, queries.shape[0], PRUNE_ROWS):
        q = queries[start : start + PRUNE_ROWS]
        centred = q - mean
        projected = centred @ basis
        residual = (centred.pow(2).sum(1) - projected.pow(2).sum(1)).clamp_min(0).sqrt()
        qc = torch.cat([projected, residual[:, None]], 1)
        qc_sq = (qc * qc).sum(1)
        bound = torch.addmm(coords_sq, qc, coords.T, alpha=-2).add_(qc_sq[:, None])
        guess = bound.argmin(1)
        upper = (q - bank[guess]).pow(2).sum(1)
        limit = upper * (1 + PRUNE_TOLERANCE) + PRUNE_TOLERANCE * qc_sq + margin_scale
        row, item = (bound <= limit[:, None]).nonzero(as_tuple=True)
        if len(row) > len(q) * max(PRUNE_MAX_CANDIDATES, bank.shape[0] // 64):
            value, index = brute_force_neighbours(q, bank)
            distances.append(value)
            indices.append(index)
            continue
        d2 = torch.cat([(q[row[i : i + 8192]] - bank[item[i : i + 8192]]).pow(2).sum(1)
                        for i in range(0, len(row), 8192)])
        best = torch.full((len(q),), float("inf"), device=q.device).scatter_reduce_(0, row, d2, "amin")
        hit = d2 == best[row]
        index = torch.full((len(q),), bank.shape[0], dtype=torch.long, device=q.device)
        index.scatter_reduce_(0, row[hit], item[hit], "amin")
        distances.append(best.sqrt_())
        indices.append(index)
    return torch.cat(distances), torch.cat(indices)


def nearest_neighbours(queries: torch.Tensor, bank: torch.Tensor,
                       index: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact Euclidean nearest bank item of each query: (distance [N], index [N]).

    With a search index (see `build_search_index`) the search is pruned by a lower bound, else brute force.
    """
    if index is not None and index[1].shape[1] > 0:
        return pruned_neighbours(queries, bank, *index)
    return brute_force_neighbours(queries, bank)


def compact(features: torch.Tensor) -> torch.Tensor:
    """Pending patches are stored in float16 (half the memory; only the chosen 10% are kept, in float32)."""
    if features.numel() and float(features.abs().max()) < FLOAT16_MAX:
        return features.half()
    return features


def gather_rows(chunks: Sequence[torch.Tensor], index: torch.Tensor) -> torch.Tensor:
    """Rows `index` of the virtual concatenation of `chunks`, in index order, without concatenating."""
    sizes = torch.tensor([len(c) for c in chunks])
    ends = torch.cumsum(sizes, 0)
    index_cpu = index.cpu()
    which = torch.searchsorted(ends, index_cpu, right=True)
    out = torch.empty(len(index), chunks[0].shape[1], dtype=torch.float32, device=chunks[0].device)
    for chunk_id in torch.unique(which).tolist():
        mask = which == chunk_id
        local = index_cpu[mask] - (ends[chunk_id] - sizes[chunk_id])
        out[mask.to(out.device)] = chunks[chunk_id][local.to(chunks[chunk_id].device)].float()
    return out


class PatchCore(MemoryBankModel):
    """PatchCore with the authors' embedding, a streamed greedy coreset and Eq. 7 image scores."""


    def __init__(
        self,
        backbone: str = "wide_resnet50_2",
        layers: Sequence[str] = ("layer2", "layer3"),
        pretrained: bool = True,
        weights_file: str | None = None,
        backbone_dir: str | None = None,
        coreset_ratio: float = 0.1,
        num_neighbors: int = 9,
        patch_size: int = 3,
        pretrain_embed_dim: int = 1024,
        target_embed_dim: int = 1024,
        projection_dim: int = 128,
        max_pending_patches: int = 1 << 17,
        sigma: float = 4.0,
        seed: int = 0,
    ) -> None:
        super().__init__(backbone, layers, pretrained, weights_file, backbone_dir)
        if not 0 < coreset_ratio <= 1:
            raise ValueError(f"coreset_ratio must be in (0, 1], got {coreset_ratio}")
        if num_neighbors < 1:
            raise ValueError(f"num_neighbors must be >= 1, got {num_neighbors}")
        if max_pending_patches < 2:
            raise ValueError(f"max_pending_patches must be >= 2, got {max_pending_patches}")
        self.coreset_ratio = float(coreset_ratio)
        self.num_neighbors = int(num_neighbors)
        self.projection_dim = int(projection_dim)
        self.max_pending_patches = int(max_pending_patches)
        self.sigma = float(sigma)
        self.seed = int(seed)
        self.embedder = PatchEmbedder(self.backbone.channels, patch_size, pretrain_embed_dim, target_embed_dim)
        self.register_buffer("memory_bank", torch.empty(0, target_embed_dim))
        # Exact-search acceleration derived from the bank at finalize (empty: brute force).
        self.register_buffer("search_mean", torch.zeros(target_embed_dim))
        self.register_buffer("search_basis", torch.empty(target_embed_dim, 0))
        self.register_buffer("search_coords", torch.empty(0, 0))
        if projection_dim and projection_dim < target_embed_dim:
            projection = sparse_random_projection(target_embed_dim, projection_dim, self.seed)
        else:
            projection = torch.eye(target_embed_dim)
        self.register_buffer("projection", projection, persistent=False)
        self._reset_pool()

    # -- features ------------------------------------------------------------------------------------
    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patch embeddings [B*h*w, D] of a batch and the patch grid (h, w)."""
        return self.embedder(self.backbone(images))

    # -- fitting -----------------------------------------------------------------------------------
    def _reset_pool(self) -> None:
        self._pool: list[torch.Tensor] = []
        self._pool_projected: list[torch.Tensor] = []
        self._seen = 0

    @property
    def pending_patches(self) -> int:
        """Patches held for the final coreset (never above `max_pending_patches` after an update)."""
        return sum(len(p) for p in self._pool)

    def _target_count(self) -> int:
        return max(1, int(self._seen * self.coreset_ratio))

    @torch.no_grad()
    def update(self, batch: Any) -> None:
        """Add a batch of normal images to the pool of candidate patches.

        Streaming: when the pool would exceed `max_pending_patches`, it is reduced at once to
        min(coreset_ratio * patches seen so far, max_pending_patches // 2) patches by a greedy
        coreset pass. The final coreset is then chosen from that reduced pool, so every discarded
        patch lies within (reduction radius + final radius) of the bank: an approximation of the
        one-shot coreset that only applies beyond the budget (about 128 images of 256 px by default).
        """
        images = batch.image if hasattr(batch, "image") else batch
        if self.is_fitted:  # a new fit starts from scratch
            self.fitted.fill_(False)
            self._reset_pool()
        for chunk in image_chunks(images):
            emb, _ = self.embed(chunk)
            self._seen += len(emb)
            self._pool_projected.append(emb @ self.projection)
            self._pool.append(compact(emb))
            if self.pending_patches > self.max_pending_patches:
                keep = min(self._target_count(), self.max_pending_patches // 2)
                self._reduce_pool(keep)

    def _reduce_pool(self, keep: int) -> None:
        projected = torch.cat(self._pool_projected)
        self._pool_projected = []
        chosen = greedy_coreset(projected, keep)
        self._pool = [compact(gather_rows(self._pool, chosen))]
        self._pool_projected = [projected[chosen]]

    @torch.no_grad()
    def finalize(self) -> None:
        """Choose the memory bank from the pool and mark the model fitted."""
        if not self._pool:
            raise RuntimeError("PatchCore.finalize() called before any update(): no training patches")
        projected = torch.cat(self._pool_projected)
        self._pool_projected = []
        count = min(self._target_count(), len(projected))
        chosen = greedy_coreset(projected, count)
        bank = gather_rows(self._pool, chosen)
        self._reset_pool()
        self.set_buffer("memory_bank", bank)
        for name, value in zip(("search_mean", "search_basis", "search_coords"), build_search_index(bank)):
            self.set_buffer(name, value)
        self.mark_fitted()

    # -- scoring -----------------------------------------------------------------------------------
    @property
    def search_index(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.search_mean, self.search_basis, self.search_coords

    def reweighted_score(self, queries: torch.Tensor, distances: torch.Tensor, nn_index: torch.Tensor) -> torch.Tensor:
        """Image scores from per-patch NN distances [B,P] (Eq. 7 of the paper).

        s* is the largest patch distance, m* the bank item nearest to that patch, N_b(m*) the
        `num_neighbors` bank items nearest to m* (m* first). The score is
        s = (1 - exp|q - m*| / sum_{m in N_b(m*)} exp|q - m|) * s*, which is >= 0 and shrinks the
        score of patches whose neighbourhood in the bank is dense. With num_neighbors=1 the weight
        would be 0, so the score is the raw s* (as in anomalib).
        """
        b = distances.shape[0]
        best, where = distances.max(1)
        bank = self.memory_bank
        if self.num_neighbors == 1 or bank.shape[0] == 1:
            return best
        rows = torch.arange(b, device=distances.device)
        nearest = nn_index[rows, where]  # m*
        query = queries.view(b, distances.shape[1], -1)[rows, where]  # the test patch q
        anchor = bank[nearest]
        bank_sq = (bank * bank).sum(1)
        d2 = torch.addmm(bank_sq, anchor, bank.T, alpha=-2)  # |m* - m|^2 up to a per-row constant
        d2[rows, nearest] = -float("inf")  # m* itself comes first
        k = min(self.num_neighbors, bank.shape[0])
        support = d2.topk(k, dim=1, largest=False).indices  # [B,k]
        dist = torch.linalg.vector_norm(query[:, None, :] - bank[support], dim=2)
        weight = 1.0 - torch.softmax(dist, dim=1)[:, 0]
        return weight * best

    def compute(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores, maps = [], []
        for chunk in image_chunks(images):
            emb, (h, w) = self.embed(chunk)
            distances, index = nearest_neighbours(emb, self.memory_bank, self.search_index)
            b = chunk.shape[0]
            distances = distances.view(b, h * w)
            scores.append(self.reweighted_score(emb, distances, index.view(b, h * w)))
            maps.append(distances.view(b, h, w))
        amap = F.interpolate(torch.cat(maps)[:, None], size=images.shape[-2:], mode="bilinear",
                             align_corners=False)[:, 0]
        return torch.cat(scores), gaussian_blur(amap, self.sigma)
