"""The one-pass trainer: feed every normal batch to `update`, then `finalize` (PaDiM, PatchCore, DFKDE ...)."""

from __future__ import annotations

import time
from collections.abc import Iterable

import torch
from tqdm.auto import tqdm

from ad_core.settings import resolve_device, settings
from ad_core.types import Batch, FitReport


class FeatureBankTrainer:
    """Fits models that only collect statistics; there is no loss and no epoch."""

    def __init__(self, device: str | torch.device | None = None, progress: bool | None = None, **_: object) -> None:
        self.device = resolve_device(device) if not isinstance(device, torch.device) else device
        self.progress = settings.progress if progress is None else progress

    def fit(self, model: torch.nn.Module, train: Iterable[Batch], val: Iterable[Batch] | None = None) -> FitReport:
        start = time.perf_counter()
        model.to(self.device)
        model.eval()
        n_images = 0
        with torch.no_grad():
            for batch in tqdm(train, desc="collecting features", disable=not self.progress, leave=False):
                model.update(batch.to(self.device))
                n_images += len(batch)
            if n_images == 0:
                raise ValueError("the training set is empty: at least one normal image is needed")
            model.finalize()
        return FitReport(seconds=time.perf_counter() - start, epochs=1, steps=n_images, extra={"images": n_images})
