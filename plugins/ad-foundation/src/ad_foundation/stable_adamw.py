"""StableAdamW (Wortsman et al., "Stable and low-precision training for large-scale vision-language models",
NeurIPS 2023): AdamW whose update of each parameter tensor is clipped as AdaFactor clips it.

Per tensor, the Adam direction u = m̂ / (√v̂ + ε) is scaled by 1 / max(1, RMS(g / (√v̂ + ε)) / d): when the
current gradient is large against the running second moment (a rare-feature spike), the step shrinks instead of
blowing up. Dinomaly trains with it (d = 1, AMSGrad, ε = 1e-10). Weight decay is decoupled and applied before
the update with the unclipped learning rate, as in the Dinomaly authors' implementation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch


class StableAdamW(torch.optim.Optimizer):
    """AdamW with StableAdamW's per-tensor update clipping (`clip_threshold` d; 0 or inf disables it)."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
                 clip_threshold: float = 1.0) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"lr, eps and weight_decay must be non-negative, got {lr}, {eps}, {weight_decay}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        if clip_threshold < 0:
            raise ValueError(f"clip_threshold must be non-negative, got {clip_threshold}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                                  "amsgrad": amsgrad, "clip_threshold": clip_threshold})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("StableAdamW does not support sparse gradients")
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    if group["amsgrad"]:
                        state["max_exp_avg_sq"] = torch.zeros_like(p)
                p.mul_(1 - group["lr"] * group["weight_decay"])
                state["step"] += 1
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                second = exp_avg_sq
                if group["amsgrad"]:
                    torch.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
                    second = state["max_exp_avg_sq"]
                denom = (second.sqrt() / math.sqrt(1 - beta2 ** state["step"])).add_(group["eps"])
                step_size = group["lr"] / (1 - beta1 ** state["step"]) / update_clip(grad / denom,
                                                                                     group["clip_threshold"])
                p.addcdiv_(exp_avg, denom, value=-step_size)
        return loss


def update_clip(ratio: torch.Tensor, threshold: float) -> float:
    """max(1, RMS(g / (√v̂ + ε)) / d): the factor a tensor's step is divided by (1 when clipping is off)."""
    if threshold == 0 or math.isinf(threshold):
        return 1.0
    rms = float(ratio.pow(2).mean().sqrt())
    return max(1.0, rms / threshold)
