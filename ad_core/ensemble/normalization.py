"""A member's distribution of scores (or map pixels) on normal images, which makes members comparable.

Raw scores of different models live on unrelated scales (a Mahalanobis distance, a nearest-neighbour
distance, a negative log-density). Each member keeps statistics of its own outputs on normal training images;
a new output is then expressed either as a z-score against them or as a rank: the empirical CDF of the normal
outputs. Both are computed per value, so one image's result never depends on the other images of a batch.
"""

from __future__ import annotations

import torch
from torch import nn

MAX_KNOTS = 1024  # quantiles kept of a large sample (map pixels); small samples (image scores) keep every value


def count_at_most(knots: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """How many sorted `knots` are <= each value (`searchsorted(..., right=True)`), by a binary search of fixed
    depth: the form an exported graph holds (ONNX has no search operator), memory linear in the values."""
    n = int(knots.shape[0])
    low = torch.zeros_like(values, dtype=torch.long)
    high = torch.full_like(low, n)
    for _ in range(n.bit_length()):
        middle = torch.div(low + high, 2, rounding_mode="floor")
        open_ = low < high
        right = knots[middle.clamp(max=n - 1)] <= values
        low = torch.where(open_ & right, middle + 1, low)
        high = torch.where(open_ & ~right, middle, high)
    return low


class NormalStats(nn.Module):
    """Mean, standard deviation and the empirical CDF (as sorted knots) of one member's normal outputs.

    The CDF is linear between knots and, beyond the outermost knots, continues with hyperbolic tails
    (`1 - (1 - p_last) / (1 + d)`, d the distance past the last knot in standard deviations): it stays strictly
    increasing there, so outputs above every normal one keep their order instead of all tying at 1, even
    hundreds of standard deviations out (an exponential tail would round to 1 in float32 beyond ~15).
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, knots: torch.Tensor, positions: torch.Tensor) -> None:
        super().__init__()
        if knots.ndim != 1 or knots.shape != positions.shape or knots.numel() < 2:
            raise ValueError(f"need at least 2 knots with one position each, got {tuple(knots.shape)} knots "
                             f"and {tuple(positions.shape)} positions")
        self.register_buffer("mean", mean.detach().float().reshape(()).clone())
        self.register_buffer("std", std.detach().float().reshape(()).clone())
        self.register_buffer("knots", knots.detach().float().contiguous().clone())
        self.register_buffer("positions", positions.detach().float().contiguous().clone())

    @classmethod
    def fit(cls, values: torch.Tensor, max_knots: int = MAX_KNOTS) -> NormalStats:
        """Statistics of a sample of normal outputs (any shape; flattened)."""
        flat = values.detach().reshape(-1).double().cpu()
        flat = flat[torch.isfinite(flat)]
        if flat.numel() < 2:
            raise ValueError(f"need at least 2 finite normal outputs to normalise a member, got {flat.numel()}")
        ordered = flat.sort().values
        n = ordered.numel()
        count = min(n, max_knots)
        positions = (torch.arange(count, dtype=torch.float64) + 0.5) / count  # Hazen plotting positions
        knots = ordered if count == n else ordered[(positions * n - 0.5).round().long().clamp(0, n - 1)]
        knots, inverse = torch.unique_consecutive(knots, return_inverse=True)
        if knots.numel() < 2:
            raise ValueError(f"a member's normal outputs are all equal ({float(knots[0]):.6g}): "
                             "they carry no scale to normalise by")
        # tied values share one knot at their mean position (mid-ranks), so ties do not bias the ranks
        positions = torch.zeros_like(knots).index_add_(0, inverse, positions) / torch.bincount(inverse).double()
        return cls(flat.mean(), flat.std(), knots, positions)

    def zscore(self, values: torch.Tensor) -> torch.Tensor:
        return (values - self.mean) / self.std

    def rank(self, values: torch.Tensor) -> torch.Tensor:
        """The empirical CDF of the normal outputs at `values`: ~U(0,1) on normal data, near 1 for outliers."""
        knots, positions = self.knots, self.positions
        x = values.float()
        if torch.onnx.is_in_onnx_export():
            upper = count_at_most(knots, x)
        else:
            upper = torch.searchsorted(knots, x.reshape(-1).contiguous(), right=True).reshape(x.shape)
        upper = upper.clamp(1, knots.numel() - 1)
        x0, x1 = knots[upper - 1], knots[upper]
        p0, p1 = positions[upper - 1], positions[upper]
        t = ((x - x0) / (x1 - x0).clamp_min(1e-12)).clamp(0.0, 1.0)
        inside = p0 + t * (p1 - p0)
        below = positions[0] / (1.0 + ((knots[0] - x) / self.std).clamp(min=0.0))
        above = 1.0 - (1.0 - positions[-1]) / (1.0 + ((x - knots[-1]) / self.std).clamp(min=0.0))
        return torch.where(x < knots[0], below, torch.where(x > knots[-1], above, inside))
