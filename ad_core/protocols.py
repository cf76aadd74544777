"""Structural types for the seams between the core and plugins (DESIGN §4).

The core types against these protocols, never against a base class: a third-party model that does not inherit
from `ad_core.model.AnomalyModel` works as long as it has these methods. `AnomalyModel` implements every hook
with a default, so a first-party model writes only what it needs. The hooks' order and meaning are documented
in `ad_core.training.gradient`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import torch

from ad_core.types import Batch, FitReport, Prediction, Sample

if TYPE_CHECKING:
    from ad_core.training.context import StepContext
    from ad_core.training.distributed import World
    from ad_core.training.options import TrainerOptions, TrainingPlan


@runtime_checkable
class Model(Protocol):
    """A `torch.nn.Module` whose `state_dict()` holds everything needed to predict."""

    def predict(self, images: torch.Tensor) -> Prediction: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state_dict: dict, strict: bool = True): ...

    def fixed_thresholds(self) -> dict[str, float]:
        """Thresholds the model sets by itself, with no data (U-Flow's NFA); `{}` for most models."""
        ...


@runtime_checkable
class FittableModel(Model, Protocol):
    """What every trainer calls around a fit."""

    def on_fit_start(self, loader: Iterable[Batch]) -> None: ...

    def on_fit_end(self, loader: Iterable[Batch]) -> None: ...

    def finalize(self) -> None:
        """Post-fit statistics in eval mode; must leave the model fitted."""
        ...

    def fit_fingerprint(self) -> dict[str, Any]:
        """Facts of this fit (known after `on_fit_start`) a resumed run must share, e.g. its training images."""
        ...

    def fit_notes(self) -> list[str]:
        """What a reader of the results must know about this fit (substitutes used ...)."""
        ...


@runtime_checkable
class FeatureBankModel(FittableModel, Protocol):
    """One-pass models fitted by the feature-bank trainer: `update` per batch, then `finalize`."""

    def update(self, batch: Batch) -> None: ...


@runtime_checkable
class MergeableFeatureBankModel(FeatureBankModel, Protocol):
    """One-pass models that several processes (torchrun) can fit together, each on its share of the data."""

    def merge_distributed(self, world: World) -> None:
        """Called on every rank after its pass: combine what the ranks collected so that rank 0 holds the whole
        set's state; `on_fit_end` and `finalize` then run on rank 0 only."""
        ...


@runtime_checkable
class TrainableModel(FittableModel, Protocol):
    """Models fitted by the gradient trainer."""

    automatic_optimization: ClassVar[bool]

    def configure_optimizers(self, plan: TrainingPlan) -> Any: ...

    def training_step(self, batch: Batch, ctx: StepContext) -> torch.Tensor | dict[str, torch.Tensor] | None: ...

    def on_train_epoch_start(self, epoch: int) -> None: ...

    def on_train_epoch_end(self, epoch: int) -> None: ...

    def on_train_batch_end(self, step: int) -> None: ...

    def training_state(self) -> dict[str, torch.Tensor]: ...

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None: ...


class Dataset(Protocol):
    """A map-style dataset of samples for one split."""

    split: str
    categories: list[str]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...


class Trainer(Protocol):
    """Built from a `TrainerOptions`; `generator` is the training loader's shuffle generator (for resume)."""

    def __init__(self, options: TrainerOptions) -> None: ...

    def fit(self, model: Any, train: Iterable[Batch], val: Iterable[Batch] | None = None, *,
            generator: torch.Generator | None = None) -> FitReport: ...


class Scorer(Protocol):
    def __call__(self, predictions: list[Prediction], targets: list[Batch]) -> dict[str, Any]: ...
