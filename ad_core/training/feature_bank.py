"""The one-pass trainer: feed every normal batch to `update`, then `finalize` (PaDiM, PatchCore, DFKDE ...).

Hooks called (`ad_core.protocols.FeatureBankModel`): `on_fit_start(loader)`, `update(batch)` per batch,
`on_fit_end(loader)`, `finalize()`, all in eval mode without gradients. Of the options
(`ad_core.training.options.TrainerOptions`) it uses `device`, `progress` and `world`; there is no step to resume
from. Under torchrun (`world`) each process feeds its share of the data, the model's `merge_distributed(world)`
(`ad_core.protocols.MergeableFeatureBankModel`) combines the shares into rank 0, and rank 0 alone runs
`on_fit_end` and `finalize`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import torch
from tqdm.auto import tqdm

from ad_core.protocols import FeatureBankModel, MergeableFeatureBankModel
from ad_core.training.options import TrainerOptions, resolve_trainer_options
from ad_core.types import Batch, FitReport


class FeatureBankTrainer:
    """Fits models that only collect statistics; there is no loss and no epoch."""

    def __init__(self, options: TrainerOptions | None = None, **settings_: Any) -> None:
        self.options, self.device, self.progress = resolve_trainer_options(options, settings_)

    def fit(self, model: FeatureBankModel, train: Iterable[Batch], val: Iterable[Batch] | None = None, *,
            generator: torch.Generator | None = None) -> FitReport:
        """`val` and `generator` are not used: one unshuffled pass, no model selection."""
        start = time.perf_counter()
        world = self.options.world
        if world is not None and not isinstance(model, MergeableFeatureBankModel):
            raise ValueError(f"{type(model).__name__} cannot be fitted by several processes (it has no "
                             "merge_distributed to combine their statistics): run it without torchrun")
        model.to(self.device)
        model.eval()
        n_images = 0
        with torch.no_grad():
            model.on_fit_start(train)
            quiet = not self.progress or (world is not None and not world.is_main)
            for batch in tqdm(train, desc="collecting features", disable=quiet, leave=False):
                model.update(batch.to(self.device))
                n_images += len(batch)
            if world is not None:
                n_images = world.sum_int(n_images, self.device)
            if n_images == 0:
                raise ValueError("the training set is empty: at least one normal image is needed")
            notes = []
            if world is not None:
                model.merge_distributed(world)
                notes.append(f"fitted by {world.size} processes, each on its share of the images, merged")
            if world is None or world.is_main:
                model.on_fit_end(train)
                model.finalize()
        return FitReport(seconds=time.perf_counter() - start, epochs=1, steps=n_images,
                         extra={"images": n_images}, notes=[*model.fit_notes(), *notes])
