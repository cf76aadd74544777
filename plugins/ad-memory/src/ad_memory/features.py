"""The base of the memory-bank models: a frozen backbone and buffers whose size is only known once the
model has seen its training data."""

from __future__ import annotations

import torch

from ad_core.components.backbone import BackboneConfig
from ad_core.model import AnomalyModel


class MemoryBankModel(AnomalyModel):
    """Base for one-pass models: owns the frozen backbone.

    Buffers whose shape depends on the training data (memory bank, per-position statistics ...) are
    registered empty; `AnomalyModel` gives them the saved shape when a state dict is loaded.
    """

    def __init__(self, backbone: BackboneConfig) -> None:
        super().__init__()
        self.backbone = backbone.frozen()

    def set_buffer(self, name: str, value: torch.Tensor) -> None:
        """Replace a registered buffer with a new (contiguous) tensor on the buffer's device."""
        current = self._buffers[name]
        device = current.device if current is not None else value.device
        self._buffers[name] = value.detach().to(device).contiguous()
