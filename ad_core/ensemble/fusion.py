"""Fusion rules: how the normalised outputs of the members become one score (or one map).

- `mean`: the mean of the members' z-scores;
- `max`: the largest z-score (one confident member is enough);
- `rank_mean`: the mean of the members' ranks (their empirical CDF over normal outputs), in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ad_core.ensemble.normalization import NormalStats

FUSION_RULES = ("mean", "max", "rank_mean")


def check_rule(rule: str) -> str:
    if rule not in FUSION_RULES:
        raise ValueError(f"unknown fusion rule {rule!r}; valid ones: {', '.join(FUSION_RULES)}")
    return rule


def normalized(stats: NormalStats, values: torch.Tensor, rule: str) -> torch.Tensor:
    """A member's output on the scale the rule fuses: its rank for `rank_mean`, its z-score otherwise."""
    return stats.rank(values) if check_rule(rule) == "rank_mean" else stats.zscore(values)


def combine(stack: torch.Tensor, rule: str) -> torch.Tensor:
    """Fuse normalised outputs stacked along the first dimension (one row per member)."""
    return stack.amax(0) if check_rule(rule) == "max" else stack.mean(0)


def fuse(values: Sequence[torch.Tensor], stats: Sequence[NormalStats], rule: str) -> torch.Tensor:
    """Normalise each member's raw output with its own statistics, then fuse them."""
    if not values or len(values) != len(stats):
        raise ValueError(f"need one NormalStats per member output, got {len(values)} outputs and {len(stats)}")
    return combine(torch.stack([normalized(s, v, rule) for s, v in zip(stats, values)]), rule)
