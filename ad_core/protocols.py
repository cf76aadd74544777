"""Structural types for the seams between the core and plugins (DESIGN §4).

The core never checks `isinstance` against a base class: anything with these methods works.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

import torch

from ad_core.types import Batch, FitReport, Prediction, Sample


@runtime_checkable
class Model(Protocol):
    """A `torch.nn.Module` whose `state_dict()` holds everything needed to predict."""

    def predict(self, images: torch.Tensor) -> Prediction: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state_dict: dict, strict: bool = True): ...


@runtime_checkable
class FeatureBankModel(Model, Protocol):
    """One-pass models fitted by the feature-bank trainer."""

    def update(self, batch: Batch) -> None: ...

    def finalize(self) -> None: ...


@runtime_checkable
class GradientModel(Model, Protocol):
    """Models fitted by the gradient trainer."""

    def training_step(self, batch: Batch) -> torch.Tensor: ...

    def configure_optimizers(self): ...


class Dataset(Protocol):
    """A map-style dataset of samples for one split."""

    split: str
    categories: list[str]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...


class Trainer(Protocol):
    def fit(self, model: Model, train: Iterable[Batch], val: Iterable[Batch] | None = None) -> FitReport: ...


class Scorer(Protocol):
    def __call__(self, predictions: list[Prediction], targets: list[Batch]) -> dict[str, Any]: ...
