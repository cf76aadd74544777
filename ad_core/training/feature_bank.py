"""The one-pass trainer: feed every normal batch to `update`, then `finalize` (PaDiM, PatchCore, DFKDE ...).

Hooks called (`ad_core.protocols.FeatureBankModel`): `on_fit_start(loader)`, `update(batch)` per batch,
`on_fit_end(loader)`, `finalize()`, all in eval mode without gradients. Of the options
(`ad_core.training.options.TrainerOptions`) it uses `device` and `progress`; there is no step to resume from.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import torch
from tqdm.auto import tqdm

from ad_core.protocols import FeatureBankModel
from ad_core.settings import resolve_device, settings
from ad_core.training.options import TrainerOptions
from ad_core.types import Batch, FitReport


class FeatureBankTrainer:
    """Fits models that only collect statistics; there is no loss and no epoch."""

    def __init__(self, options: TrainerOptions | None = None, **settings_: Any) -> None:
        if options is not None and settings_:
            raise TypeError("pass either a TrainerOptions or keyword options, not both")
        self.options = options if options is not None else TrainerOptions.of(**settings_)
        device = self.options.device
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.progress = settings.progress if self.options.progress is None else self.options.progress

    def fit(self, model: FeatureBankModel, train: Iterable[Batch], val: Iterable[Batch] | None = None, *,
            generator: torch.Generator | None = None) -> FitReport:
        """`val` and `generator` are not used: one unshuffled pass, no model selection."""
        start = time.perf_counter()
        model.to(self.device)
        model.eval()
        n_images = 0
        with torch.no_grad():
            model.on_fit_start(train)
            for batch in tqdm(train, desc="collecting features", disable=not self.progress, leave=False):
                model.update(batch.to(self.device))
                n_images += len(batch)
            if n_images == 0:
                raise ValueError("the training set is empty: at least one normal image is needed")
            model.on_fit_end(train)
            model.finalize()
        return FitReport(seconds=time.perf_counter() - start, epochs=1, steps=n_images,
                         extra={"images": n_images}, notes=list(model.fit_notes()))
