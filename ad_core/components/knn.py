"""Exact nearest-neighbour search of queries in a bank, by blocks so memory stays bounded.

`knn_search` gives the k nearest bank items; `nearest_neighbours` the nearest one, optionally pruned by a PCA
lower bound on distances (`build_search_index`), which rules out most bank items at a fraction of the
cost of brute force while returning exactly the brute-force answer.
"""

from __future__ import annotations

import torch

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
# Bank rows per float64 block when the search index is built (16 MiB of float64 at 1024 dimensions).
INDEX_BLOCK_ROWS = 2048
# Bank rows per distance block in an exported graph (see `graph_neighbours`).
GRAPH_BANK_ROWS = 4096


def knn_search(queries: torch.Tensor, bank: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `k` nearest bank items of each query, nearest first: (Euclidean distances [N, k], indices [N, k]).

    Candidates are chosen by blocks of |m|^2 - 2 q.m; the distances to the chosen items are then measured
    directly, free of the expansion's cancellation. A block holds at most `NN_BLOCK_ELEMENTS` distances and
    as many elements of the chosen items' differences.
    """
    if not 1 <= k <= bank.shape[0]:
        raise ValueError(f"k must be in [1, {bank.shape[0]}] (the bank size), got {k}")
    if torch.onnx.is_in_onnx_export():
        return graph_knn(queries, bank, k)
    bank_sq = (bank * bank).sum(1)
    rows = max(1, NN_BLOCK_ELEMENTS // max(1, bank.shape[0], k * bank.shape[1]))
    distances, indices = [], []
    for start in range(0, queries.shape[0], rows):
        q = queries[start : start + rows]
        index = torch.addmm(bank_sq, q, bank.T, alpha=-2).topk(k, dim=1, largest=False).indices
        dist = torch.linalg.vector_norm(q[:, None, :] - bank[index], dim=2)
        order = dist.argsort(dim=1, stable=True)
        distances.append(dist.gather(1, order))
        indices.append(index.gather(1, order))
    if not distances:
        return queries.new_empty(0, k), torch.empty(0, k, dtype=torch.long, device=queries.device)
    return torch.cat(distances), torch.cat(indices)


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


def graph_neighbours(queries: torch.Tensor, bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact nearest bank item of each query as a fixed graph of matrix products over blocks of the bank.

    The form an exported graph holds (the bank a constant): the number of blocks depends on the bank alone, so
    the graph takes any number of queries, and memory stays at queries x `GRAPH_BANK_ROWS` distances. Ties go
    to the lower index, as in `brute_force_neighbours`.
    """
    best = index = None
    for start in range(0, bank.shape[0], GRAPH_BANK_ROWS):
        block = bank[start : start + GRAPH_BANK_ROWS]
        d2 = torch.addmm((block * block).sum(1), queries, block.T, alpha=-2)
        value, where = d2.min(1)
        if best is None:
            best, index = value, where
        else:
            nearer = value < best
            best, index = torch.where(nearer, value, best), torch.where(nearer, where + start, index)
    return torch.linalg.vector_norm(queries - bank[index], dim=1), index


def graph_knn(queries: torch.Tensor, bank: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`knn_search` as a fixed graph (see `graph_neighbours`): each bank block's `k` best candidates, the `k` best
    of those, then their distances measured directly and ordered (ties in any order: ONNX has no stable sort)."""
    values, indices = [], []
    for start in range(0, bank.shape[0], GRAPH_BANK_ROWS):
        block = bank[start : start + GRAPH_BANK_ROWS]
        d2 = torch.addmm((block * block).sum(1), queries, block.T, alpha=-2)
        value, where = d2.topk(min(k, block.shape[0]), dim=1, largest=False)
        values.append(value)
        indices.append(where + start)
    _, best = torch.cat(values, 1).topk(k, dim=1, largest=False)
    index = torch.cat(indices, 1).gather(1, best)
    dist = torch.linalg.vector_norm(queries[:, None, :] - bank[index], dim=2)
    dist, order = dist.topk(k, dim=1, largest=False)
    return dist, index.gather(1, order)


def build_search_index(bank: torch.Tensor, dim: int = SEARCH_DIM) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean [D], orthonormal PCA basis [D, r] and the bank's bound coordinates [M, r+1] for pruned search.

    For an orthogonal projection P onto the top-r principal directions and residual norms rho,
    |q - m|^2 >= |P(q - m)|^2 + (rho_q - rho_m)^2: a lower bound, as one small matrix product.
    The bank is read in blocks of `INDEX_BLOCK_ROWS` rows (float64 copies of a block, not of the bank), so building
    the index of a large bank needs little memory beyond the bank and its coordinates.
    """
    r = min(dim, bank.shape[1], max(0, bank.shape[0] - 1))
    mean = bank.mean(0)
    if r == 0 or bank.shape[0] < PRUNE_MIN_BANK:
        return mean, bank.new_zeros(bank.shape[1], 0), bank.new_zeros(0, 0)
    blocks = bank.split(INDEX_BLOCK_ROWS)
    scatter = bank.new_zeros(bank.shape[1], bank.shape[1], dtype=torch.float64)
    for block in blocks:
        centred = (block - mean).double()
        scatter.addmm_(centred.T, centred)
    _, vectors = torch.linalg.eigh(scatter)
    basis = vectors[:, -r:].flip(1).contiguous()
    coords = bank.new_empty(bank.shape[0], r + 1, dtype=torch.float32)
    start = 0
    for block in blocks:
        centred = (block - mean).double()
        projected = centred @ basis
        coords[start : start + len(block), :r] = projected
        coords[start : start + len(block), r] = (centred.pow(2).sum(1) - projected.pow(2).sum(1)).clamp_min(0).sqrt()
        start += len(block)
    return mean, basis.float(), coords


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

    With a search index (see `build_search_index`) the search is pruned by a lower bound, else brute force;
    while exporting a graph, the search is `graph_neighbours` (no data-dependent shapes).
    """
    if torch.onnx.is_in_onnx_export():
        return graph_neighbours(queries, bank)
    if index is not None and index[1].shape[1] > 0:
        return pruned_neighbours(queries, bank, *index)
    return brute_force_neighbours(queries, bank)
