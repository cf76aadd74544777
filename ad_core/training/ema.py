"""An exponential moving average of a model's weights, the copy evaluated when `ema_decay` is set."""

from __future__ import annotations

import torch


class WeightAverage:
    """Shadow copies of the trainable parameters: `shadow = decay * shadow + (1 - decay) * weight` per step."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for name, param in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(param.detach(), 1.0 - self.decay)

    @torch.no_grad()
    def swap(self, model: torch.nn.Module) -> None:
        """Exchange the model's weights with the averaged ones (call twice to undo)."""
        for name, param in model.named_parameters():
            if name in self.shadow:
                raw = param.detach().clone()
                param.copy_(self.shadow[name])
                self.shadow[name].copy_(raw)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"ema.{n}": t for n, t in self.shadow.items()}

    @torch.no_grad()
    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, value in self.shadow.items():
            value.copy_(tensors[f"ema.{name}"])
