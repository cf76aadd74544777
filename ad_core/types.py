"""The records that flow between datasets, models and scorers (DESIGN §4)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Sample:
    """One image of a dataset, already resized (and normalised if the dataset was asked to)."""

    image: torch.Tensor  # [3,H,W] float32
    label: int  # 0 normal, 1 anomalous
    mask: torch.Tensor | None  # [H,W] float32 in {0,1}, or None when the dataset has no masks
    path: str
    category: str
    defect_type: str = "good"


@dataclass
class Batch:
    """A collated list of samples; `mask` is None only when no sample in the batch has one.

    `mask_known[i]` says whether `mask[i]` is ground truth: the sample had a mask, or is normal (all-zero
    is then exact). An anomalous sample without a mask gets a zero placeholder with `mask_known` False:
    its pixels are unknown and must never be scored as normal. None means every mask is known.
    """

    image: torch.Tensor  # [B,3,H,W]
    label: torch.Tensor  # [B] int64
    mask: torch.Tensor | None  # [B,H,W]
    path: list[str]
    category: list[str]
    defect_type: list[str] = field(default_factory=list)
    mask_known: torch.Tensor | None = None  # [B] bool

    def to(self, device: torch.device | str) -> Batch:
        """A copy on `device`; from pinned memory (`pin_memory()`) the copy is asynchronous, the point of pinning."""
        fast = self.image.is_pinned()
        return Batch(
            image=self.image.to(device, non_blocking=fast),
            label=self.label.to(device, non_blocking=fast),
            mask=None if self.mask is None else self.mask.to(device, non_blocking=fast),
            path=self.path,
            category=self.category,
            defect_type=self.defect_type,
        )

    def pin_memory(self) -> Batch:
        """Page-locked copies of the tensors: a DataLoader with `pin_memory=True` calls this on every batch."""
        return Batch(
            image=self.image.pin_memory(),
            label=self.label.pin_memory(),
            mask=None if self.mask is None else self.mask.pin_memory(),
            path=self.path,
            category=self.category,
            defect_type=self.defect_type,
            mask_known=self.mask_known,
        )

    def __len__(self) -> int:
        return int(self.image.shape[0])


def collate(samples: list[Sample]) -> Batch:
    """DataLoader `collate_fn`: stacks tensors; an absent mask becomes a zero placeholder flagged in `mask_known`."""
    images = torch.stack([s.image for s in samples])
    labels = torch.tensor([int(s.label) for s in samples], dtype=torch.long)
    mask = known = None
    if any(s.mask is not None for s in samples):
        h, w = images.shape[-2:]
        mask = torch.stack([s.mask if s.mask is not None else torch.zeros(h, w) for s in samples])
        known = torch.tensor([s.mask is not None or int(s.label) == 0 for s in samples], dtype=torch.bool)
    return Batch(
        image=images,
        label=labels,
        mask=mask,
        path=[s.path for s in samples],
        category=[s.category for s in samples],
        defect_type=[s.defect_type for s in samples],
        mask_known=known,
    )


@dataclass
class Prediction:
    """What a model returns: higher score = more anomalous."""

    score: torch.Tensor  # [B] float32
    anomaly_map: torch.Tensor | None  # [B,H,W] float32 at the input resolution

    def to(self, device: torch.device | str) -> Prediction:
        return Prediction(
            score=self.score.to(device),
            anomaly_map=None if self.anomaly_map is None else self.anomaly_map.to(device),
        )


@dataclass
class FitReport:
    """What a trainer says about a fit: for logs, results.json and benchmarks."""

    seconds: float = 0.0
    epochs: int = 0
    steps: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what a reader of the results must know (substitutes ...)
