"""PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022).

Locally aware patch features of a frozen backbone are subsampled into a memory bank by greedy
k-center coreset selection; a test patch is scored by its distance to the nearest bank item, and
the image score is the largest patch score, reweighted by how isolated its nearest item is (Eq. 7).

Performance choices (results are those of the plain algorithm up to floating-point rounding):
- the authors' patch aggregation (unfold a 3x3 neighbourhood, adaptive-average-pool the flattened
  C*3*3 vector to 1024, then pool the stacked layers to 1024) is a fixed sparse linear map, so it is
  run as one grouped 3x3 convolution per layer at the layer's own resolution, before upsampling
  (`ad_core.components.patch_embedding`, shared with EfficientAD's teacher distillation);
- the greedy coreset updates its min-distance vector with one matrix-vector product per step
  (the textbook loop, whose step only reads the points once);
- the nearest-neighbour search is exact but pruned: a PCA lower bound on every distance (one thin
  matrix product) rules out most bank items, and only the rest are measured
  (`ad_core.components.knn`; the coreset is `ad_core.components.coreset`);
- training patches are streamed in groups of `max_pending_patches`: each full group is reduced by a
  greedy coreset that continues from the items the last `seed_groups` groups kept, and joins the bank,
  so fit time is linear in the training set and pending memory bounded (see `PatchCore.update`); the
  worst-covered patches are carried into the next group's selection and part of each group's share is
  held back for the last one, so the budget follows the patches that need it; up to one group it is
  the one-shot coreset. Each group's share fits only if the groups look alike, so the runner streams the training
  images in a seeded random order (`ad_core.runner.training_loader`); a caller of `update` should shuffle too;
- the bank's rows are kept in 64 MB slabs (`ad_memory.row_slabs`) that are released as the final bank is assembled,
  so the fit's peak holds the bank once, not twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from ad_core.components.backbone import BackboneConfig, image_chunks
from ad_core.components.coreset import greedy_cover, sparse_random_projection, squared_distance_to
from ad_core.components.knn import build_search_index, nearest_neighbours
from ad_core.components.maps import gaussian_blur
from ad_core.components.patch_embedding import PatchEmbedder
from ad_memory.features import MemoryBankModel
from ad_memory.row_slabs import RowSlabs

if TYPE_CHECKING:
    from ad_core.plugin_api import World

# Largest magnitude float16 represents; pending patches beyond it stay float32.
FLOAT16_MAX = 65504.0


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
        max_pending_patches: int = 1 << 14,
        seed_groups: int = 8,
        carry_patches: int = 1 << 12,
        reserve_ratio: float = 0.2,
        sigma: float = 4.0,
        seed: int = 0,
    ) -> None:
        super().__init__(BackboneConfig(backbone, layers, pretrained, weights_file, backbone_dir))
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
        if seed_groups < 0:
            raise ValueError(f"seed_groups must be >= 0, got {seed_groups}")
        self.seed_groups = int(seed_groups)
        if not 0 <= carry_patches < max_pending_patches:
            raise ValueError(f"carry_patches must be in [0, max_pending_patches = {max_pending_patches}): the carried "
                             f"patches share a greedy pass with the open group; got {carry_patches}")
        if not 0 <= reserve_ratio < 1:
            raise ValueError(f"reserve_ratio must be in [0, 1), got {reserve_ratio}")
        self.carry_patches = int(carry_patches)
        self.reserve_ratio = float(reserve_ratio)
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
        self._bank = RowSlabs()  # the closed groups' items
        self._bank_projected: list[torch.Tensor] = []
        # the worst-covered patches of the groups closed so far, their projections and squared distances to the bank
        self._carry: list[torch.Tensor] = []  # empty, or one tensor: then the two below are set
        self._carry_projected = self._carry_covered = torch.empty(0)
        self._seen = 0

    @property
    def pending_patches(self) -> int:
        """Patches of the open group (with `carried_patches`, below `max_pending_patches` after every update)."""
        return sum(len(p) for p in self._pool)

    @property
    def carried_patches(self) -> int:
        """Patches carried from the closed groups into the open group's greedy pass."""
        return len(self._carry_projected) if self._carry else 0

    @torch.no_grad()
    def update(self, batch: Any) -> None:
        """Add a batch of normal images to the open group of candidate patches.

        Streaming: once the open group and the `carry_patches` patches carried from earlier groups hold
        `max_pending_patches` patches, the group is closed: a greedy coreset pass over them keeps its share
        of the bank (coreset_ratio of the patches seen so far, less what earlier groups kept, less a
        reserve: `reserve_ratio` of it, at most half the carry); the candidates it leaves worst covered
        are carried on, the rest dropped.
        The pass starts from each patch's distance to the items kept by the last `seed_groups` groups
        (one blocked matrix product), so a group adds the items that fill the bank's gaps rather than
        repeating what those groups kept; with 0 each group is reduced on its own. A fixed share per
        group would spend the budget where the stream starts: a later group of new-looking images
        would find it gone and the first groups' leftovers could never be revisited. The carry and the
        reserve, which the last group spends, let the greedy take the patches farthest from the bank
        wherever they came from. A pass never holds more than `max_pending_patches` points, which keeps
        them in cache (a pass over 1.5x as many points measured 2-3x slower per point on this CPU). Per
        group the greedy costs O(max_pending_patches x its share) and the seeding O(group x seed_groups
        x share), so fit time is linear in the training set. With at most one group (16 images of
        256 px by default) it is exactly the one-shot coreset.
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
            if self.pending_patches + self.carried_patches >= self.max_pending_patches:
                self._close_group()

    def _close_group(self, last: bool = False) -> None:
        """Reduce the open group and the carried patches to the group's share of the bank by greedy
        k-center on their projections; carry the worst-covered of the rest on unless this is the last."""
        target = max(1, int(self._seen * self.coreset_ratio))
        held = 0 if last else min(int(self.reserve_ratio * target), self.carry_patches // 2)
        keep = target - held - len(self._bank)
        pool = torch.cat(self._pool_projected) if self._pool_projected else None
        carried = [self._carry_projected] if self._carry else []
        projected = torch.cat(carried + ([pool] if pool is not None else []))
        chunks = [*self._carry, *self._pool]
        covered = [self._carry_covered] if self._carry else []
        if pool is not None and self.seed_groups and self._bank_projected:
            covered.append(squared_distance_to(pool, torch.cat(self._bank_projected)))
        elif pool is not None and covered:  # no seeding window: the group's own patches start uncovered
            covered.append(torch.full((len(pool),), float("inf"), device=pool.device))
        chosen, left = greedy_cover(projected, keep, torch.cat(covered) if covered else None)
        self._bank.append(gather_rows(chunks, chosen))
        if self.seed_groups:  # only the last `seed_groups` groups' items seed the next pass
            self._bank_projected = [*self._bank_projected, projected[chosen]][-self.seed_groups :]
        self._pool, self._pool_projected = [], []
        carry = 0 if last else min(self.carry_patches, len(left) - len(chosen))
        worst = left.topk(carry).indices
        self._carry = [compact(gather_rows(chunks, worst))] if carry else []
        self._carry_projected, self._carry_covered = projected[worst], left[worst]

    @torch.no_grad()
    def merge_distributed(self, world: World) -> None:
        """Under torchrun: each process closes its open group, so its groups hold its share of the bank chosen
        from its own images; rank 0 takes every process's groups as the bank's. Each training patch is then within
        its own process's coreset radius of the bank: the union's covering radius is at most the largest
        per-process radius (`coreset_ratio` of each share, so the bank has the single-process size)."""
        if not self._seen:
            raise RuntimeError("PatchCore.merge_distributed() called before any update(): no training patches")
        if self._pool or self._carry:
            self._close_group(last=True)
        parts = world.gather_rows(self._bank.take())
        seen = world.sum_int(self._seen, parts[0].device)
        if world.is_main:  # no group is closed after this, so the seeding window is not needed any more
            for part in parts:
                self._bank.append(part)
            self._bank_projected = []
            self._seen = seen

    @torch.no_grad()
    def finalize(self) -> None:
        """Close the last group, make the union of the groups' coresets the memory bank, mark fitted."""
        if not self._seen:
            raise RuntimeError("PatchCore.finalize() called before any update(): no training patches")
        if self._pool or self._carry:
            self._close_group(last=True)
        bank = self._bank.take()
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
