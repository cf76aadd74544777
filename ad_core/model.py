"""An optional base class for models: the fitted flag, a `predict` that is hard to misuse, and every training
hook with a default.

Plugins need not inherit from it (the core types against the protocols in `ad_core.protocols`), but the
first-party plugins do, so each model only writes `compute(images) -> (score, map)` and the hooks it needs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ad_core.components.maps import resize_map
from ad_core.types import Batch, Prediction

if TYPE_CHECKING:
    from ad_core.training.context import StepContext
    from ad_core.training.options import TrainingPlan


class NotFittedError(RuntimeError):
    """`predict` was called on a model that was neither trained nor loaded from a checkpoint."""


def check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"expected images as a float tensor [B,3,H,W], got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"expected a floating-point image tensor, got {images.dtype}")
    if not torch.isfinite(images).all():
        raise ValueError("the images contain NaN or infinite values: check the input files or the pre-processing")


class AnomalyModel(nn.Module):
    """Base for models: keeps `fitted` in the state dict so a loaded checkpoint can predict at once.

    Register data-sized buffers (memory banks ...) as empty tensors: loading a state dict into a freshly
    built model gives them the saved shape.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted)

    def mark_fitted(self) -> None:
        self.fitted.fill_(True)

    # -- the training hooks (`ad_core.protocols`; order and meaning in `ad_core.training.gradient`) ------------
    automatic_optimization: bool = True  # False: training_step steps the optimisers itself through `ctx`

    def configure_optimizers(self, plan: TrainingPlan) -> Any:
        """Optimisers (and schedulers) sized from the run's `plan`; gradient models must override it."""
        raise NotImplementedError(f"{type(self).__name__} is not trained by gradient: it has no optimisers")

    def training_step(self, batch: Batch, ctx: StepContext) -> torch.Tensor | dict[str, torch.Tensor] | None:
        """The loss of one batch (None skips the batch); gradient models must override it."""
        raise NotImplementedError(f"{type(self).__name__} is not trained by gradient: it has no training_step")

    def update(self, batch: Batch) -> None:
        """Feed one batch to a one-pass model (feature-bank trainer); one-pass models must override it."""
        raise NotImplementedError(f"{type(self).__name__} is not a one-pass model: it has no update")

    def on_fit_start(self, loader: Iterable[Batch]) -> None:
        """Before the first step: a data pass for statistics the training needs."""

    def on_fit_end(self, loader: Iterable[Batch]) -> None:
        """After the last step, in eval mode, before `finalize`: a data pass for post-fit statistics."""

    def on_train_epoch_start(self, epoch: int) -> None:
        """Before epoch `epoch` (counted from 0), also when a resumed run re-enters it."""

    def on_train_epoch_end(self, epoch: int) -> None:
        """After `epoch` epochs are finished."""

    def on_train_batch_end(self, step: int) -> None:
        """After optimiser step `step` (counted from 1)."""

    def training_state(self) -> dict[str, torch.Tensor]:
        """Training-time tensors outside `state_dict()` (a private generator's state, a running maximum) that a
        killed run needs back to resume exactly; saved in the training state, never in the checkpoint."""
        return {}

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        """Take back what `training_state` returned, when a run resumes (empty from a state saved without it)."""

    def finalize(self) -> None:
        """Post-fit statistics, in eval mode; the default only marks the model fitted."""
        self.mark_fitted()

    def fixed_thresholds(self) -> dict[str, float]:
        """Thresholds the model sets by itself, with no data (U-Flow's NFA): none by default."""
        return {}

    def fit_fingerprint(self) -> dict[str, Any]:
        """Facts of this fit (known after `on_fit_start`) a resumed run must share, e.g. its training images."""
        return {}

    def fit_notes(self) -> list[str]:
        """What a reader of the results must know about the fit (a substitute used ...): nothing by default."""
        return []

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        """Buffers registered empty (memory banks, statistics sized by the data) take the saved shape."""
        for name, current in self._buffers.items():
            saved = state_dict.get(prefix + name)
            if current is not None and current.numel() == 0 and saved is not None and saved.shape != current.shape:
                self._buffers[name] = torch.empty(saved.shape, dtype=current.dtype, device=current.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def compute(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return (scores [B], anomaly map [B,h,w] or None); called in eval and inference mode."""
        raise NotImplementedError

    def predict(self, images: torch.Tensor) -> Prediction:
        if not self.is_fitted:
            raise NotFittedError(
                f"{type(self).__name__} is not fitted: train it first (ad_core.train or a Trainer) "
                "or load a checkpoint with ad_core.load_model"
            )
        check_images(images)
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                score, amap = self.compute(images)
                if amap is not None:
                    amap = resize_map(amap, images.shape[-2:])
        finally:
            self.train(was_training)
        return Prediction(
            score=score.reshape(-1).float(),
            anomaly_map=None if amap is None else amap.float(),
        )
